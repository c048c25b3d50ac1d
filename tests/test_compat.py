"""Private TensorFlow names that `siamese_tf.compat` uses: an upgrade dropping one fails here."""

import inspect
import threading
import time

import keras
import tensorflow as tf
from tensorflow.python.distribute.failure_handling import failure_handling, failure_handling_util
from tensorflow.python.eager import context
from tensorflow.python.util import deprecation

import siamese_tf  # noqa: F401
from siamese_tf import compat
from siamese_tf.checkpointing import CoordinatedStop, PreemptionSignal, TrainingState


def test_private_names_still_exist():
    handler_cls = tf.distribute.experimental.PreemptionCheckpointHandler
    for name in (
        "_stop_cluster_wise_termination_watcher_thread",
        "_stop_poll_termination_signal_thread",
    ):
        assert callable(getattr(handler_cls, name)), name
    assert {p.name for p in compat._DECLINED_PLATFORMS} == {"GCE_TPU", "GCE_CPU"}
    assert "_platform_device" in inspect.getsource(handler_cls.__init__)
    source = inspect.getsource(failure_handling)
    for prefix in compat.HANDLER_THREAD_PREFIXES:
        assert f"'{prefix}%s'" in source, prefix
    assert callable(context.context().check_collective_ops_peer_health)
    assert callable(deprecation.silence)
    assert failure_handling_util.detect_platform() not in compat._DECLINED_PLATFORMS


def _tiny_state(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return TrainingState(model, str(tmp_path))


def test_the_handler_saves_through_our_backup_and_stops_its_threads(tmp_path):
    # Local mode (no cluster): the same handler API a multi-worker job uses, in one process.
    state = _tiny_state(tmp_path)
    signal = PreemptionSignal(signals=())
    stop = CoordinatedStop(None, state, signal)
    assert stop.active
    assert stop.at_step_end() is False
    signal.received.set()  # what SIGTERM / SIGINT does
    deadline = time.monotonic() + 10
    while not stop.at_step_end():  # the handler polls the flag once a second
        assert time.monotonic() < deadline, "the handler never saved"
        time.sleep(0.05)
    assert state.backup.latest_checkpoint.endswith("step-0")
    assert not [
        t for t in threading.enumerate() if t.name.startswith(compat.HANDLER_THREAD_PREFIXES)
    ]
    stop.close()


def test_stop_preemption_handler_ends_its_threads(tmp_path):
    stop = CoordinatedStop(None, _tiny_state(tmp_path), PreemptionSignal(signals=()))
    assert [t for t in threading.enumerate() if t.name.startswith(compat.HANDLER_THREAD_PREFIXES)]
    stop.close()
    assert not [
        t for t in threading.enumerate() if t.name.startswith(compat.HANDLER_THREAD_PREFIXES)
    ]
