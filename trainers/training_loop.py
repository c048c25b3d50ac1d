"""`fit` with exact resume: restore, replay the sampler from the restored step, keep going.

Keras `fit` starts epochs at batch 0, so a job resumed mid-epoch runs two `fit` calls: the rest
of the interrupted epoch (with the running metric means restored, so the epoch's logs equal an
uninterrupted run's), then the remaining epochs. Each call gets a dataset that starts at its
first global step — the samplers are pure functions of (seed, stream, step), so this replays
exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import dataclasses

import keras

from siamese_tf.checkpointing import CheckpointCallback, TrainingState


class StopAtStep(keras.callbacks.Callback):
    """Stops training once the optimizer has applied `total_steps` updates (`--max_steps`)."""

    def __init__(self, total_steps: int):
        super().__init__()
        self.total_steps = total_steps

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) >= self.total_steps:
            self.model.stop_training = True


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (TensorBoard, metrics.jsonl)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


@dataclasses.dataclass
class FitResult:
    """What the loop did: steps done, whether it was resumed, preempted, and its epoch logs."""

    start_step: int
    end_step: int
    preempted_at: int | None
    history: dict


def fit_resumable(
    model,
    state: TrainingState,
    make_dataset,
    *,
    steps_per_epoch: int,
    total_steps: int,
    callbacks: list,
    save_every_steps: int,
    preemption=None,
    verbose: int = 1,
    on_restore=None,
) -> FitResult:
    """Trains from the last backup (or from scratch) to `total_steps`.

    Args:
      model: the compiled, fully built model.
      state: its `TrainingState` (restored here).
      make_dataset: `fn(start_step) -> dataset` starting at that global step.
      steps_per_epoch: steps per epoch.
      total_steps: the step to stop at.
      callbacks: user-visible callbacks (calibration, logs, TensorBoard, ...), in order.
      save_every_steps: backup interval.
      preemption: a `PreemptionSignal`, or None.
      verbose: `fit` verbosity.
      on_restore: optional `fn(step)` called with the restored step before training.

    Returns:
      A `FitResult`.
    """
    start = state.restore()
    if start % steps_per_epoch == 0:
        # At an epoch boundary Keras starts the next epoch with reset metrics; the restored
        # running means belong to the finished epoch.
        state.restored_metric_values = None
    if on_restore is not None:
        on_restore(start)
    checkpoint_cb = CheckpointCallback(state, save_every_steps, steps_per_epoch, preemption)
    # Order matters: the checkpoint callback sees the NaN guard's verdict and runs after the
    # calibration callback has stored the epoch's threshold in the model.
    all_callbacks = [LearningRateLogger(), *callbacks, checkpoint_cb, StopAtStep(total_steps)]
    history: dict = {}
    step = start
    epochs = -(-total_steps // steps_per_epoch)
    while step < total_steps and checkpoint_cb.preempted_at is None:
        epoch, offset = divmod(step, steps_per_epoch)
        # A mid-epoch resume finishes its epoch alone; otherwise run all remaining epochs.
        last_epoch = epoch + 1 if offset else epochs
        result = model.fit(
            make_dataset(step),
            initial_epoch=epoch,
            epochs=last_epoch,
            steps_per_epoch=steps_per_epoch - offset,
            callbacks=all_callbacks,
            verbose=verbose,
            shuffle=False,  # The samplers draw every batch; Keras would warn it ignores it.
        )
        for name, values in result.history.items():
            history.setdefault(name, []).extend(values)
        step = state.step
        if checkpoint_cb.non_finite_at is not None:
            break
    return FitResult(start, state.step, checkpoint_cb.preempted_at, history)
