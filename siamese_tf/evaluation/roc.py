"""ROC curve, AUC, equal error rate and the operating thresholds of pair distances.

Thresholds are distances (`distance <= threshold` is "same") at the midpoints of the threshold
sweep (`siamese_tf.evaluation.sweep`, which states the conventions shared by every verification
metric). Everything is numpy in, Python numbers out; nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from sklearn import metrics as sk_metrics

from siamese_tf.errors import InputError
from siamese_tf.evaluation.sweep import ThresholdSweep, check_far, check_pairs, threshold_sweep

THRESHOLD_RULES = ("eer", "max_accuracy", "youden", "far=<rate>")


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

    def select(self, sweep: ThresholdSweep) -> float:
        """The distance threshold this rule picks on a threshold sweep."""
        if self.name == "eer":
            return sweep.equal_error_rate()[1]
        if self.name == "max_accuracy":
            return sweep.max_accuracy()[0]
        if self.name == "youden":
            return sweep.youden()
        return sweep.at_far(self.far)[0]


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
        0/1, or only one class present (`check_pairs`).
    """
    d, s = check_pairs(distances, same)
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
    d, s = check_pairs(distances, same)
    return float(sk_metrics.roc_auc_score(s, -d))  # larger score = more similar


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
    return threshold_sweep(distances, same).equal_error_rate()


def threshold_at_max_accuracy(distances, same) -> tuple[float, float]:
    """The threshold that classifies the most pairs correctly.

    Every distinct way of splitting the sorted distances is tried. The threshold returned lies
    at the midpoint between the largest accepted and the smallest rejected distance (see
    `siamese_tf.evaluation.sweep`), so it generalises better than an observed distance while
    giving exactly the same accuracy here. When several splits tie, the one accepting the fewest
    pairs wins.

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].

    Returns:
      (threshold, accuracy); `pair_classification_metrics(distances, same, threshold)` gives
      the same accuracy.

    Raises:
      ValueError: see `roc_curve`.
    """
    return threshold_sweep(distances, same).max_accuracy()


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
    return threshold_sweep(distances, same).youden()


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
    far = check_far(far)
    return threshold_sweep(distances, same).at_far(far)


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
    return parsed.select(threshold_sweep(distances, same))
