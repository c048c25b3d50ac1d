"""The one place private TensorFlow / Keras APIs are used, each with why and what would replace it.

`tests/siamese_tf/test_compat.py` checks every private name used here, so an upgrade that removes
one fails there, loudly, rather than in a multi-worker job. `grep -rn "noqa: SLF001"` finds each
use.
"""

from __future__ import annotations

import logging

import tensorflow as tf
from tensorflow.python.distribute.failure_handling import failure_handling_util
from tensorflow.python.eager import context
from tensorflow.python.util import deprecation

log = logging.getLogger(__name__)

# `PreemptionCheckpointHandler` declines these platforms (it only logs a warning and then never
# saves), see tensorflow/python/distribute/failure_handling/failure_handling.py.
_DECLINED_PLATFORMS = (
    failure_handling_util.PlatformDevice.GCE_TPU,
    failure_handling_util.PlatformDevice.GCE_CPU,
)


def preemption_handler_is_active(handler) -> bool:
    """Whether a `PreemptionCheckpointHandler` will act on a termination notice here.

    The handler has no public way to say it declined the platform (GCP CPU / TPU VMs); without
    this a stop signal there would be ignored silently.
    """
    active = handler._platform_device not in _DECLINED_PLATFORMS  # noqa: SLF001
    if not active:
        log.warning(
            "TensorFlow's coordinated preemption does not run on this platform (%s); a stop "
            "signal stops the signalled worker only",
            handler._platform_device.name,  # noqa: SLF001
        )
    return active


def save_checkpoint_if_preempted(handler) -> None:
    """`handler.save_checkpoint_if_preempted()` without its deprecation warning.

    On the step it saves, the handler reads its own deprecated `total_run_calls` property, which
    logs a three-line deprecation warning into the one-line stop message (TensorFlow 2.21).
    """
    with deprecation.silence():
        handler.save_checkpoint_if_preempted()


# Names of the handler's watcher threads (failure_handling.py): when the cluster goes away they
# die with the coordination service's error, which Python prints as a thread traceback.
HANDLER_THREAD_PREFIXES = ("PeerTerminationWatcher-", "WorkerTerminationSignalWatcher-")


def unreachable_peers(resolver, timeout_s: float = 5.0) -> list[str]:
    """The tasks of a multi-worker cluster that no longer answer a collective health probe.

    `MultiWorkerMirroredStrategy` probes peers the same way in its own (Python-level) health
    check, which the coordination service has replaced; there is no public probe.

    Args:
      resolver: the job's cluster resolver.
      timeout_s: how long one probe may wait.

    Returns:
      Task names such as "/job:worker/replica:0/task:1" (this task is never probed).
    """
    spec = resolver.cluster_spec()
    me = f"/job:{resolver.task_type}/replica:0/task:{resolver.task_id}"
    lost = []
    for job in spec.jobs:
        for index in range(spec.num_tasks(job)):
            peer = f"/job:{job}/replica:0/task:{index}"
            if peer == me:
                continue
            try:
                context.context().check_collective_ops_peer_health(
                    peer, timeout_in_ms=int(timeout_s * 1000)
                )
            except (
                tf.errors.UnavailableError,
                tf.errors.DeadlineExceededError,
                tf.errors.FailedPreconditionError,
            ):
                lost.append(peer)
            except Exception:  # noqa: BLE001  (a probe that cannot run names nobody)
                log.debug("health probe of %s failed", peer, exc_info=True)
    return lost


def stop_preemption_handler(handler) -> None:
    """Stops a `PreemptionCheckpointHandler`'s two watcher threads (training ended normally).

    The handler stops them itself only when it saves on a notice; otherwise only its `__del__`
    does, which never runs while the threads (holding bound methods of it) are alive. The
    cluster watcher blocks in a coordination-service read until a peer writes the key this
    publishes, so every worker must call this while the cluster is still up.
    """
    handler._stop_cluster_wise_termination_watcher_thread()  # noqa: SLF001
    handler._stop_poll_termination_signal_thread()  # noqa: SLF001


# --- Keras: building a compiled model before `fit` ---------------------------------------------


def symbolic_build(model, data_batch) -> None:
    """Builds a compiled model's layers, compiled loss and metrics, and optimizer, without data.

    Keras' `Model._symbolic_build`, what `fit` runs on its first batch; no public call builds the
    compiled loss and the optimizer from shapes alone.

    Args:
      model: a compiled `keras.Model`.
      data_batch: one batch as `keras.KerasTensor`s, `(x, y)`.
    """
    model._symbolic_build(data_batch=data_batch)  # noqa: SLF001


class BuildOnce:
    """Mixin of a `keras.Model` subclass: `fit` skips Keras' build step once all is built.

    Keras' `_maybe_symbolic_build` (TensorFlow backend, under a strategy) pulls a real batch
    from the training iterator on every `fit` call, built model or not: one training batch is
    lost per call (a resumed run would not replay its batches exactly) and, under
    MultiWorkerMirroredStrategy, reducing that distributed batch fails (keras-team/keras#20585,
    tensorflow/tensorflow#72388). Build first with `symbolic_build`.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        compile_loss = self._compile_loss  # noqa: SLF001
        built = (
            self.built
            and all(layer.built for layer in self._flatten_layers())  # noqa: SLF001
            and (self.optimizer is None or self.optimizer.built)
            and (compile_loss is None or compile_loss.built)
        )
        if not built:
            super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)  # noqa: SLF001


# --- Keras: the tf.data dataset `fit` makes of a PyDataset (benchmarks) -------------------------


def pydataset_tf_dataset(py_dataset) -> tf.data.Dataset:
    """The `tf.data.Dataset` Keras' `fit` builds from a `keras.utils.PyDataset`.

    The pipeline benchmark times our samplers against exactly what Keras feeds `fit`; Keras
    exposes its data adapters only under `keras.src`.
    """
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    return PyDatasetAdapter(py_dataset, shuffle=False).get_tf_dataset()
