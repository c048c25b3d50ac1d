"""ThresholdCalibration: rules, every_n_epochs, stable log names, TensorBoard images."""

import glob
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.summary.summary_iterator import summary_iterator

from siamese_tf import callbacks as callbacks_lib
from siamese_tf import evaluation as eval_metrics
from siamese_tf import plots
from siamese_tf.callbacks import ThresholdCalibration
from siamese_tf.data import fixed_pairs
from siamese_tf.errors import InputError


class PointModel(keras.Model):
    """Embeds an "image" as its own pixel values; L2 pair distances; a threshold variable."""

    def __init__(self):
        super().__init__()
        self.threshold = self.add_weight(
            name="threshold",
            shape=(),
            initializer=keras.initializers.Constant(-1.0),
            trainable=False,
        )

    def call(self, images, training=None):
        return tf.reshape(tf.cast(images, tf.float32), [tf.shape(images)[0], -1])

    def pair_distances(self, a, b):
        return tf.norm(a - b, axis=-1)


def point_model():
    model = PointModel()
    model.build((None, 1, 1))
    return model


@pytest.fixture(scope="module")
def calibration_set():
    # Five classes on a line with overlapping spreads: ROC neither perfect nor chance.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 20)
    images = (labels * 1.0 + rng.normal(0, 0.6, labels.size)).astype(np.float32)[:, None, None]
    pairs = fixed_pairs(labels, 400, seed=1)
    model = point_model()
    flat = images.reshape(-1)
    distances = np.abs(flat[pairs.a] - flat[pairs.b])
    return model, images, pairs, distances


def _events(log_dir):
    """{tag: [(step, value)]} of every summary under log_dir/calibration."""
    found = {}
    for path in glob.glob(os.path.join(log_dir, "calibration", "events.out.tfevents.*")):
        for event in summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value))
    return found


@pytest.mark.parametrize("rule", ["eer", "max_accuracy", "youden", "far=1e-2"])
def test_rule_sets_threshold_and_stable_log_names(calibration_set, rule):
    model, images, pairs, distances = calibration_set
    callback = ThresholdCalibration(images, pairs, rule=rule, batch_size=32)
    callback.set_model(model)
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    expected = eval_metrics.calibrate(distances, pairs.same, rule=rule)
    assert float(model.threshold.numpy()) == pytest.approx(expected["threshold"], abs=1e-5)
    names = "auc eer eer_threshold max_accuracy_threshold max_accuracy threshold accuracy"
    names = {f"val_{n}" for n in [*names.split(), "tar_at_far_0.01", "tar_at_far_0.001"]}
    assert set(logs) == names | {"loss"}
    for name, value in expected.items():
        assert logs[f"val_{name}"] == pytest.approx(value, abs=1e-5)
    assert 0.6 < logs["val_auc"] < 1.0


def test_every_n_epochs_and_tensorboard_images(calibration_set, tmp_path):
    model, images, pairs, distances = calibration_set
    model.threshold.assign(-1.0)
    log_dir = str(tmp_path / "logs")
    callback = ThresholdCalibration(images, pairs, every_n_epochs=2, log_dir=log_dir)
    callback.set_model(model)
    logs = [{} for _ in range(3)]
    callback.on_epoch_end(0, logs[0])
    assert logs[0] == {} and float(model.threshold.numpy()) == -1.0  # Not a calibration epoch.
    callback.on_epoch_end(1, logs[1])
    assert "val_threshold" in logs[1]
    callback.on_epoch_end(2, logs[2])
    assert logs[2] == {}
    callback.on_train_end()  # The last epoch (2) was skipped: calibrated now.
    events = _events(log_dir)
    names = ("ROC_CURVE", "HISTOGRAM_IMAGE", "POSITIVE_HISTOGRAM", "NEGATIVE_HISTOGRAM")
    tags = {getattr(callbacks_lib, f"{name}_TAG") for name in names}
    assert tags <= set(events)
    for tag in tags:
        assert [step for step, _ in events[tag]] == [1, 2]
    _, image = events[callbacks_lib.ROC_CURVE_TAG][0]
    assert image.metadata.plugin_data.plugin_name == "images"
    width, height, png = tf.make_ndarray(image.tensor)
    assert png.startswith(b"\x89PNG") and (int(width), int(height)) == (500, 400)
    # The native histograms hold exactly the positive / negative calibration distances.
    _, positive = events[callbacks_lib.POSITIVE_HISTOGRAM_TAG][0]
    counts = tf.make_ndarray(positive.tensor)[:, 2]
    assert counts.sum() == pytest.approx(int(np.sum(pairs.same)))


