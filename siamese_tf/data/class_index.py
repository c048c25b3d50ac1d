"""The class index: labels grouped into contiguous per-class row ranges, built in one pass."""

from __future__ import annotations

import dataclasses

import numpy as np

from siamese_tf.errors import InputError


def as_int_labels(labels) -> np.ndarray:
    """Validates labels and returns them as int64 [N].

    Args:
      labels: array-like of shape [N] or [N, 1]; integers, or floats with integral values.

    Returns:
      int64 labels [N].

    Raises:
      InputError: a wrong shape, no labels at all, or non-integer labels (strings, fractions).
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise InputError(f"labels must have shape [N], got {labels.shape}")
    if labels.size == 0:
        raise InputError("the source is empty: no examples to sample from")
    if np.issubdtype(labels.dtype, np.integer):
        return labels.astype(np.int64, copy=False)
    if (
        np.issubdtype(labels.dtype, np.floating)
        and np.all(np.isfinite(labels))
        and np.all(np.mod(labels, 1) == 0)
    ):
        return labels.astype(np.int64)
    raise InputError(
        f"labels must be integers, got dtype {labels.dtype}; map class names to ids first"
    )


@dataclasses.dataclass(frozen=True)
class ClassIndex:
    """Rows grouped by class so a sampler can pick "example j of class c" with two lookups.

    Attributes:
      order: int64 [N]; `order[starts[c] + j]` is the source row of example j of class c.
      class_labels: [C] the label value of each class, in increasing order.
      starts: int64 [C]; first position of each class in `order`.
      counts: int64 [C]; number of examples of each class.
    """

    order: np.ndarray
    class_labels: np.ndarray
    starts: np.ndarray
    counts: np.ndarray

    @classmethod
    def from_labels(cls, labels) -> ClassIndex:
        """Builds the index from integer labels.

        Args:
          labels: integer array-like of shape [N] (or [N, 1]).

        Returns:
          The class index.

        Raises:
          InputError: empty or non-integer labels.
        """
        labels = as_int_labels(labels)
        # A stable sort keeps each class's examples in source order, so the index (and every batch
        # drawn from it) depends only on the data, not on the sort algorithm.
        order = np.argsort(labels, kind="stable").astype(np.int64)
        class_labels, starts, counts = np.unique(
            labels[order], return_index=True, return_counts=True
        )
        return cls(order, class_labels, starts.astype(np.int64), counts.astype(np.int64))

    @property
    def num_classes(self) -> int:
        """Number of distinct classes."""
        return int(self.class_labels.size)

    @property
    def num_examples(self) -> int:
        """Number of indexed examples."""
        return int(self.order.size)

    def single_example_classes(self) -> np.ndarray:
        """Labels of the classes with exactly one example (they can form no positive pair)."""
        return self.class_labels[self.counts == 1]
