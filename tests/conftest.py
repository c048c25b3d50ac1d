"""Test configuration: two logical CPU devices before TensorFlow starts anything.

Multi-replica code (MirroredStrategy) is tested on these two logical devices, so the
configuration must happen before any op runs; pytest imports conftest first.
"""

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
    """One MirroredStrategy over the two logical CPUs, shared by every test.

    Several MirroredStrategy objects in one process can hand out clashing collective instance
    keys ("Collective instance N expected type ..."), so tests share this one.
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
