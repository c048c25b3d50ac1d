"""Verification reports of pair distances: metrics at a threshold, summaries, calibration.

A report is made at a given threshold (from a calibration split, never the test split);
`calibrate` is the epoch-end summary that picks one. Thresholds, rates and tie rules are those
of `siamese_tf.evaluation.roc` on the same threshold sweep (`siamese_tf.evaluation.sweep`).
Everything is numpy in, Python numbers out; nothing here imports TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn import metrics as sk_metrics

from siamese_tf.evaluation.roc import parse_threshold_rule
from siamese_tf.evaluation.sweep import ThresholdSweep, check_far, check_pairs
from siamese_tf.threshold import same


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
      ValueError: see `check_pairs`, or a NaN threshold.
    """
    d, s = check_pairs(distances, same)
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
      ValueError: see `check_pairs`.
    """
    return _distance_statistics(*check_pairs(distances, same))


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
      ValueError: see `check_pairs`, a NaN threshold or a FAR target outside [0, 1].
    """
    d, s = check_pairs(distances, same)
    threshold = _check_threshold(threshold)
    fars = [check_far(f) for f in far_targets]
    sw = ThresholdSweep.of(d, s)
    eer, eer_threshold = sw.equal_error_rate()
    report = {
        "auc": float(sk_metrics.roc_auc_score(s, -d)),  # larger score = more similar
        "eer": eer,
        "eer_threshold": eer_threshold,
    }
    report.update(_at_threshold(d, s, threshold))
    for far in fars:
        report[tar_at_far_key(far)] = sw.at_far(far)[1]
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
      ValueError: see `check_pairs`, or an unknown rule (an `InputError`).
    """
    parsed = parse_threshold_rule(rule)
    fars = [check_far(f) for f in far_targets]
    d, s = check_pairs(distances, same)
    sw = ThresholdSweep.of(d, s)
    eer, eer_threshold = sw.equal_error_rate()
    max_acc_threshold, max_acc = sw.max_accuracy()
    threshold = parsed.select(sw)
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
        summary[tar_at_far_key(far)] = sw.at_far(far)[1]
    return summary
