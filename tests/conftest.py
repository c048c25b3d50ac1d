"""Two logical CPU devices (for MirroredStrategy tests), made before any op runs: pytest imports
conftest first. Also the shared finished-run fixtures."""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def two_cpus():
    """The one MirroredStrategy over the two logical CPUs that every test shares (several in one
    process can hand out clashing collective instance keys)."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


from helpers import tiny_config  # noqa: E402


def make_finished_run(path):
    """Writes a finished digits run's workdir (config.json with split_sizes, a calibrated
    model.keras, report.json) through the trainer's own functions, minus the training steps: an
    evaluation needs a calibrated model, not a trained one, and the fixture stays fast."""
    import keras

    from siamese_tf.callbacks import ThresholdCalibration
    from trainers import metric_learning, run_outputs
    from trainers import workdir as wd

    config = tiny_config()
    keras.utils.set_random_seed(config.seeds.initialisation)
    data = metric_learning.prepare_data(config)
    model = metric_learning.build_model(config, data.source.image_shape)
    pairs = config.held_out_pairs("calibration", data.calibration.labels)
    calibration = ThresholdCalibration(data.calibration.images, pairs, rule=config.threshold_rule)
    calibration.set_model(model)
    calibration.calibrate()
    report = run_outputs.evaluate_test(model, config, data)
    path.mkdir(parents=True)
    config = {**json.loads(config.to_json()), "split_sizes": data.splits.sizes()}
    wd.write_json_atomic(wd.path(str(path), wd.CONFIG), config)
    wd.save_model_atomic(model, wd.path(str(path), wd.MODEL))
    wd.write_json_atomic(wd.path(str(path), wd.REPORT), report)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """Path of a finished digits run (config.json, calibrated model.keras, report.json)."""
    path = tmp_path_factory.getbasetemp() / "shared_digits_run"
    make_finished_run(path)
    return path


@pytest.fixture(scope="session")
def run(finished_run):
    """That run loaded by `trainers.evaluation.load_run`; a test that changes it restores it."""
    from trainers import evaluation

    return evaluation.load_run(str(finished_run))
