"""Early stopping whose state is checkpointed, so a preempted run resumes it exactly.

Why not `keras.callbacks.EarlyStopping`: its best value, epochs without improvement and best
weights live in Python attributes. A job resumed from a backup (preemption, a lost worker)
would forget them: patience would restart, and the best weights of the epochs before the
interruption would be lost. Here they are variables of a `tf.Module` that the run's checkpoint
tracks (`ResumableEarlyStopping.state`), so the resumed job decides exactly as an
uninterrupted one.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from siamese_tf.errors import InputError

log = logging.getLogger(__name__)

# Monitored values where lower is better; anything else (AUC, accuracy, one-shot) is maximised.
_LOWER_IS_BETTER = ("loss", "eer")


def lower_is_better(monitor: str) -> bool:
    """Whether the monitored log value improves by going down (losses, EER)."""
    return any(word in monitor for word in _LOWER_IS_BETTER)


class _State(tf.Module):
    """The checkpointed state: best value, its epoch, epochs without improvement, whether the
    run stopped, and a copy of the model's weights at the best epoch."""

    def __init__(self, model, sign: float):
        super().__init__(name="early_stopping")
        self.best = tf.Variable(-np.inf, dtype=tf.float64, trainable=False)
        self.best_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.wait = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.stopped_epoch = tf.Variable(-1, dtype=tf.int64, trainable=False)
        self.sign = sign
        self.best_weights = [
            tf.Variable(keras.ops.convert_to_numpy(w), trainable=False) for w in model.weights
        ]


class ResumableEarlyStopping(keras.callbacks.Callback):
    """Stops training when `monitor` has not improved for `patience` epochs; keeps the best.

    Create it after the model is built and before the run's checkpoint, and put `state` in
    that checkpoint. Place it after the callbacks that add `monitor` to the epoch logs (the
    threshold calibration, the one-shot validation). Runs on host, at epoch ends.

    Args:
      model: the built model (its weights are copied at each new best epoch).
      monitor: the epoch log value to watch, e.g. "val_oneshot_20way" or "val_auc".
      patience: epochs without improvement before stopping (>= 1).
      min_delta: the smallest change that counts as an improvement.
      restore_best_weights: `restore_best` puts the best epoch's weights back.

    Raises:
      InputError: patience < 1 or a negative min_delta.
    """

    def __init__(self, model, monitor, patience, min_delta=0.0, restore_best_weights=True):
        super().__init__()
        if int(patience) < 1:
            raise InputError(f"early stopping patience must be >= 1, got {patience}")
        if min_delta < 0:
            raise InputError(f"min_delta must be >= 0, got {min_delta}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.restore_best_weights = restore_best_weights
        # Maximise sign * value: lower-is-better values are negated.
        self.state = _State(model, -1.0 if lower_is_better(monitor) else 1.0)

    @property
    def stopped(self) -> bool:
        """Whether the run stopped early (also true after resuming a run that had)."""
        return int(self.state.stopped_epoch.numpy()) >= 0

    @property
    def best_epoch(self) -> int | None:
        """0-based epoch of the best value so far, None before the first."""
        epoch = int(self.state.best_epoch.numpy())
        return None if epoch < 0 else epoch

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise InputError(
                f"early stopping watches {self.monitor!r}, which this run does not log "
                f"(it logs: {', '.join(sorted(logs or {}))})"
            )
        score = self.state.sign * float(value)
        if not np.isfinite(score):
            return  # A diverged epoch is never the best; the NaN guard stops such runs.
        if score > float(self.state.best.numpy()) + self.min_delta:
            self.state.best.assign(score)
            self.state.best_epoch.assign(epoch)
            self.state.wait.assign(0)
            for copy, weight in zip(self.state.best_weights, self.model.weights, strict=True):
                copy.assign(keras.ops.convert_to_numpy(weight))
            return
        self.state.wait.assign_add(1)
        if int(self.state.wait.numpy()) >= self.patience:
            self.state.stopped_epoch.assign(epoch)
            self.model.stop_training = True
            log.warning(
                "epoch %d: %s has not improved for %d epochs (best %.4f at epoch %d): stopping",
                epoch + 1,
                self.monitor,
                self.patience,
                self.state.sign * float(self.state.best.numpy()),
                int(self.state.best_epoch.numpy()) + 1,
            )

    def restore_best(self, model) -> bool:
        """Puts the best epoch's weights (and so its calibrated threshold) back into `model`.

        Returns:
          Whether weights were restored (False before any epoch ended, or when disabled).
        """
        if not self.restore_best_weights or self.best_epoch is None:
            return False
        for weight, copy in zip(model.weights, self.state.best_weights, strict=True):
            weight.assign(copy.numpy())
        return True
