"""Private TensorFlow names that `siamese_tf.compat` uses: an upgrade dropping one fails here."""

import inspect
import threading
import time

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.distribute.failure_handling import failure_handling, failure_handling_util
from tensorflow.python.eager import context
from tensorflow.python.util import deprecation

import siamese_tf  # noqa: F401
from siamese_tf import compat
from siamese_tf.checkpointing import CoordinatedStop, PreemptionSignal, TrainingState


def test_private_tensorflow_and_keras_names_still_exist():
    handler_cls = tf.distribute.experimental.PreemptionCheckpointHandler
    for name in ("cluster_wise_termination_watcher", "poll_termination_signal"):
        assert callable(getattr(handler_cls, f"_stop_{name}_thread")), name
    assert {p.name for p in compat._DECLINED_PLATFORMS} == {"GCE_TPU", "GCE_CPU"}
    assert "_platform_device" in inspect.getsource(handler_cls.__init__)
    source = inspect.getsource(failure_handling)
    for prefix in compat.HANDLER_THREAD_PREFIXES:
        assert f"'{prefix}%s'" in source, prefix
    assert callable(context.context().check_collective_ops_peer_health)
    assert callable(deprecation.silence)
    assert failure_handling_util.detect_platform() not in compat._DECLINED_PLATFORMS
    # compat.symbolic_build / compat.BuildOnce call and override these.
    build = inspect.signature(keras.Model._symbolic_build).parameters
    maybe = inspect.signature(keras.Model._maybe_symbolic_build).parameters
    assert {"iterator", "data_batch"} <= set(build) and {"iterator", "data_batch"} <= set(maybe)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    assert model._compile_loss is not None and not model._compile_loss.built
    assert model.layers[0] in list(model._flatten_layers())


def _handler_threads():
    return [t for t in threading.enumerate() if t.name.startswith(compat.HANDLER_THREAD_PREFIXES)]


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
    assert not _handler_threads()
    stop.close()


def test_stop_preemption_handler_ends_its_threads(tmp_path):
    stop = CoordinatedStop(None, _tiny_state(tmp_path), PreemptionSignal(signals=()))
    assert _handler_threads()
    stop.close()
    assert not _handler_threads()


def test_fit_skips_keras_build_step_once_the_model_is_prebuilt(monkeypatch):
    # Keras' step pulls a training batch: a prebuilt model must not reach it, an unbuilt one
    # must (else Keras renamed the step and BuildOnce overrides nothing).
    from siamese_tf.losses import TripletSemiHardLoss
    from siamese_tf.models import SiameseModel, build_encoder

    original, calls = keras.Model._maybe_symbolic_build, []

    def spy(self, iterator=None, data_batch=None):
        calls.append(self.name)
        return original(self, iterator=iterator, data_batch=data_batch)

    monkeypatch.setattr(keras.Model, "_maybe_symbolic_build", spy)
    spec = (tf.TensorSpec([None, 8, 8, 1], tf.uint8), tf.TensorSpec([None], tf.int64))
    images = tf.zeros([4, 8, 8, 1], tf.uint8)
    data = tf.data.Dataset.from_tensors((images, tf.constant([0, 0, 1, 1], tf.int64))).repeat()
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")  # Keras builds this way under one.
    for name, prebuild in (("prebuilt", True), ("lazy", False)):
        with strategy.scope():
            model = SiameseModel(build_encoder("conv_small", (8, 8, 1), 4), name=name)
            model.compile(optimizer="sgd", loss=TripletSemiHardLoss())
            if prebuild:
                model.prebuild(spec)
        model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
    assert calls == ["lazy"]


def test_pydataset_tf_dataset_is_what_fit_reads():
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return np.full((2, 4), index, np.float32), np.arange(2)

    batches = list(compat.pydataset_tf_dataset(Batches()).as_numpy_iterator())
    assert [int(x[0, 0]) for x, _ in batches] == [0, 1, 2]
