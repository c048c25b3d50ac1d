"""Fixed, balanced, seeded pair sets for calibration and test (host side, numpy)."""

from __future__ import annotations

import dataclasses

import numpy as np

from siamese_tf.data.class_index import ClassIndex
from siamese_tf.errors import InputError


@dataclasses.dataclass(frozen=True)
class PairSet:
    """Pairs of rows of one split: `same[i]` is 1 when rows `a[i]` and `b[i]` share a class."""

    a: np.ndarray
    b: np.ndarray
    same: np.ndarray

    def __len__(self) -> int:
        return int(self.same.size)


def fixed_pairs(labels, num_pairs: int, seed: int) -> PairSet:
    """Draws a balanced pair set once, with a numpy generator seeded by `seed`.

    Half the pairs (rounded down) are positive: two different rows of one class, the class chosen
    uniformly among classes with two or more rows. The rest are negative: two rows of two
    different classes, classes chosen uniformly. Drawing from classes (not rows) keeps large
    classes from dominating the threshold.

    Args:
      labels: integer labels [N] of the split.
      num_pairs: number of pairs (>= 2).
      seed: integer seed.

    Returns:
      A `PairSet` of row indices into `labels`.

    Raises:
      InputError: too few pairs, or a split without a positive or a negative pair.
    """
    if num_pairs < 2:
        raise InputError(f"a pair set needs at least 2 pairs, got {num_pairs}")
    index = ClassIndex.from_labels(labels)
    rng = np.random.default_rng(seed)
    multi = np.flatnonzero(index.counts >= 2)
    if multi.size == 0 or index.num_classes < 2:
        raise InputError(
            "the split needs a class with 2+ examples and at least 2 classes to form pairs"
        )
    n_pos = num_pairs // 2
    n_neg = num_pairs - n_pos
    pos_class = rng.choice(multi, n_pos)
    counts = index.counts[pos_class]
    off_a = rng.integers(0, counts)
    off_b = (off_a + 1 + rng.integers(0, counts - 1)) % counts
    neg_a = rng.integers(0, index.num_classes, n_neg)
    neg_b = (neg_a + 1 + rng.integers(0, index.num_classes - 1, n_neg)) % index.num_classes

    def rows(classes, offsets):
        return index.order[index.starts[classes] + offsets]

    a = np.concatenate([rows(pos_class, off_a), rows(neg_a, rng.integers(0, index.counts[neg_a]))])
    b = np.concatenate([rows(pos_class, off_b), rows(neg_b, rng.integers(0, index.counts[neg_b]))])
    same = np.concatenate([np.ones(n_pos, np.int64), np.zeros(n_neg, np.int64)])
    return PairSet(a, b, same)
