"""Checked pair distances and their threshold sweep: what every verification metric builds on.

Conventions shared by `roc`, `reports` and `bootstrap`:

- Inputs are DISTANCES (smaller = more similar) and `same` labels (1: the pair shares an
  identity, 0: it does not). A pair is predicted "same" when `distance <= threshold`.
- scikit-learn's ROC functions expect scores where larger means "more positive", so they are
  given `-distances`; their score thresholds `s` turn back into distance thresholds `-s`.
- Operating thresholds are chosen on a threshold sweep over the sorted distinct distances
  (`ThresholdSweep`): point `k` accepts exactly the `k` smallest distinct distances. Its
  threshold is the midpoint between the k-th and (k+1)-th distinct distance, because a threshold
  exactly on an observed distance sits on the edge of the decision and generalises worst to new
  pairs drawn near it; the midpoint is the largest margin to both. Every function returns the
  threshold of a sweep point, so `pair_classification_metrics` at that threshold reproduces
  the reported rates exactly.

Everything is numpy in, Python numbers out; nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def check_pairs(distances, same) -> tuple[np.ndarray, np.ndarray]:
    """Checks pair distances and labels for the verification metrics.

    Args:
      distances: pair distances [n] (any shape; flattened).
      same: 0/1 or False/True labels of the same shape.

    Returns:
      `(d, s)`: float64 distances and boolean labels, both 1-D.

    Raises:
      ValueError: empty input, mismatched shapes, NaN or infinite distances, labels other than
        0/1, or only one class present.
    """
    try:
        d = np.asarray(distances, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"distances must be numeric: {err}") from None
    s = np.asarray(same)
    if d.shape != s.shape:
        raise ValueError(
            f"distances and same must have the same shape, got {d.shape} and {s.shape}"
        )
    d, s = d.reshape(-1), s.reshape(-1)
    if d.size == 0:
        raise ValueError("distances and same are empty; need at least one pair of each class")
    if np.isnan(d).any():
        raise ValueError(f"distances contain {int(np.isnan(d).sum())} NaN value(s)")
    if np.isinf(d).any():
        raise ValueError(f"distances contain {int(np.isinf(d).sum())} infinite value(s)")
    if s.dtype != bool:
        if not np.issubdtype(s.dtype, np.number) or not np.isin(s, (0, 1)).all():
            raise ValueError("same must contain only 0/1 (or False/True) labels")
        s = s.astype(bool)
    num_positive = int(s.sum())
    if num_positive == 0 or num_positive == s.size:
        present = "1 (same)" if num_positive else "0 (different)"
        raise ValueError(
            f"same contains only class {present} among {s.size} pairs; ROC metrics need both "
            "positive (same=1) and negative (same=0) pairs"
        )
    return d, s


def check_far(far) -> float:
    """A false acceptance rate target as a float in [0, 1].

    Raises:
      ValueError: not a number, or outside [0, 1].
    """
    try:
        far = float(far)
    except (TypeError, ValueError):
        raise ValueError(f"far must be a number in [0, 1], got {far!r}") from None
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far!r}")
    return far


def _midpoint(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Midpoints strictly below `high` and not below `low` (for low < high, elementwise).

    Rounding can put (low + high) / 2 on `high` when the two are adjacent floats; then `low`
    is used, so the threshold still accepts `low` and rejects `high`.
    """
    mid = low + (high - low) / 2.0
    ok = (mid >= low) & (mid < high)
    return np.where(ok, mid, low)


def eer_crossing(tp, fp, num_positive: int, num_negative: int):
    """EER of one or many sweeps (rows of `tp`, `fp`; first column 0, last column all pairs).

    `diff = P * N * (FPR - FNR)` is computed in exact integers; it starts at -P*N (accept
    nothing), ends at +P*N (accept all) and never decreases, so the first point with
    `diff >= 0` and its predecessor bracket the crossing. FPR and FNR are linearly interpolated
    between them; the EER is where they meet: fraction `t = -diff[i-1] / (diff[i] - diff[i-1])`
    of the way from point i-1 to point i.

    Args:
      tp: int [U + 1] or [R, U + 1] true acceptances at each sweep point (of R sweeps).
      fp: int, the same shape: false acceptances.
      num_positive: P, the number of positive pairs (of every sweep).
      num_negative: N, the number of negative pairs.

    Returns:
      (eer, i, t, exact) arrays over rows; `exact` where FPR == FNR at point i (then t == 1).
    """
    tp = np.atleast_2d(tp).astype(np.int64)
    fp = np.atleast_2d(fp).astype(np.int64)
    diff = fp * num_positive - (num_positive - tp) * num_negative
    rows = np.arange(diff.shape[0])
    i = np.argmax(diff >= 0, axis=1)  # >= 1, since diff[:, 0] < 0
    d0, d1 = diff[rows, i - 1], diff[rows, i]
    t = -d0 / (d1 - d0)
    fpr0, fpr1 = fp[rows, i - 1] / num_negative, fp[rows, i] / num_negative
    exact = d1 == 0
    eer = np.where(exact, fpr1, fpr0 + t * (fpr1 - fpr0))
    return eer, i, t, exact


