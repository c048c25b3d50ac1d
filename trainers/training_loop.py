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
import tensorflow as tf

from siamese_tf.checkpointing import CheckpointCallback, CoordinatedStop, TrainingState


class _RecordedEpochs(keras.callbacks.CallbackList):
    """A `CallbackList` that does not end an epoch a preemption, a NaN or `--max_steps` cut short.

    Keras calls `on_epoch_end` after `stop_training`, so a job stopped mid-epoch would log,
    calibrate, count towards early stopping and record (metrics.jsonl, the progress line,
    History) an epoch it did not finish, and the run resumed or extended from there would
    record that epoch again. Keras has no hook to veto one epoch's end for every callback,
    hence this list; `fit` uses a `CallbackList` it is given as is. `cut_short(epoch)` is
    decided in `on_train_batch_end`, before any `on_epoch_end`.
    """

    def __init__(self, callbacks, cut_short, **kwargs):
        super().__init__(callbacks, **kwargs)
        self._cut_short = cut_short

    def on_epoch_end(self, epoch, logs=None):
        if not self._cut_short(epoch):
            super().on_epoch_end(epoch, logs)


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


class RunProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar numbered over the whole run, so a resumed run counts on without a gap.

    A mid-epoch resume finishes its epoch in a `fit` call of its own; Keras would show it as
    "Epoch 5/5" with a bar of the remaining steps. This shows "Epoch 5/50" and a bar that starts
    where the interrupted epoch stopped.

    Args:
      epochs: epochs of the whole run.
      steps_per_epoch: steps per epoch.
      start_step: the global step this run starts at.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, start_step: int = 0):
        super().__init__()
        self.run_epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.offset = start_step % steps_per_epoch

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.run_epochs
        self.target = self.steps_per_epoch

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch + self.offset, logs)

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        self.offset = 0  # only the resumed epoch started part-way


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
    cluster_resolver=None,
    stopped_early=None,
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
      cluster_resolver: a multi-worker job's cluster resolver: a signal to any worker then
        stops all of them at the same step (`CoordinatedStop`). None: this process alone.
      stopped_early: optional `fn() -> bool`, true once early stopping ended the run (also
        when it did so before this job resumed it): no more steps are trained.

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
    coordinated = None
    if cluster_resolver is not None and preemption is not None and start < total_steps:
        # Created after every worker restored: the handler restores the same backup again and
        # takes its step counter from it, which must be equal on all workers.
        coordinated = CoordinatedStop(cluster_resolver, state, preemption)
    checkpoint_cb = CheckpointCallback(
        state, save_every_steps, steps_per_epoch, preemption, coordinated
    )
    epochs = -(-total_steps // steps_per_epoch)
    # Order matters: the checkpoint callback sees the NaN guard's verdict and runs after the
    # calibration callback has stored the epoch's threshold in the model.
    all_callbacks = [LearningRateLogger(), *callbacks, checkpoint_cb, StopAtStep(total_steps)]
    if verbose:
        all_callbacks.append(RunProgbar(epochs, steps_per_epoch, start))
    history: dict = {}
    step = start
    try:
        while (
            step < total_steps
            and checkpoint_cb.preempted_at is None
            and not (stopped_early is not None and stopped_early())
        ):
            epoch, offset = divmod(step, steps_per_epoch)
            # A mid-epoch resume finishes its epoch alone; otherwise run all remaining epochs.
            last_epoch = epoch + 1 if offset else epochs
            callback_list = _RecordedEpochs(
                all_callbacks,
                lambda epoch: (
                    checkpoint_cb.preempted_at is not None
                    or checkpoint_cb.non_finite_at is not None
                    or state.step < (epoch + 1) * steps_per_epoch  # --max_steps mid-epoch
                ),
                add_history=True,
                add_progbar=verbose != 0,
                verbose=verbose,
                epochs=last_epoch,
                steps=steps_per_epoch - offset,
                model=model,
            )
            result = model.fit(
                make_dataset(step),
                initial_epoch=epoch,
                epochs=last_epoch,
                steps_per_epoch=steps_per_epoch - offset,
                callbacks=callback_list,
                verbose=verbose,
                shuffle=False,  # The samplers draw every batch; Keras would warn it ignores it.
            )
            for name, values in result.history.items():
                history.setdefault(name, []).extend(values)
            step = state.step
            if checkpoint_cb.non_finite_at is not None:
                break
    except tf.errors.OpError:
        # A lost worker: the cluster is gone and stopping the handler's threads could block
        # on it; they are daemon threads and end with the process.
        raise
    except BaseException:
        if coordinated is not None:
            coordinated.close()
        raise
    if coordinated is not None:
        coordinated.close()
    return FitResult(start, state.step, checkpoint_cb.preempted_at, history)
