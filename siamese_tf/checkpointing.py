"""Preemption-safe checkpoints with exact, mid-epoch resume.

Why not `keras.callbacks.BackupAndRestore`: in Keras 3 it restores at epoch granularity only (a
mid-epoch backup replays the whole epoch, so batches and metrics differ from an uninterrupted
run), writes from every worker, and overwrites its file in place (a kill during the save can
corrupt the only copy). `tf.train.CheckpointManager` writes a new checkpoint and then atomically
updates its `checkpoint` index, so a kill during a save leaves the previous one loadable.

Two managers share one `tf.train.Checkpoint` of the model, the optimizer (its `iterations` is
the global step) and the running metric state:

* `backup/`: every `save_every_steps` steps and on preemption, 2 kept — for resuming;
* `checkpoints/`: at every epoch end, `keep` kept (plus one every `keep_every_hours`) — history.

Only the chief writes into the workdir; other workers save into a temporary directory (TF's
multi-worker saving protocol needs every worker to save) that is deleted afterwards. Every worker
restores from the workdir (shared storage in a multi-worker job), so all resume with the same
weights, optimizer and metric state.

Stopping on a signal (SIGTERM: preemption; SIGINT: Ctrl-C) saves a backup at a step boundary. In a
multi-worker job a scheduler often signals one worker only, so the workers first agree on the step
through TensorFlow's coordinated preemption (`CoordinatedStop`); every worker then saves that step
and stops.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
import threading

import keras
import numpy as np
import tensorflow as tf

from siamese_tf import compat


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint was kept."""


def _metric_variables(model):
    return [v for metric in model.metrics for v in metric.variables]


class TrainingState:
    """The checkpointed training state of a compiled, built model.

    Args:
      model: the compiled and built model (its optimizer built too).
      workdir: the run directory (chief) — `backup/` and `checkpoints/` live there.
      is_chief: whether this worker writes the workdir.
      keep: epoch checkpoints kept in `checkpoints/`.
      keep_every_hours: additionally keep one epoch checkpoint per this many hours.
      extra: more trackables to save and restore with the model, by name (e.g. the early
        stopping state).
    """

    def __init__(self, model, workdir, *, is_chief=True, keep=3, keep_every_hours=None, extra=None):
        self.model = model
        self.is_chief = is_chief
        # Metric state is saved so a mid-epoch resume reports the same epoch means.
        self.checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=model.optimizer,
            metrics=_metric_variables(model),
            **(extra or {}),
        )
        root = workdir if is_chief else tempfile.mkdtemp(prefix="siamese_tf_worker_")
        self._tmp_root = None if is_chief else root
        self.backup = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(root, "backup"), max_to_keep=2, checkpoint_name="step"
        )
        self.kept = tf.train.CheckpointManager(
            self.checkpoint,
            os.path.join(root, "checkpoints"),
            max_to_keep=keep,
            keep_checkpoint_every_n_hours=keep_every_hours,
            checkpoint_name="epoch_end",
        )
        # What every worker resumes from: the chief's workdir. A non-chief only reads it (its
        # own saves go to the temporary directory), so all workers restore the same step.
        self.backup_in_workdir = (
            self.backup
            if is_chief
            else tf.train.CheckpointManager(
                self.checkpoint, os.path.join(workdir, "backup"), max_to_keep=2
            )
        )
        self._kept_in_workdir = os.path.join(workdir, "checkpoints")
        self.restored_metric_values = None

    @property
    def step(self) -> int:
        """The global step (number of optimizer updates applied)."""
        return int(self.model.optimizer.iterations.numpy())

    def restore(self) -> int:
        """Restores the latest backup, if any. Returns the step restored (0 when fresh)."""
        latest = self.backup_in_workdir.latest_checkpoint or tf.train.latest_checkpoint(
            self._kept_in_workdir
        )
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        self.restored_metric_values = [v.numpy() for v in _metric_variables(self.model)]
        return self.step

    def reapply_metric_state(self):
        """Puts back the restored running metric state (Keras resets metrics at epoch start)."""
        if self.restored_metric_values is not None:
            for var, value in zip(_metric_variables(self.model), self.restored_metric_values):
                var.assign(value)
            self.restored_metric_values = None

    def save_backup(self):
        """Saves a resumable checkpoint at the current step."""
        self.backup.save(checkpoint_number=self.step)

    def save_epoch_end(self):
        """Saves an epoch-end checkpoint (and a backup, so resume never goes further back)."""
        self.kept.save(checkpoint_number=self.step)
        self.save_backup()

    def close(self):
        """Removes a non-chief worker's temporary directory."""
        if self._tmp_root:
            shutil.rmtree(self._tmp_root, ignore_errors=True)


