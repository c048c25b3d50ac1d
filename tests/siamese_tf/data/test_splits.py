"""Splits by example, class and group: seeded, disjoint where they promise, clear errors."""

import numpy as np
import pytest
from helpers import write_flat_pngs

from siamese_tf.data import load_source, open_stream, split_indices, write_store
from siamese_tf.errors import InputError

# 6 groups of 3 classes of 4 examples; class c is in group c // 3.
LABELS = np.repeat(np.arange(18), 4)
GROUPS = LABELS // 3


def test_group_split_holds_out_whole_groups():
    kwargs = dict(calibration_fraction=0.34, test_fraction=0.34, seed=3, split_by="group")
    splits = split_indices(LABELS, groups=GROUPS, **kwargs)
    seen = [set(GROUPS[rows]) for rows in (splits.train, splits.calibration, splits.test)]
    assert all(seen) and not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert sum(len(s) for s in seen) == 6
    # Whole groups: every class of a held-out group is held out with all its examples.
    every = np.concatenate([splits.train, splits.calibration, splits.test])
    np.testing.assert_array_equal(np.sort(every), np.arange(LABELS.size))
    again = split_indices(LABELS, groups=GROUPS, **kwargs)
    np.testing.assert_array_equal(again.test, splits.test)


def test_group_split_needs_groups_and_classes_inside_one_group():
    kwargs = dict(calibration_fraction=0.3, test_fraction=0.3, seed=0, split_by="group")
    with pytest.raises(InputError, match="has none .* --split_by=class"):
        split_indices(LABELS, **kwargs)
    mixed = GROUPS.copy()
    mixed[0] = 5
    with pytest.raises(InputError, match="every class inside one group"):
        split_indices(LABELS, groups=mixed, **kwargs)


def test_nested_class_folders_give_groups_through_memory_and_store(tmp_path):
    for group in ("Greek", "Latin"):
        write_flat_pngs(tmp_path / "img" / group, 2, 2, size=4, step=9, prefix="character")
    spec = f"folder:{tmp_path / 'img'}"
    loaded = load_source(spec)
    assert loaded.group_names == ("Greek", "Latin")
    np.testing.assert_array_equal(loaded.groups, [0, 0, 0, 0, 1, 1, 1, 1])
    assert loaded.class_names[2] == "Latin/character0"
    write_store(open_stream(spec), str(tmp_path / "store"))
    streamed = load_source(f"prepared:{tmp_path / 'store'}")
    np.testing.assert_array_equal(streamed.groups, loaded.groups)
    assert streamed.group_names == loaded.group_names
    np.testing.assert_array_equal(streamed.take([5, 1]).groups, [1, 0])
