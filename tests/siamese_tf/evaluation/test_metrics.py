"""Verification metrics (`siamese_tf.evaluation` roc, reports, bootstrap): by hand, vs sklearn."""

import math
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT
from sklearn import metrics as sk_metrics

from siamese_tf import evaluation as m
from siamese_tf.errors import InputError
from siamese_tf.evaluation import bootstrap

# Hand example A: positives 0.1, 0.2, 0.5; negatives 0.4, 0.8, 0.9 (sorted: p p n p n n).
D_A = np.array([0.1, 0.2, 0.5, 0.4, 0.8, 0.9])
S_A = np.array([1, 1, 1, 0, 0, 0])


# What `calibrate` returns (ThresholdCalibration logs each with a `val_` prefix).
CALIBRATION_KEYS = (
    "auc eer eer_threshold max_accuracy_threshold max_accuracy threshold accuracy "
    "tar_at_far_0.01 tar_at_far_0.001"
)


def random_pairs(n=600, shift=1.0, seed=0, decimals=None):
    rng = np.random.default_rng(seed)
    same = rng.integers(0, 2, n)
    distances = np.abs(rng.normal(size=n) + (1 - same) * shift)
    if decimals is not None:  # many ties
        distances = np.round(distances, decimals)
    return distances, same


def candidate_thresholds(distances):
    """Every distinct decision: below all, each observed distance, and above all."""
    values = np.unique(distances)
    return np.r_[values[0] - 1.0, values, (values[:-1] + values[1:]) / 2, values[-1] + 1.0]


def test_auc_hand_example_and_ties_count_half():
    # Positive-negative pairs with the positive closer: 3 + 3 + 2 of 9.
    assert m.roc_auc(D_A, S_A) == pytest.approx(8 / 9)
    assert m.roc_auc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)


def test_eer_exact_crossing_and_interpolated_hand_examples():
    # Accepting d <= 0.4: FAR = 1/3 (0.4), FRR = 1/3 (0.5); holds up to 0.5 -> midpoint 0.45.
    eer, threshold = m.equal_error_rate(D_A, S_A)
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.45)
    rates = m.pair_classification_metrics(D_A, S_A, threshold)
    assert rates["far"] == pytest.approx(1 / 3) and 1 - rates["tar"] == pytest.approx(1 / 3)
    # Interpolated: positives 0.1, 0.3; negatives 0.2, 0.4, 0.5. ROC points around the crossing:
    # accept <= 0.2: FPR 1/3, FNR 1/2;  accept <= 0.3: FPR 1/3, FNR 0.
    # FPR - FNR goes -1/6 -> 1/3, crossing at t = 1/3: EER = 1/3, threshold 0.2 + 0.1 / 3.
    eer, threshold = m.equal_error_rate([0.1, 0.3, 0.2, 0.4, 0.5], [1, 1, 0, 0, 0])
    assert eer == pytest.approx(1 / 3)
    assert threshold == pytest.approx(0.2 + 0.1 / 3)


def test_perfect_separation():
    d, s = [0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]
    assert m.roc_auc(d, s) == 1.0
    assert m.equal_error_rate(d, s) == pytest.approx((0.0, 0.5))  # midpoint of the gap
    assert m.threshold_at_max_accuracy(d, s) == pytest.approx((0.5, 1.0))
    assert m.threshold_youden(d, s) == pytest.approx(0.5)
    assert m.threshold_at_far(d, s, 0.0) == pytest.approx((0.5, 1.0))


def test_eer_matches_interpolated_roc_on_random_data():
    d, s = random_pairs(seed=1)
    eer, threshold = m.equal_error_rate(d, s)
    fpr, tpr, _ = sk_metrics.roc_curve(s, -d, drop_intermediate=False)
    fnr = 1 - tpr
    i = np.flatnonzero(fpr - fnr >= 0)[0]
    t = (fnr[i - 1] - fpr[i - 1]) / ((fpr[i] - fpr[i - 1]) - (fnr[i] - fnr[i - 1]))
    assert eer == pytest.approx(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))
    rates = m.pair_classification_metrics(d, s, threshold)
    assert abs(rates["far"] - eer) < 0.02 and abs(1 - rates["tar"] - eer) < 0.02


