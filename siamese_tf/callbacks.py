"""Keras callbacks: per-epoch ROC threshold calibration, one-shot validation, the metrics.jsonl
log and a stalled-learning notice."""

from __future__ import annotations

import json
import logging
import math
import os

import keras
import numpy as np
import tensorflow as tf

from siamese_tf import evaluation as eval_metrics
from siamese_tf.data.source import Source
from siamese_tf.errors import InputError
from siamese_tf.evaluation.episodes import episode_rows, source_episodes
from siamese_tf.evaluation.oneshot import n_way_k_shot_accuracy
from siamese_tf.inference import embed, pair_set_distances

# Stable TensorBoard names of the calibration summaries (under `<log_dir>/calibration`).
SUMMARY_SUBDIR = "calibration"
ROC_CURVE_TAG = "roc_curve"
HISTOGRAM_IMAGE_TAG = "distance_histograms"
POSITIVE_HISTOGRAM_TAG = "positive_distances"
NEGATIVE_HISTOGRAM_TAG = "negative_distances"

log = logging.getLogger(__name__)


class ThresholdCalibration(keras.callbacks.Callback):
    """Derives the operating threshold from a ROC curve on calibration pairs, every epoch.

    At the end of an epoch it embeds a fixed set of calibration pairs (never the test split),
    computes `siamese_tf.evaluation.calibrate` (ROC AUC, EER and its threshold, the
    maximum-accuracy threshold, the TAR at FAR targets and the threshold of `rule`), writes it
    into `logs` under `prefix` (so History, CSVLogger, TensorBoard and EarlyStopping placed
    after it see them) and assigns the threshold chosen by `rule` to `model.threshold`, so it is
    saved and exported with the model. Runs on host.

    Log names are stable: `{prefix}` + `auc`, `eer`, `eer_threshold`, `max_accuracy_threshold`,
    `max_accuracy`, `threshold` (the rule's), `accuracy` (at it) and `tar_at_far_<far>` for
    each FAR target (`val_tar_at_far_0.001`, ...).

    With `log_dir` (or `writer`), each calibration also writes TensorBoard summaries under the
    tags `roc_curve` and `distance_histograms` (images: the ROC curve with the operating point,
    and the positive / negative distance histograms with the threshold line) and
    `positive_distances` / `negative_distances` (native histograms), at step = epoch (0-based,
    as Keras' TensorBoard callback counts epochs). The images need matplotlib; without it they
    are skipped with one warning. Give a `log_dir` to the chief only.

    `ThresholdCalibration.from_labels(images, labels)` builds one from a labelled calibration
    set in one call (it draws the pair set).

    Args:
      images: the calibration split's images, as the model takes them: an array [N, H, W, C]
        (uint8 0..255 for the encoders of `siamese_tf.models`; any numeric array your model
        accepts), or a `siamese_tf.data.Source` (only the rows the pairs use are read, a batch
        at a time, each epoch).
        Encoded images (an object array of PNG / JPEG bytes) and `tf.data` datasets are
        refused with the fix: pass a `Source` or decoded arrays.
      pairs: a `siamese_tf.data.PairSet` of row indices into `images` (e.g. from
        `siamese_tf.data.fixed_pairs(labels, num_pairs, seed)`), with positives and
        negatives.
      rule: threshold rule: "eer", "max_accuracy", "youden" or "far=<rate>" (e.g. "far=1e-3").
      batch_size: images per forward pass when embedding `images`.
      prefix: prefix of the log names (`val_auc`, `val_eer`, `val_threshold`, ...).
      every_n_epochs: calibrate every n epochs (and always after the last one, via
        `on_train_end`, so the saved model is calibrated).
      log_dir: TensorBoard folder (e.g. the workdir's `logs/`); summaries go to its
        `calibration/` sub-folder. None writes no summaries (unless `writer` is given).
      writer: a `tf.summary` writer to use instead of one under `log_dir`.
      far_targets: FAR targets (rates in [0, 1]) whose TAR is logged.

    The model it is given (by `fit`, or `set_model`) must map `images` to embeddings and have a
    `threshold` variable and `pair_distances(a, b)`, as `siamese_tf.models.SiameseModel` does.

    Raises:
      InputError: an unknown threshold rule, images in a form the model cannot take, or pairs
        that index outside `images`.
    """

    def __init__(
        self,
        images,
        pairs,
        rule="eer",
        batch_size=512,
        prefix="val_",
        every_n_epochs=1,
        log_dir=None,
        writer=None,
        far_targets=(1e-2, 1e-3),
    ):
        super().__init__()
        eval_metrics.parse_threshold_rule(rule)
        self.images = calibration_images(images)
        if len(pairs) and max(int(np.max(pairs.a)), int(np.max(pairs.b))) >= len(self.images):
            raise InputError(
                f"the pairs index rows up to {max(int(np.max(pairs.a)), int(np.max(pairs.b)))} "
                f"but there are {len(self.images)} calibration images: draw the pairs from "
                "these images' labels"
            )
        self.pairs = pairs
        self.rule = rule
        self.batch_size = batch_size
        self.prefix = prefix
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.log_dir = log_dir
        self.far_targets = tuple(far_targets)
        self._writer = writer
        self._owns_writer = writer is None
        self._warned_no_matplotlib = False
        self._calibrated_epoch = None
        self._last_epoch = None
        self.last_distances = None
        self.last_summary = None

    @classmethod
    def from_labels(
        cls, images, labels=None, num_pairs: int = 2000, seed: int = 0, **kwargs
    ) -> ThresholdCalibration:
        """Builds the callback from a labelled calibration set: draws its pairs, in one call.

        Args:
          images: the calibration images (see the class's `images`), or a `Source`.
          labels: their integer labels [N]; None with a `Source` (its labels are used).
          num_pairs: pairs to draw, half positive and half negative
            (`siamese_tf.data.fixed_pairs`).
          seed: seed of the pair draw (the same seed gives the same pairs).
          **kwargs: the other arguments of `ThresholdCalibration` (`rule`, `batch_size`,
            `log_dir`, ...).

        Returns:
          A `ThresholdCalibration`.

        Raises:
          InputError: see the class; labels missing, of another length, or too few classes
            to form positive and negative pairs.
        """
        from siamese_tf.data import Source, fixed_pairs

        if isinstance(images, Source):
            if labels is not None:
                raise InputError("pass either a Source or images and labels, not both")
            labels = images.labels
        if labels is None:
            raise InputError("labels are required with an image array: from_labels(images, labels)")
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(images):
            raise InputError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
        return cls(images, fixed_pairs(labels, num_pairs, seed=seed), **kwargs)

    def calibrate(self, step: int | None = None) -> dict | None:
        """Computes the calibration summary now and sets `model.threshold`.

        Args:
          step: when given (and a `log_dir` or `writer` was), also writes the TensorBoard
            summaries at this step.

        Returns:
          The `calibrate` summary; None (leaving the threshold alone) when the model gives
          non-finite distances — a diverged model; the NaN guard of the checkpoint callback
          reports it.
        """
        distances = pair_set_distances(self.model, self.images, self.pairs, self.batch_size)
        if not np.all(np.isfinite(distances)):
            return None
        summary = eval_metrics.calibrate(
            distances, self.pairs.same, rule=self.rule, far_targets=self.far_targets
        )
        self.model.threshold.assign(float(summary["threshold"]))
        self.last_distances, self.last_summary = distances, summary
        if step is not None:
            self.write_summaries(distances, summary["threshold"], step)
        return summary

    def calibrate_final(self, model) -> dict:
        """Calibrates `model` as it leaves training; returns its figures as epoch-log keys.

        At the end of training the kept weights need not be the last epoch end's: early
        stopping may have restored its best epoch, `--max_steps` may have cut the last epoch
        (a cut epoch does not end), or a finished run was resumed with nothing left to train.
        The same weights always give the same threshold. Runs on host.

        Args:
          model: the model to calibrate (becomes this callback's model).

        Returns:
          `{prefix + name: value}` of the `calibrate` summary; empty when the model gives
          non-finite distances (its threshold is then left alone).
        """
        self.set_model(model)
        summary = self.calibrate() or {}
        return {f"{self.prefix}{name}": float(v) for name, v in summary.items()}

    def write_summaries(self, distances, threshold: float, step: int) -> None:
        """Writes the ROC / histogram summaries of calibration distances (no-op without a writer).

        Args:
          distances: the calibration pair distances [len(pairs)].
          threshold: the chosen threshold (drawn on the plots).
          step: the summary step.
        """
        writer = self._summary_writer()
        if writer is None:
            return
        same = np.asarray(self.pairs.same).astype(bool)
        with writer.as_default(step=int(step)):
            tf.summary.histogram(POSITIVE_HISTOGRAM_TAG, distances[same], buckets=30)
            tf.summary.histogram(NEGATIVE_HISTOGRAM_TAG, distances[~same], buckets=30)
            if self._can_plot():
                from siamese_tf import plots

                title = f"epoch {int(step) + 1}"
                figures = {
                    ROC_CURVE_TAG: plots.roc_figure(distances, same, threshold, title=title),
                    HISTOGRAM_IMAGE_TAG: plots.distance_histogram_figure(
                        distances, same, threshold, title=f"Calibration distances, {title}"
                    ),
                }
                for tag, figure in figures.items():
                    tf.summary.image(tag, tf.image.decode_png(plots.to_png(figure))[None])
        writer.flush()

    def _summary_writer(self):
        if self._writer is None and self.log_dir:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, SUMMARY_SUBDIR))
        return self._writer

    def _can_plot(self) -> bool:
        from siamese_tf import plots

        if plots.available():
            return True
        if not self._warned_no_matplotlib:
            log.warning(
                "matplotlib is not installed: ROC and histogram images are not written "
                "to TensorBoard (pip install matplotlib)"
            )
            self._warned_no_matplotlib = True
        return False

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        if (epoch + 1) % self.every_n_epochs:
            return
        summary = self.calibrate(step=epoch)
        self._calibrated_epoch = epoch
        if logs is not None and summary is not None:
            logs.update({f"{self.prefix}{name}": float(v) for name, v in summary.items()})

    def on_train_end(self, logs=None):
        if self._last_epoch is not None and self._calibrated_epoch != self._last_epoch:
            self.calibrate(step=self._last_epoch)
            self._calibrated_epoch = self._last_epoch
        if self._owns_writer and self._writer is not None:
            self._writer.close()
            self._writer = None


