"""Verification metrics of pair distances: ROC, EER, operating thresholds, bootstrap intervals.

Conventions shared by every function here:

- Inputs are DISTANCES (smaller = more similar) and `same` labels (1: the pair shares an
  identity, 0: it does not). A pair is predicted "same" when `distance <= threshold`.
- scikit-learn's ROC functions expect scores where larger means "more positive", so they are
  given `-distances`; their score thresholds `s` turn back into distance thresholds `-s`.
- Operating thresholds are chosen on a threshold sweep over the sorted distinct distances
  (`_sweep`): point `k` accepts exactly the `k` smallest distinct distances. Its threshold is
  the midpoint between the k-th and (k+1)-th distinct distance, because a threshold exactly on
  an observed distance sits on the edge of the decision and generalises worst to new pairs
  drawn near it; the midpoint is the largest margin to both. Every function returns the
  threshold of a sweep point, so `pair_classification_metrics` at that threshold reproduces
  the reported rates exactly.

Everything is numpy in, Python numbers out; nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from sklearn import metrics as sk_metrics

from siamese_tf.errors import InputError
from siamese_tf.threshold import same

THRESHOLD_RULES = ("eer", "max_accuracy", "youden", "far=<rate>")
BOOTSTRAP_STATISTICS = ("auc", "eer")

# Upper bound on the number of elements of one bootstrap work matrix (replicates × pairs), so
# memory stays bounded (~32 MiB per float64 matrix) however many pairs or resamples are asked for.
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


@dataclasses.dataclass(frozen=True)
class RocCurve:
    """A ROC curve over distance thresholds.

    Attributes:
      fpr: false acceptance rate at each threshold, increasing.
      tpr: true acceptance rate at each threshold, increasing.
      thresholds: distance thresholds, increasing (more pairs accepted); point `i` accepts the
        pairs with `distance <= thresholds[i]`. The first is `-inf` (accept nothing).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray

    @property
    def fnr(self) -> np.ndarray:
        """False rejection rate (1 - TPR) at each threshold."""
        return 1.0 - self.tpr


@dataclasses.dataclass(frozen=True)
class ThresholdRule:
    """A parsed threshold rule.

    Attributes:
      name: "eer", "max_accuracy", "youden" or "far".
      far: the target false acceptance rate when `name == "far"`, else None.
    """

    name: str
    far: float | None = None

    def __str__(self) -> str:
        return f"far={self.far:g}" if self.name == "far" else self.name


@dataclasses.dataclass(frozen=True)
class _Sweep:
    """Counts at every sweep point; point k accepts the k smallest distinct distances."""

    tp: np.ndarray  # int64 [U + 1]
    fp: np.ndarray  # int64 [U + 1]
    thresholds: np.ndarray  # float64 [U + 1], a distance threshold that accepts exactly point k
    values: np.ndarray  # float64 [U], the sorted distinct distances
    num_positive: int
    num_negative: int

    @property
    def num_pairs(self) -> int:
        return self.num_positive + self.num_negative


# --------------------------------------------------------------------------------------------
# Validation and the threshold sweep.


def _validate(distances, same) -> tuple[np.ndarray, np.ndarray]:
    """Checks and converts inputs to float64 distances and boolean `same`, both 1-D."""
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


