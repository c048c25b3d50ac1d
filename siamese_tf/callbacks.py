"""Keras callbacks: per-epoch ROC threshold calibration and the metrics.jsonl log."""

from __future__ import annotations

import json
import math
import os

import keras
import numpy as np

from siamese_tf.evaluation import metrics as eval_metrics
from siamese_tf.inference import pair_set_distances


class ThresholdCalibration(keras.callbacks.Callback):
    """Derives the operating threshold from a ROC curve on calibration pairs, every epoch.

    At the end of an epoch it embeds a fixed set of calibration pairs (never the test split),
    computes ROC AUC, EER and the thresholds at EER and at maximum accuracy, writes them into
    `logs` under `prefix` (so History, CSVLogger, TensorBoard and EarlyStopping placed after it
    see them) and assigns the threshold chosen by `rule` to `model.threshold`, so it is saved and
    exported with the model. Runs on host.

    Args:
      images: the calibration split's images.
      pairs: a `PairSet` of rows of `images`.
      rule: threshold rule: "eer", "max_accuracy", "youden" or "far=<rate>".
      batch_size: images per predict batch.
      prefix: prefix of the log names (`val_auc`, `val_eer`, `val_threshold`, ...).
      every_n_epochs: calibrate every n epochs (and always after the last one, via
        `on_train_end`, so the saved model is calibrated).
    """

    def __init__(self, images, pairs, rule="eer", batch_size=512, prefix="val_", every_n_epochs=1):
        super().__init__()
        eval_metrics.parse_threshold_rule(rule)
        self.images = images
        self.pairs = pairs
        self.rule = rule
        self.batch_size = batch_size
        self.prefix = prefix
        self.every_n_epochs = max(1, int(every_n_epochs))
        self._calibrated_epoch = None
        self._last_epoch = None

    def calibrate(self) -> dict:
        """Computes the calibration summary now and sets `model.threshold`."""
        distances = pair_set_distances(self.model, self.images, self.pairs, self.batch_size)
        summary = eval_metrics.calibrate(distances, self.pairs.same, rule=self.rule)
        self.model.threshold.assign(float(summary["threshold"]))
        return summary

    def on_epoch_end(self, epoch, logs=None):
        self._last_epoch = epoch
        if (epoch + 1) % self.every_n_epochs:
            return
        summary = self.calibrate()
        self._calibrated_epoch = epoch
        if logs is not None:
            logs.update({f"{self.prefix}{name}": float(v) for name, v in summary.items()})

    def on_train_end(self, logs=None):
        if self._last_epoch is not None and self._calibrated_epoch != self._last_epoch:
            self.calibrate()


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