def test_without_matplotlib_one_warning_and_no_images(
    calibration_set, tmp_path, monkeypatch, caplog
):
    model, images, pairs, _ = calibration_set
    monkeypatch.setattr(plots, "available", lambda: False)
    log_dir = str(tmp_path / "logs")
    callback = ThresholdCalibration(images, pairs, log_dir=log_dir)
    callback.set_model(model)
    with caplog.at_level(logging.WARNING, logger=callbacks_lib.__name__):
        for epoch in range(2):
            callback.on_epoch_end(epoch, {})
        callback.on_train_end()
    warnings = [r for r in caplog.records if "matplotlib" in r.getMessage()]
    assert len(warnings) == 1
    events = _events(log_dir)
    assert callbacks_lib.POSITIVE_HISTOGRAM_TAG in events
    assert callbacks_lib.ROC_CURVE_TAG not in events


def test_calibrates_inside_fit_and_logs_reach_history(calibration_set):
    _, images, pairs, _ = calibration_set
    model = point_model()
    model.compile(optimizer="sgd", loss=lambda y, p: tf.reduce_mean(p) * 0.0)
    callback = ThresholdCalibration(images, pairs)
    history = model.fit(
        images, np.zeros(len(images)), epochs=2, batch_size=50, verbose=0, callbacks=[callback]
    )
    assert len(history.history["val_auc"]) == 2
    assert float(model.threshold.numpy()) == pytest.approx(history.history["val_threshold"][-1])


def test_calibrate_final_calibrates_the_weights_as_they_leave_training(calibration_set):
    _, images, pairs, distances = calibration_set
    model = point_model()
    model.threshold.assign(0.123)  # e.g. an earlier epoch's threshold, before a best-epoch restore
    figures = ThresholdCalibration(images, pairs).calibrate_final(model)
    expected = eval_metrics.calibrate(distances, pairs.same)["threshold"]
    assert figures["val_threshold"] == pytest.approx(expected)
    assert float(model.threshold.numpy()) == pytest.approx(expected, rel=1e-6)
    assert {"val_auc", "val_eer"} <= set(figures)


def test_from_labels_takes_arrays_or_a_source_and_refuses_encoded_images(calibration_set):
    from siamese_tf.data import Source

    _, images, pairs, _ = calibration_set
    labels = np.repeat(np.arange(5), 20)
    callback = ThresholdCalibration.from_labels(images, labels, num_pairs=400, seed=1)
    np.testing.assert_array_equal(callback.pairs.a, pairs.a)  # fixed_pairs(labels, 400, 1).
    # A Source of encoded PNGs is kept and read (decoded through its map_fn) as pairs need it.
    pixels = np.random.default_rng(0).integers(0, 256, (12, 4, 4, 1), dtype=np.uint8)
    encoded = np.empty(12, dtype=object)
    encoded[:] = [tf.io.encode_png(p).numpy() for p in pixels]
    source = Source(encoded, np.arange(12) % 3, image_shape=(4, 4, 1))
    callback = ThresholdCalibration.from_labels(source, num_pairs=20)
    assert callback.images is source
    np.testing.assert_array_equal(callback.images.decoded_images(), pixels)
    with pytest.raises(InputError, match="encoded"):
        ThresholdCalibration.from_labels(encoded, np.arange(12) % 3)
    with pytest.raises(InputError, match="labels are required"):
        ThresholdCalibration.from_labels(images)
    with pytest.raises(InputError, match="calibration images"):
        ThresholdCalibration(images[:10], pairs)  # The pairs index rows up to 99.
    with pytest.raises(InputError, match="unknown threshold rule"):
        ThresholdCalibration(images, pairs, rule="median")