def calibration_images(images):
    """The calibration images as the model takes them, or an `InputError` saying the fix.

    Args:
      images: a numeric array (or tensor) [N, ...], or a `siamese_tf.data.Source` (kept: the
        rows the pairs use are read and decoded a batch at a time, from memory or a store).

    Returns:
      A numpy array [N, ...], or the `Source`.

    Raises:
      InputError: encoded images, a `tf.data` dataset, or a non-numeric array.
    """
    if isinstance(images, Source):
        return images
    if isinstance(images, tf.data.Dataset):
        raise InputError(
            "calibration images must be an array [N, H, W, C] or a Source, not a tf.data "
            "dataset: the same pairs are scored every epoch, so they must be indexable"
        )
    array = np.asarray(images)
    if array.dtype == object or array.dtype.kind in "SU":
        raise InputError(
            "calibration images are encoded (bytes): pass the Source they came from "
            "(ThresholdCalibration decodes it once), or decoded arrays, e.g. "
            "source.decoded_images()"
        )
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool) or array.ndim < 2:
        raise InputError(
            f"calibration images must be a numeric array [N, H, W, C], got {array.dtype} "
            f"{array.shape}"
        )
    return array


class MetricsJsonl(keras.callbacks.Callback):
    """Appends one JSON object per epoch (epoch number, step and every log value) to a file.

    Each line is flushed and fsynced, so a killed job leaves every finished epoch on disk.
    Runs on host; only the chief should be given one.

    Args:
      path: the `metrics.jsonl` path.
      steps_per_epoch: used to record the global step of each epoch end.
    """

    def __init__(self, path: str, steps_per_epoch: int):
        super().__init__()
        self.path = path
        self.steps_per_epoch = steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1, "step": (epoch + 1) * self.steps_per_epoch}
        for name, value in (logs or {}).items():
            value = float(np.asarray(value))
            record[name] = value if math.isfinite(value) else str(value)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


