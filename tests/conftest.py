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
