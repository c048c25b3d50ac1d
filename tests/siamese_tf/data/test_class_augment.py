"""Class augmentation by quarter turns: new classes, exact pixels, upright classes untouched."""

import numpy as np
import pytest

from siamese_tf.data import Source
from siamese_tf.data.class_augment import rotated_classes
from siamese_tf.errors import InputError
from trainers import metric_learning
from trainers.config import TrainConfig


def _source(n_classes=3, per_class=2, size=5):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n_classes * per_class, size, size, 1), dtype=np.uint8)
    labels = np.repeat(np.arange(n_classes) * 2, per_class)  # Sparse labels 0, 2, 4.
    return Source(images, labels, name="toy", class_names=[f"c{i}" for i in range(5)])


def test_each_turn_is_a_new_class_with_rotated_pixels():
    source = _source()
    out = rotated_classes(source)
    assert len(out) == 4 * len(source)
    offset = 5  # max label + 1
    for k in range(4):
        rows = slice(k * len(source), (k + 1) * len(source))
        np.testing.assert_array_equal(out.labels[rows], source.labels + k * offset)
        np.testing.assert_array_equal(out.images[rows], np.rot90(source.images, k, axes=(1, 2)))
    # Every (class, turn) is its own class and none collides with another.
    assert np.unique(out.labels).size == 4 * np.unique(source.labels).size
    assert out.class_names[offset + 2] == "c2_rot90" and out.class_names[2] == "c2"
    # Three quarter turns of an asymmetric image differ from the upright one.
    assert not np.array_equal(out.images[len(source)], source.images[0])


def test_subset_of_turns_and_bad_input():
    source = _source()
    out = rotated_classes(source, quarter_turns=(2,))
    assert len(out) == 2 * len(source)
    np.testing.assert_array_equal(out.images[len(source) :], source.images[:, ::-1, ::-1])
    # More names than labels (unused trailing classes): rotated names still line up.
    named = Source(source.images, source.labels, class_names=[f"c{i}" for i in range(7)])
    assert rotated_classes(named).class_names[5 + 2] == "c2_rot90"
    with pytest.raises(InputError, match="distinct values"):
        rotated_classes(source, quarter_turns=(1, 1))
    with pytest.raises(InputError, match="distinct values"):
        rotated_classes(source, quarter_turns=(4,))
    with pytest.raises(InputError, match="must exceed every label"):
        rotated_classes(source, label_offset=4)
    wide = Source(np.zeros((2, 4, 6, 1), np.uint8), [0, 1])
    with pytest.raises(InputError, match="square images"):
        rotated_classes(wide)


def test_recipe_rotates_training_classes_only():
    # 2 of the 10 digits each for calibration and test (a held-out split needs 2 classes).
    held_out = dict(split_by="class", calibration_fraction=0.2, test_fraction=0.2)
    base = TrainConfig(classes_per_batch=4, samples_per_class=4, **held_out)
    plain = metric_learning.prepare_data(base)
    rotated = metric_learning.prepare_data(TrainConfig(**{**base.__dict__, "rotate_classes": True}))
    assert len(rotated.train) == 4 * len(plain.train)
    assert np.unique(rotated.train.labels).size == 4 * np.unique(plain.train.labels).size
    np.testing.assert_array_equal(rotated.calibration.labels, plain.calibration.labels)
    np.testing.assert_array_equal(rotated.test.labels, plain.test.labels)
    # No rotated training class shares a label with a held-out class.
    held_out = set(plain.calibration.labels) | set(plain.test.labels)
    assert held_out.isdisjoint(set(rotated.train.labels))