class PreemptionSignal:
    """Turns SIGTERM (preemption) and SIGINT (Ctrl-C) into a flag read between training steps.

    The handler only sets a flag: saving inside a signal handler could interrupt a step halfway.
    The first SIGINT also restores SIGINT's default action, so a second one ends the process at
    once (the kernel's default, even while a step or a collective is running); the last backup
    is kept. Install from the main thread; `restore()` puts the previous handlers back.

    Attributes:
      received: a `threading.Event`, set by the first signal.
      signum: the number of the first signal received (None before).
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.received = threading.Event()
        self.signum = None
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        del frame
        if self.signum is None:
            self.signum = signum
        self.received.set()
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.SIG_DFL)

    def restore(self):
        """Reinstalls the handlers that were there before."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class CoordinatedStop:
    """Makes every worker of a multi-worker job save the same step when any one is signalled.

    TensorFlow's mechanism, `tf.distribute.experimental.PreemptionCheckpointHandler`: the
    signalled worker publishes "save after step N+1" through the cluster's coordination service
    and waits until every worker has acknowledged it; the workers run in lockstep (every step
    all-reduces), so each reaches that step, saves it (`save_fn`: our backup) and stops. Chosen
    over an all-reduce of a "stop" flag inside the step because it adds nothing to the step and
    runs on the host between steps, where our callbacks already are. The handler polls
    `signal.received` once a second, so a stop lands one or two steps after the signal.

    The handler declines to work on GCP CPU VMs (it logs a warning); there `active` is False
    and the caller falls back to stopping this process alone, which its peers see as a lost
    worker (they stop within TensorFlow's heartbeat timeout; the last backup is kept).

    Args:
      cluster_resolver: the multi-worker strategy's `cluster_resolver`.
      state: the `TrainingState`; every worker must restore before this is created (the handler
        restores the same backup again and reads its run counter from it).
      signal: the `PreemptionSignal` whose flag starts a stop.
    """

    def __init__(self, cluster_resolver, state: TrainingState, signal):
        self.saved = False
        config = tf.distribute.experimental.TerminationConfig(
            termination_watcher_fn=signal.received.is_set,
            exit_fn=self._saved,
            grace_period=0,
            save_fn=state.save_backup,
        )
        # Given the manager of the workdir's backups, the handler restores from the same place
        # on every worker (it never saves through it: `save_fn` does).
        self.handler = tf.distribute.experimental.PreemptionCheckpointHandler(
            cluster_resolver, state.backup_in_workdir, termination_config=config
        )
        self.active = compat.preemption_handler_is_active(self.handler)
        self._previous_excepthook = threading.excepthook
        threading.excepthook = self._quiet_handler_threads

    def _quiet_handler_threads(self, args):
        # A lost worker takes the coordination service's keys with it: the handler's watcher
        # threads then end with an OpError that says nothing the lost-worker line does not.
        name = getattr(args.thread, "name", "") or ""
        if name.startswith(compat.HANDLER_THREAD_PREFIXES) and issubclass(
            args.exc_type, tf.errors.OpError
        ):
            return
        self._previous_excepthook(args)

    def _saved(self):
        self.saved = True

    def at_step_end(self) -> bool:
        """Call after every step on every worker. Returns True once this step was saved."""
        if not self.saved:
            compat.save_checkpoint_if_preempted(self.handler)
        return self.saved

    def close(self):
        """Stops the handler's watcher threads; call on every worker when training ends."""
        if not self.saved:
            compat.stop_preemption_handler(self.handler)
        threading.excepthook = self._previous_excepthook


class CheckpointCallback(keras.callbacks.Callback):
    """Saves backups every N steps and at epoch ends; guards NaN; honours preemption.

    A non-finite loss stops training *before* anything is saved, so the last good checkpoint is
    never replaced by a broken one; `NonFiniteLossError` is raised at the end of `fit`. On a
    preemption signal it saves a backup at the current step and stops training.

    Args:
      state: the `TrainingState`.
      save_every_steps: backup interval in steps (0: only at epoch ends).
      steps_per_epoch: steps per epoch; epoch-end steps are saved by `on_epoch_end` only, after
        the epoch's logs are written, so a resume never skips an epoch's metrics line.
      preemption: a `PreemptionSignal`, or None.
      coordinated: a `CoordinatedStop` (multi-worker jobs), or None: then a signal stops this
        process alone.
    """

    def __init__(
        self,
        state: TrainingState,
        save_every_steps: int,
        steps_per_epoch: int,
        preemption=None,
        coordinated: CoordinatedStop | None = None,
    ):
        super().__init__()
        self.state = state
        self.save_every_steps = int(save_every_steps)
        self.steps_per_epoch = int(steps_per_epoch)
        self.preemption = preemption
        self.coordinated = coordinated if coordinated is not None and coordinated.active else None
        self.preempted_at = None
        self.non_finite_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self.state.reapply_metric_state()

    def _finite(self, logs) -> bool:
        logs = logs or {}
        loss = logs.get("loss")
        nonfinite_steps = logs.get("nonfinite_steps")
        if nonfinite_steps is not None and float(np.asarray(nonfinite_steps).reshape(-1)[0]) > 0:
            return False
        return loss is None or math.isfinite(float(np.asarray(loss).reshape(-1)[0]))

    def on_train_batch_end(self, batch, logs=None):
        step = self.state.step
        if not self._finite(logs):
            self.non_finite_at = step
            self.model.stop_training = True
            return
        if self.coordinated is not None:
            if self.coordinated.at_step_end():  # saved the step all workers agreed on
                self.preempted_at = step
                self.model.stop_training = True
                return
        elif self.preemption is not None and self.preemption.received.is_set():
            self.state.save_backup()
            self.preempted_at = step
            self.model.stop_training = True
            return
        at_epoch_end = step % self.steps_per_epoch == 0
        if self.save_every_steps and step % self.save_every_steps == 0 and not at_epoch_end:
            self.state.save_backup()

    def on_epoch_end(self, epoch, logs=None):
        if self.non_finite_at is None and self.preempted_at is None and self._finite(logs):
            self.state.save_epoch_end()

    def on_train_end(self, logs=None):
        if self.non_finite_at is not None:
            raise NonFiniteLossError(
                f"non-finite loss at step {self.non_finite_at}; training stopped and the last "
                f"good checkpoint was kept (lower the learning rate or check the data)"
            )