class OneShotValidation(keras.callbacks.Callback):
    """Per-epoch N-way 1-shot accuracy on held-out classes: the model-selection metric.

    A fixed, seeded set of episodes is drawn once from the validation split (each: N classes,
    one support and one query image each; a query takes the class of its nearest support);
    every epoch embeds the rows those episodes use, once each, and adds the accuracy to the
    epoch's `logs` as `{prefix}oneshot_{N}way` — beside the ROC figures, so History,
    TensorBoard, `metrics.jsonl` and early stopping see it. Runs on host.

    Args:
      images: the validation split, a `siamese_tf.data.Source` (read a batch at a time) or
        decoded uint8 images [n, H, W, C].
      labels: its labels [n]; None with a `Source`.
      ways: N, classes per episode (>= 2).
      episodes: number of episodes.
      seed: the episodes' seed.
      batch_size: images per forward pass.
      prefix: log name prefix.

    Raises:
      InputError: fewer than `ways` validation classes with two or more images.
    """

    def __init__(
        self, images, labels=None, ways=20, episodes=1000, seed=0, batch_size=512, prefix="val_"
    ):
        super().__init__()
        if isinstance(images, Source):
            labels = images.labels
        if int(ways) < 2:
            raise InputError(f"one-shot validation needs ways >= 2, got {ways}")
        drawn = source_episodes(labels, int(ways), 1, 1, int(episodes), seed)
        self.rows, self.support, self.query = episode_rows(drawn)
        self.targets = drawn.query_targets
        self.images = images.take(self.rows) if isinstance(images, Source) else images[self.rows]
        self.batch_size = batch_size
        self.name = f"{prefix}oneshot_{int(ways)}way"

    def accuracy(self) -> float:
        """The episodes' accuracy with the model as it is now."""
        embeddings = embed(self.model, self.images, self.batch_size)
        if not np.all(np.isfinite(embeddings)):
            return float("nan")  # A diverged model: the NaN guard reports it.
        return n_way_k_shot_accuracy(embeddings[self.support], embeddings[self.query], self.targets)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.name] = self.accuracy()


class StalledLearning(keras.callbacks.Callback):
    """Says so, once per epoch, when no triplet was active in a whole epoch.

    On small or easy data the semi-hard loss can reach 0 early (every mined triplet already
    satisfies the margin): the remaining steps change nothing. Keras' mean of the model's
    `active_triplet_fraction` over the epoch is then exactly 0.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs and logs.get("active_triplet_fraction") == 0.0:
            log.warning(
                "epoch %d: no triplet was active in any batch (loss %.3g): training has stopped "
                "learning; stop it (--early_stopping_patience) or make the task harder (a larger "
                "--margin, more --classes_per_batch)",
                epoch + 1,
                float(logs.get("loss", 0.0)),
            )
