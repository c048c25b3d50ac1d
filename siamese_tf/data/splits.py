"""Seeded train / calibration / test splits, by example (closed set) or by class (open set)."""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.model_selection import train_test_split

from siamese_tf.errors import InputError

SPLIT_BY = ("example", "class")


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
) -> Splits:
    """Splits rows into train / calibration / test.

    `split_by="example"` stratifies by label, so every class appears in every split (closed set).
    `split_by="class"` assigns whole classes to splits, so calibration and test classes are never
    seen in training (the open-set protocol of verification and one-shot learning).

    Args:
      labels: integer labels [N].
      calibration_fraction: fraction of examples (or classes) for threshold calibration.
      test_fraction: fraction of examples (or classes) held out for the final report.
      seed: integer seed.
      split_by: "example" or "class".

    Returns:
      The three sorted index arrays.

    Raises:
      InputError: fractions out of range, unknown `split_by`, or too few classes / examples.
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
    try:
        if split_by == "example":
            train, rest = train_test_split(
                rows, test_size=held_out, random_state=seed, stratify=labels
            )
            calibration, test = train_test_split(
                rest, test_size=test_share, random_state=seed + 1, stratify=labels[rest]
            )
        else:
            classes = np.unique(labels)
            train_c, rest_c = train_test_split(classes, test_size=held_out, random_state=seed)
            cal_c, test_c = train_test_split(rest_c, test_size=test_share, random_state=seed + 1)
            train, calibration, test = (rows[np.isin(labels, c)] for c in (train_c, cal_c, test_c))
    except ValueError:  # sklearn: a class too small to stratify, or too few classes.
        raise InputError(
            _split_failure(labels, calibration_fraction, test_fraction, split_by)
        ) from None
    return Splits(np.sort(train), np.sort(calibration), np.sort(test))


def _split_failure(labels, calibration_fraction, test_fraction, split_by) -> str:
    """Why `split_indices` could not split, in the user's terms (never scikit-learn's text)."""
    classes, counts = np.unique(labels, return_counts=True)
    fractions = f"calibration_fraction={calibration_fraction}, test_fraction={test_fraction}"
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
