"""Seeded train / calibration / test splits: by example (closed set), by class (open set), or
by group (held-out groups of classes, e.g. whole alphabets: transfer to new domains)."""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.model_selection import train_test_split

from siamese_tf.errors import InputError

SPLIT_BY = ("example", "class", "group")


@dataclasses.dataclass(frozen=True)
class Splits:
    """Row indices of the three splits of one source."""

    train: np.ndarray
    calibration: np.ndarray
    test: np.ndarray

    def sizes(self) -> dict:
        """Number of rows per split, for config.json and logs."""
        return {
            "train": int(self.train.size),
            "calibration": int(self.calibration.size),
            "test": int(self.test.size),
        }


def split_indices(
    labels,
    *,
    calibration_fraction: float,
    test_fraction: float,
    seed: int,
    split_by: str = "example",
    groups=None,
) -> Splits:
    """Splits rows into train / calibration / test.

    `split_by="example"` stratifies by label, so every class appears in every split (closed set).
    `split_by="class"` assigns whole classes to splits, so calibration and test classes are never
    seen in training (the open-set protocol of verification and one-shot learning).
    `split_by="group"` assigns whole groups (`groups`, e.g. Omniglot's alphabets) to splits, so
    calibration and test classes come from groups training never sees: model selection then
    measures transfer to a new domain, not to new classes of known ones.

    Args:
      labels: integer labels [N].
      calibration_fraction: fraction of examples (or classes) for threshold calibration.
      test_fraction: fraction of examples (or classes) held out for the final report.
      seed: integer seed (a run passes its `split` sub-seed, `siamese_tf.seeds`).
      split_by: "example", "class" or "group".
      groups: integer group per row [N]; required by `split_by="group"`.

    Returns:
      The three sorted index arrays.

    Raises:
      InputError: fractions out of range, unknown `split_by`, no groups for a group split, or
        too few classes / examples / groups.
    """
    labels = np.asarray(labels).reshape(-1)
    for name, value in (
        ("calibration_fraction", calibration_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0.0 < value < 1.0:
            raise InputError(f"{name} must be in (0, 1), got {value}")
    if calibration_fraction + test_fraction >= 1.0:
        raise InputError(
            f"calibration_fraction + test_fraction must be < 1, got "
            f"{calibration_fraction} + {test_fraction}"
        )
    if split_by not in SPLIT_BY:
        raise InputError(f"split_by must be one of {SPLIT_BY}, got {split_by!r}")
    held_out = calibration_fraction + test_fraction
    test_share = test_fraction / held_out
    rows = np.arange(labels.size)
    units = {"example": None, "class": labels}.get(split_by)
    if split_by == "group":
        units = groups = _checked_groups(groups, labels)
    # One random stream for both draws (held out, then calibration vs test), consumed in order.
    stream = np.random.RandomState(seed)
    try:
        if split_by == "example":
            train, rest = train_test_split(
                rows, test_size=held_out, random_state=stream, stratify=labels
            )
            calibration, test = train_test_split(
                rest, test_size=test_share, random_state=stream, stratify=labels[rest]
            )
        else:
            values = np.unique(units)
            train_u, rest_u = train_test_split(values, test_size=held_out, random_state=stream)
            cal_u, test_u = train_test_split(rest_u, test_size=test_share, random_state=stream)
            train, calibration, test = (rows[np.isin(units, u)] for u in (train_u, cal_u, test_u))
    except ValueError:  # sklearn: a class too small to stratify, or too few classes.
        raise InputError(
            _split_failure(labels, groups, calibration_fraction, test_fraction, split_by)
        ) from None
    return Splits(np.sort(train), np.sort(calibration), np.sort(test))


def _split_failure(labels, groups, calibration_fraction, test_fraction, split_by) -> str:
    """Why `split_indices` could not split, in the user's terms (never scikit-learn's text)."""
    classes, counts = np.unique(labels, return_counts=True)
    fractions = f"calibration_fraction={calibration_fraction}, test_fraction={test_fraction}"
    if split_by == "group":
        return (
            f"cannot give the training, calibration and test splits a group each: the data has "
            f"{np.unique(groups).size} groups ({fractions}); split_by=group needs at least 3 "
            "groups, or use --split_by=class"
        )
    if split_by == "class":
        return (
            f"cannot give the training, calibration and test splits a class each: the data has "
            f"{classes.size} classes ({fractions}); split_by=class needs at least 6 classes "
            "(2 per split), or use --split_by=example"
        )
    smallest = np.argsort(counts, kind="stable")[:5]
    shown = ", ".join(f"label {classes[i]}: {counts[i]}" for i in smallest)
    return (
        f"cannot put every class in the training, calibration and test splits "
        f"(split_by=example, {fractions}): the smallest classes have too few examples "
        f"({shown}); remove the smallest classes, or use --split_by=class"
    )


def _checked_groups(groups, labels) -> np.ndarray:
    """The groups of a group split, checked: one per row, and every class in one group."""
    if groups is None:
        raise InputError(
            "split_by=group needs group labels, and this dataset has none (they come from "
            "nested class folders GROUP/CLASS/, or a TFDS 'group' / 'alphabet' feature); "
            "use --split_by=class"
        )
    groups = np.asarray(groups).reshape(-1)
    if groups.size != labels.size:
        raise InputError(f"{groups.size} group labels for {labels.size} examples")
    pairs = np.unique(np.stack([labels, groups]), axis=1)
    if pairs.shape[1] != np.unique(labels).size:
        raise InputError("split_by=group needs every class inside one group; some span several")
    return groups
