"""What a training run reports, shows and leaves: the test report, a line per epoch, plots/.

* `evaluate_test`: report.json's test figures at the calibrated threshold, and 1-NN accuracy;
* `weights_digest`: the SHA-256 of the weights (bit-identical runs have equal digests);
* `EpochLine`: one plain line per epoch (no progress bar, no terminal control codes) for logs
  that go to a file or a pipe;
* `write_run_plots`: `plots/` of a finished run: the test pairs' ROC curve with the operating
  point and their distance histograms with the threshold (the pairs and threshold of
  report.json), and the per-epoch AUC / EER / threshold of the calibration (metrics.jsonl).

Runs on host, on the chief.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time

import keras
import numpy as np

from siamese_tf import evaluation as eval_metrics
from siamese_tf import plots
from siamese_tf.inference import embed, nearest_gallery_labels, pair_set_distances
from trainers import workdir as wd

PLOTS_DIR = "plots"
ROC_PNG = "test_roc_curve.png"
HISTOGRAMS_PNG = "test_distance_histograms.png"
CURVES_PNG = "calibration_curves.png"

log = logging.getLogger(__name__)


class EpochLine(keras.callbacks.Callback):
    """Prints one plain line per epoch: its number, step, time, loss, calibration and one-shot
    validation.

    Args:
      epochs: epochs of the run (for "epoch 3/10").
      steps_per_epoch: steps per epoch (the line gives the global step).
      stream: where to print (default: stdout).
    """

    KEYS = ("loss", "val_auc", "val_eer", "val_threshold")

    def __init__(self, epochs: int, steps_per_epoch: int, stream=None):
        super().__init__()
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.stream = stream
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - (self._start or time.perf_counter())
        keys = [*self.KEYS, *sorted(k for k in logs if k.startswith("val_oneshot_"))]
        values = ", ".join(f"{k} {float(logs[k]):.4f}" for k in keys if k in logs)
        line = (
            f"epoch {epoch + 1}/{self.epochs} (step {(epoch + 1) * self.steps_per_epoch}, "
            f"{seconds:.1f} s): {values}"
        )
        stream = self.stream or sys.stdout
        print(line, file=stream, flush=True)


def write_run_plots(workdir: str, distances, same, threshold: float, metrics_path: str) -> dict:
    """Writes the finished run's figures to `workdir/plots/`.

    A figure that cannot be drawn (e.g. a one-class pair set, an install without matplotlib)
    is skipped with a warning: plots never fail a finished run.

    Args:
      workdir: the run directory.
      distances: the test pairs' distances.
      same: their 0/1 labels.
      threshold: the calibrated threshold.
      metrics_path: the run's metrics.jsonl (one JSON object per epoch).

    Returns:
      {name: path} of the files written.
    """
    if not plots.available():
        log.warning("matplotlib is not installed: no plots written (pip install matplotlib)")
        return {}
    plot_dir = os.path.join(workdir, PLOTS_DIR)
    os.makedirs(plot_dir, exist_ok=True)
    figures = {
        ROC_PNG: lambda: plots.roc_figure(distances, same, threshold, title="ROC, test pairs"),
        HISTOGRAMS_PNG: lambda: plots.distance_histogram_figure(
            distances, same, threshold, title="Distances, test pairs"
        ),
        CURVES_PNG: lambda: plots.calibration_curves_figure(_read_records(metrics_path)),
    }
    written = {}
    for name, make in figures.items():
        try:
            written[name] = plots.save_png(make(), os.path.join(plot_dir, name))
        except (ValueError, OSError) as err:
            log.warning("plot %s skipped: %s", name, err)
    return written


def _read_records(path: str) -> list:
    records = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # A line cut short by a kill.
    return records


# 1-NN accuracy is measured on at most this many test examples (evenly spaced rows), each
# against the whole training gallery, streamed: memory stays bounded for a split of any size.
ONE_NN_MAX_QUERIES = 10_000


def evaluate_test(model, config, data, workdir: str | None = None) -> dict:
    """The final report on the test split at the calibrated threshold (never tuned on test).

    `data` is the run's `trainers.metric_learning.PreparedData`.

    Images are read a bounded batch at a time (from memory or a prepared store): only the rows
    the test pairs use, the 1-NN queries, and the training gallery streamed once. With
    `workdir`, also writes the run's plots (`trainers.run_outputs.write_run_plots`).
    """
    pairs = config.held_out_pairs("test", data.test.labels)
    distances = pair_set_distances(model, data.test, pairs, config.eval_batch_size)
    threshold = float(model.threshold.numpy())
    report = {"test": eval_metrics.verification_report(distances, pairs.same, threshold)}
    if workdir is not None:
        write_run_plots(workdir, distances, pairs.same, threshold, wd.path(workdir, wd.METRICS))
    if config.split_by == "example":
        rows = np.unique(
            np.linspace(0, len(data.test) - 1, min(len(data.test), ONE_NN_MAX_QUERIES)).astype(int)
        )
        queries = data.test.take(rows)
        nearest = nearest_gallery_labels(
            model, embed(model, queries, config.eval_batch_size), data.train, config.eval_batch_size
        )
        report["one_nn_accuracy"] = float(np.mean(nearest == queries.labels))
    else:
        # Open set: test classes are absent from the training gallery, so 1-NN against it is
        # meaningless; the one-shot protocols of `launch.evaluate` measure this case.
        report["one_nn_accuracy"] = None
    return report


def weights_digest(model) -> str:
    """SHA-256 of every weight's bytes: equal digests mean bit-identical models."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()