@pytest.mark.parametrize("decimals", [None, 1])
def test_max_accuracy_is_exact_and_optimal(decimals):
    d, s = random_pairs(seed=2, decimals=decimals)
    threshold, accuracy = m.threshold_at_max_accuracy(d, s)
    assert m.pair_classification_metrics(d, s, threshold)["accuracy"] == accuracy
    best = max(np.mean((d <= t) == (s == 1)) for t in candidate_thresholds(d))
    assert accuracy == pytest.approx(best)
    # The midpoint rule: the threshold is strictly between observed distances.
    if decimals is None:
        assert threshold not in set(d.tolist())


def test_max_accuracy_hand_example_adjacent_floats_and_float32_input():
    # Accepting <= 0.2 and <= 0.5 both give 5/6; the one accepting fewer wins: midpoint
    # between 0.2 (accepted) and 0.4 (rejected).
    assert m.threshold_at_max_accuracy(D_A, S_A) == pytest.approx((0.3, 5 / 6))
    adjacent = [1.0, np.nextafter(1.0, 2.0)]
    threshold, accuracy = m.threshold_at_max_accuracy(adjacent, [1, 0])
    assert accuracy == 1.0
    assert m.pair_classification_metrics(adjacent, [1, 0], threshold)["accuracy"] == 1.0
    d, s = random_pairs(seed=3)
    d32 = d.astype(np.float32)
    threshold, accuracy = m.threshold_at_max_accuracy(d32, s)
    assert m.pair_classification_metrics(d32, s, threshold)["accuracy"] == accuracy


def test_youden_hand_example_and_optimality():
    assert m.threshold_youden(D_A, S_A) == pytest.approx(0.3)  # J = 2/3 at 0.3 and 0.65
    d, s = random_pairs(seed=4)
    threshold = m.threshold_youden(d, s)
    rates = m.pair_classification_metrics(d, s, threshold)
    best = max(np.mean(d[s == 1] <= t) - np.mean(d[s == 0] <= t) for t in candidate_thresholds(d))
    assert rates["tar"] - rates["far"] == pytest.approx(best)


def test_threshold_at_far_hand_example():
    assert m.threshold_at_far(D_A, S_A, 0.0) == pytest.approx((0.3, 2 / 3))
    assert m.threshold_at_far(D_A, S_A, 0.34) == pytest.approx((0.65, 1.0))
    assert m.threshold_at_far(D_A, S_A, 1.0)[1] == 1.0


@pytest.mark.parametrize("far", [0.0, 1e-3, 1e-2, 0.05, 0.1, 0.5])
def test_threshold_at_far_respects_target_and_is_best(far):
    d, s = random_pairs(seed=5, decimals=2)
    threshold, tar = m.threshold_at_far(d, s, far)
    rates = m.pair_classification_metrics(d, s, threshold)
    assert rates["far"] <= far
    assert rates["tar"] == tar
    best = max(
        np.mean(d[s == 1] <= t) for t in candidate_thresholds(d) if np.mean(d[s == 0] <= t) <= far
    )
    assert tar == pytest.approx(best)


