"""Fitting a run's config to small data: adapt the defaults with a note, or name the fix."""

import numpy as np
import pytest

from siamese_tf.data import Source
from siamese_tf.errors import InputError
from trainers import small_data
from trainers.config import TrainConfig

FRACTIONS = ("calibration_fraction", "test_fraction")
BATCH = ("classes_per_batch", "samples_per_class")


def source(counts, name="folder:faces"):
    labels = np.concatenate([np.full(c, i) for i, c in enumerate(counts)])
    names = [f"person_{i}" for i in range(len(counts))]
    return Source(np.zeros((labels.size, 4, 4, 1), np.uint8), labels, name=name, class_names=names)


def test_class_split_of_ten_classes_raises_the_default_fractions():
    config = TrainConfig(split_by="class")
    fitted, notes = small_data.fit_split(config, source([6] * 10), adaptable=FRACTIONS)
    assert (fitted.calibration_fraction, fitted.test_fraction) == (0.2, 0.2)
    labels = source([6] * 10).labels
    splits = fitted.split(labels)
    sizes = [np.unique(labels[s]).size for s in (splits.train, splits.calibration, splits.test)]
    assert sizes == [6, 2, 2]
    assert notes == [
        "--calibration_fraction=0.2 --test_fraction=0.2 (split_by=class on 10 classes: "
        "6 / 2 / 2 for training / calibration / test; a held-out split needs 2)"
    ]
    # Set by the user: refused, with the split, the count and the values that fix it.
    with pytest.raises(InputError) as err:
        small_data.fit_split(config, source([6] * 10), adaptable=())
    assert "calibration split gets 1 of the 10 classes" in str(err.value)
    assert "set --calibration_fraction=0.2 --test_fraction=0.2" in str(err.value)
    # Data that already fits keeps the config as it is.
    assert small_data.fit_split(config, source([6] * 40), FRACTIONS) == (config, [])


def test_example_split_names_the_classes_too_small():
    config = TrainConfig()
    fitted, notes = small_data.fit_split(config, source([6] * 10), adaptable=FRACTIONS)
    assert fitted.calibration_fraction == 0.2 and "every class in each" in notes[0]
    with pytest.raises(InputError, match=r"examples of 'person_9': 1\)"):
        small_data.fit_split(config, source([20] * 9 + [1]), adaptable=FRACTIONS)
    with pytest.raises(InputError, match="needs 2 classes each for training"):
        small_data.fit_split(TrainConfig(split_by="class"), source([6] * 5), FRACTIONS)


def test_batch_fits_the_training_split():
    train = source([6] * 6)
    fitted, notes = small_data.fit_batch(TrainConfig(), train, adaptable=BATCH)
    assert (fitted.classes_per_batch, fitted.samples_per_class) == (6, 6)
    assert notes == [
        "--classes_per_batch=6 (the training split has 6 classes with 2+ examples)",
        "--samples_per_class=6 (the largest training class)",
    ]
    # Two replicas take whole groups: P becomes a multiple of 2.
    fitted, _ = small_data.fit_batch(TrainConfig(), source([6] * 5), BATCH, replicas=2)
    assert fitted.classes_per_batch == 4
    with pytest.raises(InputError, match="--classes_per_batch=10 exceeds the 6 classes.*=6$"):
        small_data.fit_batch(TrainConfig(samples_per_class=4), train, adaptable=())
    with pytest.raises(InputError, match="set --samples_per_class=6$"):
        small_data.fit_batch(TrainConfig(classes_per_batch=2), train, adaptable=())
    # Pair losses draw any number of pairs from 2+ classes; the replicas share them evenly.
    assert small_data.fit_batch(TrainConfig(loss="contrastive"), train, ())[1] == []
    pairs = TrainConfig(loss="bce", pairs_per_batch=7)
    with pytest.raises(InputError, match="=7 does not .* set --pairs_per_batch=6$"):
        small_data.fit_batch(pairs, train, (), replicas=2)
    fitted, notes = small_data.fit_batch(pairs, train, ("pairs_per_batch",), replicas=4)
    assert fitted.pairs_per_batch == 8 and notes == [
        "--pairs_per_batch=8 (a multiple of the 4 replicas)"
    ]


def test_one_class_and_single_example_classes_are_refused_by_name():
    with pytest.raises(InputError, match=r"holds 1 class \('person_0', 6 examples\).*sub-folder"):
        small_data.check_classes(source([6]))
    with pytest.raises(InputError, match="single example"):
        small_data.check_classes(source([1, 1, 1]))
    small_data.check_classes(source([2, 1]))
    with pytest.raises(InputError, match=r"the test split has 1 class \(1 with 2\+"):
        small_data.check_held_out("test", source([5]), TrainConfig())