def _midpoint(low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Midpoints strictly below `high` and not below `low` (for low < high, elementwise).

    Rounding can put (low + high) / 2 on `high` when the two are adjacent floats; then `low`
    is used, so the threshold still accepts `low` and rejects `high`.
    """
    mid = low + (high - low) / 2.0
    ok = (mid >= low) & (mid < high)
    return np.where(ok, mid, low)


def _sweep(d: np.ndarray, s: np.ndarray) -> _Sweep:
    """Cumulative TP/FP counts over the sorted distinct distances (see the module docstring)."""
    order = np.argsort(d, kind="stable")
    d_sorted, s_sorted = d[order], s[order]
    # Last position of each run of equal distances: ties are accepted or rejected together.
    last = np.flatnonzero(np.r_[d_sorted[1:] != d_sorted[:-1], True])
    values = d_sorted[last]
    tp = np.r_[0, np.cumsum(s_sorted)[last]].astype(np.int64)
    fp = np.r_[0, np.cumsum(~s_sorted)[last]].astype(np.int64)
    below_min = np.nextafter(values[0], -np.inf)  # accepts nothing; no neighbour to average
    thresholds = np.r_[below_min, _midpoint(values[:-1], values[1:]), values[-1]]
    return _Sweep(tp, fp, thresholds, values, int(s.sum()), int((~s).sum()))


def _prepare(distances, same) -> _Sweep:
    return _sweep(*_validate(distances, same))


# --------------------------------------------------------------------------------------------
# ROC, AUC and EER.


def roc_curve(distances, same, drop_intermediate: bool = True) -> RocCurve:
    """ROC curve of pair distances (scikit-learn's `roc_curve` on `-distances`).

    Args:
      distances: pair distances [n].
      same: 1 where the pair shares an identity, 0 where not [n].
      drop_intermediate: drop collinear points that do not change the curve's shape (as
        scikit-learn does by default); False keeps one point per distinct distance.

    Returns:
      A `RocCurve` with distance thresholds (`distance <= threshold` accepted), increasing.

    Raises:
      ValueError: empty input, mismatched shapes, NaN or infinite distances, labels other than
        0/1, or only one class present.
    """
    d, s = _validate(distances, same)
    # scikit-learn wants "larger score = more likely positive": negate the distances.
    fpr, tpr, score_thresholds = sk_metrics.roc_curve(s, -d, drop_intermediate=drop_intermediate)
    return RocCurve(fpr=fpr, tpr=tpr, thresholds=-score_thresholds)


def roc_auc(distances, same) -> float:
    """Area under the ROC curve (scikit-learn's `roc_auc_score` on `-distances`).

    Equals the probability that a random positive pair is closer than a random negative pair
    (ties count one half).

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].

    Returns:
      AUC in [0, 1].

    Raises:
      ValueError: see `roc_curve`.
    """
    d, s = _validate(distances, same)
    return float(sk_metrics.roc_auc_score(s, -d))  # larger score = more similar


def _eer_crossing(tp, fp, num_positive: int, num_negative: int):
    """EER of one or many sweeps (rows of `tp`, `fp`; first column 0, last column all pairs).

    `diff = P * N * (FPR - FNR)` is computed in exact integers; it starts at -P*N (accept
    nothing), ends at +P*N (accept all) and never decreases, so the first point with
    `diff >= 0` and its predecessor bracket the crossing. FPR and FNR are linearly interpolated
    between them; the EER is where they meet: fraction `t = -diff[i-1] / (diff[i] - diff[i-1])`
    of the way from point i-1 to point i.

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


def _equal_error_rate(sw: _Sweep) -> tuple[float, float]:
    eer, i, t, exact = _eer_crossing(sw.tp, sw.fp, sw.num_positive, sw.num_negative)
    eer, i, t = float(eer[0]), int(i[0]), float(t[0])
    if exact[0]:
        # FPR == FNR exactly at point i: every threshold from its distance up to the next
        # distinct distance attains it; the sweep threshold is the midpoint of that range.
        return eer, float(sw.thresholds[i])
    # Interpolate the distance threshold with the same fraction t between the distances of
    # points i-1 and i (point k accepts distance values[k-1]). Point 0 accepts nothing and has
    # no finite distance, so the smallest distance stands in for it.
    low = sw.values[max(i - 2, 0)]
    high = sw.values[i - 1]
    return eer, float(low + t * (high - low))


def equal_error_rate(distances, same) -> tuple[float, float]:
    """Equal error rate: where the false acceptance and false rejection rates are equal.

    The ROC points (one per distinct distance) are joined by straight lines; the EER is where
    the interpolated FPR and FNR (= 1 - TPR) curves cross, with the crossing located in exact
    integer arithmetic. The threshold is interpolated between the distances of the two ROC
    points bracketing the crossing with the same fraction. When FPR == FNR exactly at a ROC
    point (for instance perfectly separated classes, EER 0), every threshold from that point's
    distance up to the next larger distance attains it, and their midpoint is returned.

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].

    Returns:
      (eer, threshold): the EER in [0, 1] and its distance threshold.

    Raises:
      ValueError: see `roc_curve`.
    """
    return _equal_error_rate(_prepare(distances, same))


# --------------------------------------------------------------------------------------------
# Operating thresholds.


def _max_accuracy(sw: _Sweep) -> tuple[float, float]:
    correct = sw.tp + (sw.num_negative - sw.fp)
    k = int(np.argmax(correct))  # ties: the smallest threshold, i.e. the fewest acceptances
    return float(sw.thresholds[k]), float(correct[k] / sw.num_pairs)


def threshold_at_max_accuracy(distances, same) -> tuple[float, float]:
    """The threshold that classifies the most pairs correctly.

    Every distinct way of splitting the sorted distances is tried. The threshold returned lies
    at the midpoint between the largest accepted and the smallest rejected distance (see the
    module docstring), so it generalises better than an observed distance while giving exactly
    the same accuracy here. When several splits tie, the one accepting the fewest pairs wins.

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].

    Returns:
      (threshold, accuracy); `pair_classification_metrics(distances, same, threshold)` gives
      the same accuracy.

    Raises:
      ValueError: see `roc_curve`.
    """
    return _max_accuracy(_prepare(distances, same))


def _youden(sw: _Sweep) -> float:
    # J = TPR - FPR, compared as J * P * N in exact integers.
    j = sw.tp * sw.num_negative - sw.fp * sw.num_positive
    return float(sw.thresholds[int(np.argmax(j))])


def threshold_youden(distances, same) -> float:
    """The threshold maximising Youden's J statistic, TPR - FPR.

    Same sweep, midpoint thresholds and tie rule as `threshold_at_max_accuracy`; unlike
    accuracy, J does not depend on the ratio of positive to negative pairs.

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].

    Returns:
      The distance threshold.

    Raises:
      ValueError: see `roc_curve`.
    """
    return _youden(_prepare(distances, same))


def _check_far(far) -> float:
    try:
        far = float(far)
    except (TypeError, ValueError):
        raise ValueError(f"far must be a number in [0, 1], got {far!r}") from None
    if not 0.0 <= far <= 1.0:
        raise ValueError(f"far must be in [0, 1], got {far!r}")
    return far


def _at_far(sw: _Sweep, far: float) -> tuple[float, float]:
    # Compared as fp / N, the very expression `pair_classification_metrics` reports as "far",
    # so the FAR at the returned threshold never exceeds the target by rounding. tp never
    # decreases along the sweep, so the last allowed point has the largest TAR; among equal
    # TARs the first one has the lowest FAR.
    allowed = sw.fp / sw.num_negative <= far
    last_allowed = int(np.flatnonzero(allowed)[-1])  # point 0 (fp = 0) is always allowed
    k = int(np.searchsorted(sw.tp[: last_allowed + 1], sw.tp[last_allowed], side="left"))
    return float(sw.thresholds[k]), float(sw.tp[k] / sw.num_positive)


def threshold_at_far(distances, same, far: float) -> tuple[float, float]:
    """The threshold with the largest TAR whose FAR does not exceed `far`.

    Among thresholds with equal TAR the one with the lowest FAR is returned. With few negative
    pairs the achievable FAR values are coarse (multiples of 1 / num_negative); the TAR at a
    FAR below 1 / num_negative is the TAR at FAR 0.

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].
      far: the target false acceptance rate, in [0, 1].

    Returns:
      (threshold, tar).

    Raises:
      ValueError: see `roc_curve`, or `far` outside [0, 1].
    """
    far = _check_far(far)
    return _at_far(_prepare(distances, same), far)


def parse_threshold_rule(rule) -> ThresholdRule:
    """Parses and validates a threshold rule without data (for flag validation).

    Args:
      rule: "eer", "max_accuracy", "youden" or "far=<rate>" (e.g. "far=1e-3", rate in [0, 1]),
        or an already parsed `ThresholdRule`.

    Returns:
      The `ThresholdRule`.

    Raises:
      InputError (a ValueError): an unknown rule or a bad rate; the message lists the rules.
    """
    if isinstance(rule, ThresholdRule):
        return rule
    valid = ", ".join(repr(r) for r in THRESHOLD_RULES)
    if not isinstance(rule, str):
        raise InputError(f"threshold rule must be a string, one of {valid}; got {rule!r}")
    text = rule.strip().lower()
    if text in ("eer", "max_accuracy", "youden"):
        return ThresholdRule(text)
    if text.startswith("far="):
        value = text[len("far=") :]
        try:
            far = float(value)
        except ValueError:
            far = math.nan
        if not 0.0 <= far <= 1.0:  # also rejects NaN
            raise InputError(
                f"threshold rule {rule!r}: the FAR must be a number in [0, 1], e.g. 'far=1e-3'"
            )
        return ThresholdRule("far", far)
    raise InputError(f"unknown threshold rule {rule!r}; valid rules: {valid} (e.g. 'far=1e-3')")


def _select(sw: _Sweep, rule: ThresholdRule) -> float:
    if rule.name == "eer":
        return _equal_error_rate(sw)[1]
    if rule.name == "max_accuracy":
        return _max_accuracy(sw)[0]
    if rule.name == "youden":
        return _youden(sw)
    return _at_far(sw, rule.far)[0]


def select_threshold(distances, same, rule) -> float:
    """The distance threshold chosen by a rule.

    Args:
      distances: pair distances [n] (a calibration split, never the test split).
      same: 0/1 labels [n].
      rule: see `parse_threshold_rule`.

    Returns:
      The distance threshold.

    Raises:
      ValueError: bad input (see `roc_curve`) or an unknown rule (an `InputError`).
    """
    parsed = parse_threshold_rule(rule)
    return _select(_prepare(distances, same), parsed)


# --------------------------------------------------------------------------------------------
# Metrics at a threshold and summaries.


def _check_threshold(threshold) -> float:
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {threshold!r}") from None
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    return threshold


def _at_threshold(d: np.ndarray, s: np.ndarray, threshold: float) -> dict:
    accepted = same(d, threshold)
    tp = int(np.sum(accepted & s))
    fp = int(np.sum(accepted & ~s))
    fn = int(np.sum(~accepted & s))
    tn = int(np.sum(~accepted & ~s))
    precision = tp / (tp + fp) if tp + fp else 0.0  # nothing accepted: scikit-learn's 0
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": threshold,
        "accuracy": (tp + tn) / d.size,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "far": fp / (fp + tn),
        "tar": recall,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def pair_classification_metrics(distances, same, threshold: float) -> dict:
    """Classification metrics when pairs with `distance <= threshold` are called "same".

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].
      threshold: the distance threshold.

    Returns:
      {"threshold", "accuracy", "precision", "recall", "f1", "far", "tar"} as floats (recall is
      the TAR; precision and F1 are 0 when nothing is accepted) and {"tp", "fp", "tn", "fn"}
      as ints.

    Raises:
      ValueError: see `roc_curve`, or a NaN threshold.
    """
    d, s = _validate(distances, same)
    return _at_threshold(d, s, _check_threshold(threshold))


def _distance_statistics(d: np.ndarray, s: np.ndarray) -> dict:
    pos, neg = float(d[s].mean()), float(d[~s].mean())
    if pos != 0.0:
        ratio = neg / pos
    else:  # identical positives: no division, inf when the negatives are apart at all
        ratio = math.inf if neg > 0.0 else math.nan
    return {"mean_positive_distance": pos, "mean_negative_distance": neg, "distance_ratio": ratio}


def distance_statistics(distances, same) -> dict:
    """Mean positive and negative pair distance and their ratio (larger = better separated).

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].

    Returns:
      {"mean_positive_distance", "mean_negative_distance", "distance_ratio"}; the ratio is
      negative / positive, `inf` when the mean positive distance is 0 and the negative is not,
      NaN when both are 0.

    Raises:
      ValueError: see `roc_curve`.
    """
    return _distance_statistics(*_validate(distances, same))


def tar_at_far_key(far: float) -> str:
    """The report key of the TAR at a FAR target, e.g. 1e-2 -> "tar_at_far_0.01"."""
    return f"tar_at_far_{far:g}"


def verification_report(distances, same, threshold: float, far_targets=(1e-3, 1e-2, 1e-1)) -> dict:
    """The full verification report of a pair set at a given (calibrated) threshold.

    The threshold is required, not derived here, because a report is made on a test split and
    a threshold must come from a separate calibration split.

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].
      threshold: the distance threshold to classify at.
      far_targets: FAR targets whose best TAR is reported.

    Returns:
      A flat dict of Python numbers: "auc", "eer", "eer_threshold", the
      `pair_classification_metrics` at `threshold` ("threshold", "accuracy", "precision",
      "recall", "f1", "far", "tar", "tp", "fp", "tn", "fn"), `tar_at_far_key(far)` for each
      target (e.g. "tar_at_far_0.001"), the `distance_statistics`, "num_pairs",
      "num_positive" and "num_negative".

    Raises:
      ValueError: see `roc_curve`, a NaN threshold or a FAR target outside [0, 1].
    """
    d, s = _validate(distances, same)
    threshold = _check_threshold(threshold)
    fars = [_check_far(f) for f in far_targets]
    sw = _sweep(d, s)
    eer, eer_threshold = _equal_error_rate(sw)
    report = {
        "auc": float(sk_metrics.roc_auc_score(s, -d)),  # larger score = more similar
        "eer": eer,
        "eer_threshold": eer_threshold,
    }
    report.update(_at_threshold(d, s, threshold))
    for far in fars:
        report[tar_at_far_key(far)] = _at_far(sw, far)[1]
    report.update(_distance_statistics(d, s))
    report.update(
        num_pairs=sw.num_pairs, num_positive=sw.num_positive, num_negative=sw.num_negative
    )
    return report


def calibrate(distances, same, rule="eer", far_targets=(1e-2, 1e-3)) -> dict:
    """The epoch-end calibration summary of a calibration pair set.

    Args:
      distances: calibration pair distances [n].
      same: 0/1 labels [n].
      rule: the threshold rule (see `parse_threshold_rule`) that picks "threshold".
      far_targets: FAR targets whose best TAR is reported.

    Returns:
      A flat dict of floats (stable names, suitable as Keras log values): "auc", "eer",
      "eer_threshold", "max_accuracy_threshold", "max_accuracy", "threshold" (from `rule`),
      "accuracy" (at "threshold") and `tar_at_far_key(far)` for each target.

    Raises:
      ValueError: see `roc_curve`, or an unknown rule (an `InputError`).
    """
    parsed = parse_threshold_rule(rule)
    fars = [_check_far(f) for f in far_targets]
    d, s = _validate(distances, same)
    sw = _sweep(d, s)
    eer, eer_threshold = _equal_error_rate(sw)
    max_acc_threshold, max_acc = _max_accuracy(sw)
    threshold = _select(sw, parsed)
    summary = {
        "auc": float(sk_metrics.roc_auc_score(s, -d)),  # larger score = more similar
        "eer": eer,
        "eer_threshold": eer_threshold,
        "max_accuracy_threshold": max_acc_threshold,
        "max_accuracy": max_acc,
        "threshold": threshold,
        "accuracy": _at_threshold(d, s, threshold)["accuracy"],
    }
    for far in fars:
        summary[tar_at_far_key(far)] = _at_far(sw, far)[1]
    return summary


# --------------------------------------------------------------------------------------------
# Bootstrap confidence intervals.


def _resample_counts(rng: np.random.Generator, size: int, replicates: int) -> np.ndarray:
    """[replicates, size] int64: how often each item is drawn in `size` draws with replacement.

    Multinomial counts via uniform indices and one offset `bincount`, several times faster than
    `Generator.multinomial` with thousands of equal categories.
    """
    idx = rng.integers(0, size, size=(replicates, size))
    idx += np.arange(replicates)[:, None] * size
    return np.bincount(idx.ravel(), minlength=replicates * size).reshape(replicates, size)


def _bootstrap_auc(pos, neg, n_resamples, rng) -> np.ndarray:
    """AUC of stratified resamples, vectorised over replicates.

    A resample is a pair of count vectors (how often each positive / negative is
    drawn). With negatives sorted, the weighted number of negatives farther than a positive is
    read off the per-replicate cumulative counts at that positive's `searchsorted` positions.
    """
    neg = np.sort(neg)
    lo = np.searchsorted(neg, pos, side="left")
    hi = np.searchsorted(neg, pos, side="right")
    num_pos, num_neg = pos.size, neg.size
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // (num_pos + num_neg))
    out = []
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        w_neg = _resample_counts(rng, num_neg, b)
        w_pos = _resample_counts(rng, num_pos, b)
        cum = np.concatenate([np.zeros((b, 1), np.int64), np.cumsum(w_neg, axis=1)], axis=1)
        farther = num_neg - cum[:, hi]  # negatives with a larger distance than the positive
        tied = cum[:, hi] - cum[:, lo]
        out.append(np.sum(w_pos * (farther + 0.5 * tied), axis=1) / (num_pos * num_neg))
    return np.concatenate(out)


def _bootstrap_eer(d, s, n_resamples, rng) -> np.ndarray:
    """EER of stratified resamples: weighted sweeps, vectorised over replicates.

    The weighted TP (FP) count at a sweep point is the cumulative count of the positives
    (negatives) sorted at or before that point's last distance, read off per-replicate
    cumulative sums of the multinomial counts.
    """
    order = np.argsort(d, kind="stable")
    d_sorted, s_sorted = d[order], s[order]
    last = np.flatnonzero(np.r_[d_sorted[1:] != d_sorted[:-1], True])
    pos_upto = np.cumsum(s_sorted)[last]  # positives at or before each sweep point
    neg_upto = np.cumsum(~s_sorted)[last]
    num_pos, num_neg = int(s.sum()), int((~s).sum())
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // (num_pos + num_neg + last.size))
    out = []
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        w_pos = _resample_counts(rng, num_pos, b)
        w_neg = _resample_counts(rng, num_neg, b)
        zero = np.zeros((b, 1), np.int64)
        cum_pos = np.concatenate([zero, np.cumsum(w_pos, axis=1)], axis=1)
        cum_neg = np.concatenate([zero, np.cumsum(w_neg, axis=1)], axis=1)
        tp = np.concatenate([zero, cum_pos[:, pos_upto]], axis=1)
        fp = np.concatenate([zero, cum_neg[:, neg_upto]], axis=1)
        out.append(_eer_crossing(tp, fp, num_pos, num_neg)[0])
    return np.concatenate(out)


def bootstrap_ci(
    distances,
    same,
    statistic: str = "auc",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUC or the EER.

    Resampling is stratified: each replicate draws the positive pairs with replacement from the
    positives and the negatives from the negatives, so both classes keep their sizes (and are
    always present). Replicates are computed in vectorised chunks of bounded memory.

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].
      statistic: "auc" or "eer".
      n_resamples: number of bootstrap replicates.
      confidence: the interval's coverage, in (0, 1).
      seed: seed of the `numpy.random.Generator`; the same seed gives the same interval.

    Returns:
      (low, high): the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the
      replicates.

    Raises:
      ValueError: see `roc_curve`, an unknown statistic, n_resamples < 1 or a confidence
        outside (0, 1).
    """
    if statistic not in BOOTSTRAP_STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {BOOTSTRAP_STATISTICS}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    d, s = _validate(distances, same)
    rng = np.random.default_rng(seed)
    if statistic == "auc":
        values = _bootstrap_auc(d[s], d[~s], int(n_resamples), rng)
    else:
        values = _bootstrap_eer(d, s, int(n_resamples), rng)
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