def test_roc_curve_matches_sklearn_with_distance_thresholds():
    curve = m.roc_curve(D_A, S_A, drop_intermediate=False)
    assert curve.thresholds[0] == -np.inf
    np.testing.assert_allclose(curve.thresholds[1:], [0.1, 0.2, 0.4, 0.5, 0.8, 0.9])
    np.testing.assert_allclose(curve.fpr, [0, 0, 0, 1 / 3, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(curve.tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(curve.fnr, 1 - curve.tpr)
    # Each point's rates are those of accepting distance <= its threshold.
    for fpr, tpr, t in zip(curve.fpr[1:], curve.tpr[1:], curve.thresholds[1:], strict=True):
        rates = m.pair_classification_metrics(D_A, S_A, t)
        assert (rates["far"], rates["tar"]) == pytest.approx((fpr, tpr))


def test_auc_matches_sklearn_on_random_data():
    d, s = random_pairs(seed=6, decimals=1)
    assert m.roc_auc(d, s) == pytest.approx(sk_metrics.roc_auc_score(s, -d))
    curve = m.roc_curve(d, s)
    assert np.all(np.diff(curve.thresholds) > 0)
    assert sk_metrics.auc(curve.fpr, curve.tpr) == pytest.approx(m.roc_auc(d, s))


def test_pair_classification_metrics_hand_example():
    out = m.pair_classification_metrics(D_A, S_A, 0.45)  # accepts 0.1, 0.2, 0.4
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (2, 1, 2, 1)
    assert out["accuracy"] == pytest.approx(4 / 6)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == out["tar"] == pytest.approx(2 / 3)
    assert out["f1"] == pytest.approx(2 / 3)
    assert out["far"] == pytest.approx(1 / 3)
    nothing = m.pair_classification_metrics(D_A, S_A, 0.0)
    assert nothing["precision"] == 0.0 and nothing["f1"] == 0.0 and nothing["accuracy"] == 0.5


def test_pair_classification_metrics_match_sklearn():
    d, s = random_pairs(seed=7)
    out = m.pair_classification_metrics(d, s, 0.8)
    predicted = (d <= 0.8).astype(int)
    for name in ("accuracy", "precision", "recall", "f1"):
        sklearn_value = getattr(sk_metrics, f"{name}_score")(s, predicted)
        assert out[name] == pytest.approx(sklearn_value), name


def test_distance_statistics():
    out = m.distance_statistics(D_A, S_A)
    assert out["mean_positive_distance"] == pytest.approx(0.8 / 3)
    assert out["mean_negative_distance"] == pytest.approx(2.1 / 3)
    assert out["distance_ratio"] == pytest.approx(2.1 / 0.8)
    assert m.distance_statistics([0.0, 0.0, 1.0], [1, 1, 0])["distance_ratio"] == math.inf
    assert math.isnan(m.distance_statistics([0.0, 0.0], [1, 0])["distance_ratio"])


@pytest.mark.parametrize(
    "rule, expected",
    [("eer", 0.45), ("max_accuracy", 0.3), ("youden", 0.3), ("far=0", 0.3), ("far=0.5", 0.65)],
)
def test_select_threshold(rule, expected):
    assert m.select_threshold(D_A, S_A, rule) == pytest.approx(expected)


def test_parse_threshold_rule():
    assert m.parse_threshold_rule("eer") == m.ThresholdRule("eer")
    assert m.parse_threshold_rule(" Max_Accuracy ") == m.ThresholdRule("max_accuracy")
    rule = m.parse_threshold_rule("far=1e-3")
    assert rule == m.ThresholdRule("far", 1e-3) and str(rule) == "far=0.001"
    for bad in ["auc", "far=", "far=abc", "far=2", "far=-0.1", "far=nan", "", None]:
        with pytest.raises(ValueError) as err:
            m.parse_threshold_rule(bad)
        assert isinstance(err.value, InputError)  # launch turns it into one line, exit 2
    with pytest.raises(ValueError, match="valid rules: 'eer', 'max_accuracy', 'youden'"):
        m.select_threshold(D_A, S_A, "median")


def test_verification_report_keys_and_values():
    report = m.verification_report(D_A, S_A, threshold=0.45)
    expected_keys = (
        "auc eer eer_threshold threshold accuracy precision recall f1 far tar tp fp tn fn "
        "tar_at_far_0.001 tar_at_far_0.01 tar_at_far_0.1 mean_positive_distance "
        "mean_negative_distance distance_ratio num_pairs num_positive num_negative"
    )
    assert set(report) == set(expected_keys.split())
    assert report["auc"] == pytest.approx(8 / 9)
    assert (report["eer"], report["eer_threshold"]) == pytest.approx((1 / 3, 0.45))
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["tar_at_far_0.01"] == pytest.approx(2 / 3)
    assert (report["num_pairs"], report["num_positive"], report["num_negative"]) == (6, 3, 3)
    assert all(isinstance(v, int | float) for v in report.values())
    assert m.tar_at_far_key(1e-2) == "tar_at_far_0.01"


def test_calibrate_summary():
    summary = m.calibrate(D_A, S_A, rule="max_accuracy")
    assert set(summary) == set(CALIBRATION_KEYS.split())
    assert summary["threshold"] == summary["max_accuracy_threshold"] == pytest.approx(0.3)
    assert summary["accuracy"] == summary["max_accuracy"] == pytest.approx(5 / 6)
    assert all(isinstance(v, float) for v in summary.values())
    eer_summary = m.calibrate(D_A, S_A)
    assert eer_summary["threshold"] == eer_summary["eer_threshold"] == pytest.approx(0.45)
    assert eer_summary["accuracy"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("statistic", ["auc", "eer"])
def test_bootstrap_ci(statistic):
    d, s = random_pairs(n=400, seed=8)
    point = m.roc_auc(d, s) if statistic == "auc" else m.equal_error_rate(d, s)[0]
    low, high = m.bootstrap_ci(d, s, statistic, n_resamples=500, seed=3)
    assert 0.0 <= low < point < high <= 1.0
    assert high - low < 0.25
    assert m.bootstrap_ci(d, s, statistic, n_resamples=500, seed=3) == (low, high)
    assert m.bootstrap_ci(d, s, statistic, n_resamples=500, seed=4) != (low, high)
    narrow = m.bootstrap_ci(d, s, statistic, n_resamples=500, confidence=0.5, seed=3)
    assert low <= narrow[0] <= narrow[1] <= high


def test_bootstrap_replicates_match_direct_computation():
    # The vectorised replicate statistics equal those of explicitly resampled data sets.
    d, s = random_pairs(n=60, seed=9, decimals=1)
    s = s.astype(bool)
    pos, neg = d[s], d[~s]
    rng = np.random.default_rng(11)
    vectorised = bootstrap._bootstrap_auc(pos, neg, 5, rng)
    rng = np.random.default_rng(11)
    neg_sorted = np.sort(neg)
    all_neg = bootstrap._resample_counts(rng, neg.size, 5)
    all_pos = bootstrap._resample_counts(rng, pos.size, 5)
    for value, w_pos, w_neg in zip(vectorised, all_pos, all_neg, strict=True):
        rd = np.r_[np.repeat(pos, w_pos), np.repeat(neg_sorted, w_neg)]
        rs = np.r_[np.ones(pos.size), np.zeros(neg.size)]
        assert value == pytest.approx(m.roc_auc(rd, rs))

    rng = np.random.default_rng(12)
    vectorised = bootstrap._bootstrap_eer(d, s, 5, rng)
    rng = np.random.default_rng(12)
    order = np.argsort(d, kind="stable")
    pos_sorted, neg_sorted = d[order][s[order]], d[order][~s[order]]
    all_pos = bootstrap._resample_counts(rng, pos.size, 5)
    all_neg = bootstrap._resample_counts(rng, neg.size, 5)
    for value, w_pos, w_neg in zip(vectorised, all_pos, all_neg, strict=True):
        rd = np.r_[np.repeat(pos_sorted, w_pos), np.repeat(neg_sorted, w_neg)]
        rs = np.r_[np.ones(pos.size), np.zeros(neg.size)]
        assert value == pytest.approx(m.equal_error_rate(rd, rs)[0])


@pytest.mark.parametrize(
    "distances, same, message",
    [
        ([], [], "empty"),
        ([0.1, 0.2], [1, 0, 1], "same shape"),
        ([0.1, np.nan, 0.3], [1, 0, 1], "NaN"),
        ([0.1, np.inf], [1, 0], "infinite"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "only class 1"),
        ([0.1, 0.2], [0, 0], "only class 0"),
        ([0.1, 0.2], [1, 2], "only 0/1"),
        (["a", "b"], [1, 0], "numeric"),
    ],
)
def test_bad_input(distances, same, message):
    for fn in (m.roc_auc, m.equal_error_rate, m.threshold_at_max_accuracy, m.distance_statistics):
        with pytest.raises(ValueError, match=message):
            fn(distances, same)
    with pytest.raises(ValueError, match=message):
        m.verification_report(distances, same, 0.5)


def test_bad_parameters():
    with pytest.raises(ValueError, match="far must be in"):
        m.threshold_at_far(D_A, S_A, 1.5)
    with pytest.raises(ValueError, match="threshold is NaN"):
        m.pair_classification_metrics(D_A, S_A, float("nan"))
    with pytest.raises(ValueError, match="unknown statistic"):
        m.bootstrap_ci(D_A, S_A, "f1")
    with pytest.raises(ValueError, match="confidence"):
        m.bootstrap_ci(D_A, S_A, confidence=1.0)
    with pytest.raises(ValueError, match="n_resamples"):
        m.bootstrap_ci(D_A, S_A, n_resamples=0)


def test_evaluation_modules_do_not_import_tensorflow():
    # `import siamese_tf` registers the Keras classes (and so loads TensorFlow); the evaluation
    # modules themselves stay numpy + scikit-learn, so load them without the package __init__.
    folder = ROOT / "siamese_tf" / "evaluation"
    code = (
        "import sys, types\n"
        f"root = types.ModuleType('siamese_tf'); root.__path__ = [{str(folder.parent)!r}]\n"
        "sys.modules['siamese_tf'] = root\n"
        "import siamese_tf.evaluation.roc, siamese_tf.evaluation.reports\n"
        "import siamese_tf.evaluation.bootstrap, siamese_tf.evaluation.retrieval\n"
        "import siamese_tf.evaluation.oneshot\n"
        "import siamese_tf.evaluation.clustering\n"
        "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
