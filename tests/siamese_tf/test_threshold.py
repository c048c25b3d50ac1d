"""The "same" decision and "not calibrated", each decided once (`siamese_tf.threshold`)."""

import keras
import numpy as np
import tensorflow as tf

from siamese_tf import threshold
from siamese_tf.models import UNCALIBRATED, SiameseModel, build_encoder


def test_is_calibrated_reads_numbers_arrays_and_the_model_variable():
    assert UNCALIBRATED == threshold.UNCALIBRATED
    assert not threshold.is_calibrated(UNCALIBRATED)
    assert not threshold.is_calibrated(np.float32(-1.0))
    assert threshold.is_calibrated(0.0) and threshold.is_calibrated(np.float64(0.7))
    model = SiameseModel(build_encoder("conv_small", (8, 8, 1), 8))
    assert not threshold.is_calibrated(model.threshold)
    model.threshold.assign(0.25)
    assert threshold.is_calibrated(model.threshold)
    assert threshold.is_calibrated(tf.constant(0.25))


def test_same_is_distance_at_most_threshold_for_every_kind_of_value():
    distances = np.array([0.1, 0.5, 0.9])
    np.testing.assert_array_equal(threshold.same(distances, 0.5), [True, True, False])
    assert threshold.same(0.5, 0.5) is True and threshold.same(0.51, 0.5) is False
    tensor = threshold.same(tf.constant(distances, tf.float32), keras.Variable(0.5))
    np.testing.assert_array_equal(np.asarray(tensor), [True, True, False])
    # An uncalibrated threshold calls nothing "same" (distances are >= 0).
    assert not np.any(threshold.same(distances, UNCALIBRATED))