@dataclasses.dataclass(frozen=True)
class ThresholdSweep:
    """Counts at every sweep point; point k accepts the k smallest distinct distances.

    Attributes:
      tp: int64 [U + 1] true acceptances at each point (U distinct distances).
      fp: int64 [U + 1] false acceptances at each point.
      thresholds: float64 [U + 1], a distance threshold that accepts exactly point k.
      values: float64 [U], the sorted distinct distances.
      num_positive: number of positive pairs.
      num_negative: number of negative pairs.
    """

    tp: np.ndarray
    fp: np.ndarray
    thresholds: np.ndarray
    values: np.ndarray
    num_positive: int
    num_negative: int

    @classmethod
    def of(cls, d: np.ndarray, s: np.ndarray) -> ThresholdSweep:
        """The sweep of checked pairs (`check_pairs`), with cumulative TP / FP counts."""
        order = np.argsort(d, kind="stable")
        d_sorted, s_sorted = d[order], s[order]
        # Last position of each run of equal distances: ties are accepted or rejected together.
        last = np.flatnonzero(np.r_[d_sorted[1:] != d_sorted[:-1], True])
        values = d_sorted[last]
        tp = np.r_[0, np.cumsum(s_sorted)[last]].astype(np.int64)
        fp = np.r_[0, np.cumsum(~s_sorted)[last]].astype(np.int64)
        below_min = np.nextafter(values[0], -np.inf)  # accepts nothing; no neighbour to average
        thresholds = np.r_[below_min, _midpoint(values[:-1], values[1:]), values[-1]]
        return cls(tp, fp, thresholds, values, int(s.sum()), int((~s).sum()))

    @property
    def num_pairs(self) -> int:
        return self.num_positive + self.num_negative

    def equal_error_rate(self) -> tuple[float, float]:
        """(eer, threshold); see `roc.equal_error_rate`."""
        eer, i, t, exact = eer_crossing(self.tp, self.fp, self.num_positive, self.num_negative)
        eer, i, t = float(eer[0]), int(i[0]), float(t[0])
        if exact[0]:
            # FPR == FNR exactly at point i: every threshold from its distance up to the next
            # distinct distance attains it; the sweep threshold is the midpoint of that range.
            return eer, float(self.thresholds[i])
        # Interpolate the distance threshold with the same fraction t between the distances of
        # points i-1 and i (point k accepts distance values[k-1]). Point 0 accepts nothing and
        # has no finite distance, so the smallest distance stands in for it.
        low = self.values[max(i - 2, 0)]
        high = self.values[i - 1]
        return eer, float(low + t * (high - low))

    def max_accuracy(self) -> tuple[float, float]:
        """(threshold, accuracy); see `roc.threshold_at_max_accuracy`."""
        correct = self.tp + (self.num_negative - self.fp)
        k = int(np.argmax(correct))  # ties: the smallest threshold, i.e. the fewest acceptances
        return float(self.thresholds[k]), float(correct[k] / self.num_pairs)

    def youden(self) -> float:
        """The threshold of the largest TPR - FPR; see `roc.threshold_youden`."""
        # J = TPR - FPR, compared as J * P * N in exact integers.
        j = self.tp * self.num_negative - self.fp * self.num_positive
        return float(self.thresholds[int(np.argmax(j))])

    def at_far(self, far: float) -> tuple[float, float]:
        """(threshold, tar) at a checked (`check_far`) FAR target; see `roc.threshold_at_far`."""
        # Compared as fp / N, the very expression `pair_classification_metrics` reports as
        # "far", so the FAR at the returned threshold never exceeds the target by rounding. tp
        # never decreases along the sweep, so the last allowed point has the largest TAR; among
        # equal TARs the first one has the lowest FAR.
        allowed = self.fp / self.num_negative <= far
        last_allowed = int(np.flatnonzero(allowed)[-1])  # point 0 (fp = 0) is always allowed
        k = int(np.searchsorted(self.tp[: last_allowed + 1], self.tp[last_allowed], side="left"))
        return float(self.thresholds[k]), float(self.tp[k] / self.num_positive)


def threshold_sweep(distances, same) -> ThresholdSweep:
    """Checks pairs (`check_pairs`) and returns their `ThresholdSweep`.

    Raises:
      ValueError: see `check_pairs`.
    """
    return ThresholdSweep.of(*check_pairs(distances, same))
