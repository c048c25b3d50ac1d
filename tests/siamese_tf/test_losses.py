"""Losses and mining: agreement with TFA's formulation, degenerate batches, gradients, replicas."""

import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tfa_reference as tfa
from helpers import check_anchor_halves, value_and_grad
from helpers import unit_rows as _unit

from siamese_tf import losses, mining
from siamese_tf.distances import pairwise_distances

METRICS = ("L2", "squared-L2", "angular")
TOL = 1e-5


@pytest.fixture(params=["loop", "buckets"])
def mining_path(request, monkeypatch):
    """Runs a test through both mining code paths (per-query loop and sorted buckets)."""
    _use_path(monkeypatch, request.param)
    return request.param


def _use_path(monkeypatch, path):
    if path == "buckets":
        monkeypatch.setattr(mining, "LOOP_QUERIES_MAX", 0)


# Every metric through the per-query loop, two through the bucket path (the metric and the
# path are independent; this keeps the file fast).
METRIC_PATHS = [
    ("L2", "loop"),
    ("squared-L2", "loop"),
    ("angular", "loop"),
    ("L2", "buckets"),
    ("angular", "buckets"),
]


def _batches():
    """(name, labels, embeddings) batches on which TFA's losses are finite."""
    rng = np.random.default_rng(7)
    pk = np.repeat(np.arange(6), 4)
    singles = np.array([0, 0, 0, 1, 2, 3, 3, 4, 5, 6, 6, 6, 7, 8])
    # Exactly representable duplicates: every distance is exactly 0 in both implementations.
    dup = np.tile(np.array([[0.5, -0.25, 0.75, 0.125]], np.float32), (10, 1))
    return [
        ("random", rng.integers(0, 5, 24), _unit(rng, 24)),
        ("pxk", pk, _unit(rng, 24)),
        ("pxk_labels_b1", pk[:, None], _unit(rng, 24)),
        ("float_labels", pk.astype(np.float32), _unit(rng, 24)),
        ("int64_labels", pk.astype(np.int64), _unit(rng, 24)),
        ("single_example_classes", singles, _unit(rng, len(singles))),
        ("one_class", np.zeros(9, np.int32), _unit(rng, 9)),
        ("duplicates", np.repeat(np.arange(5), 2), dup),
        ("big_classes", rng.integers(0, 2, 30), _unit(rng, 30)),
        ("unnormalised", rng.integers(0, 4, 20), rng.normal(size=(20, 5)).astype(np.float32) * 3),
    ]


BATCHES = _batches()
BATCH_IDS = [b[0] for b in BATCHES]


@pytest.mark.parametrize("metric,path", METRIC_PATHS)
@pytest.mark.parametrize("name,labels,emb", BATCHES, ids=BATCH_IDS)
def test_semihard_matches_tfa(monkeypatch, metric, path, name, labels, emb):
    _use_path(monkeypatch, path)
    ours = losses.triplet_semihard_loss(labels, emb, margin=1.0, distance_metric=metric)
    ref = tfa.triplet_semihard_loss(labels, emb, margin=1.0, distance_metric=metric)
    assert ours.dtype == tf.float32
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("name,labels,emb", BATCHES, ids=BATCH_IDS)
def test_hard_matches_tfa(metric, name, labels, emb):
    for soft in (False, True):
        ours = losses.triplet_hard_loss(labels, emb, margin=0.5, soft=soft, distance_metric=metric)
        ref = tfa.triplet_hard_loss(labels, emb, margin=0.5, soft=soft, distance_metric=metric)
        if soft and not np.isfinite(ref.numpy()):
            # TFA's log1p(exp(x)) overflows for gaps above ~88 (large squared distances); our
            # softplus stays finite: a documented deviation.
            assert np.isfinite(ours.numpy()) and ours.numpy() > 88
            continue
        np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=TOL, atol=TOL)


def test_hard_matches_tfa_without_positive_pair():
    # TFA's hard loss is finite here (hardest positive = row minimum = 0); so is ours.
    rng = np.random.default_rng(1)
    labels, emb = np.arange(8), _unit(rng, 8)
    ours = losses.triplet_hard_loss(labels, emb)
    np.testing.assert_allclose(ours, tfa.triplet_hard_loss(labels, emb), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("loss,margin", [("semihard", 0.2), ("semihard", 1.0), ("hard", 1.0)])
def test_gradient_matches_tfa(mining_path, loss, margin):
    rng = np.random.default_rng(3 if loss == "semihard" else 4)
    if loss == "semihard":
        labels, emb = np.repeat(np.arange(5), 4), _unit(rng, 20)
    else:
        labels, emb = rng.integers(0, 4, 16), _unit(rng, 16)
    fns = [getattr(module, f"triplet_{loss}_loss") for module in (losses, tfa)]
    grads = [value_and_grad(lambda e, f=f: f(labels, e, margin=margin), emb)[1] for f in fns]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)


# Hand-computed batch, L2, margin 1 (points in 2-D):
#   0: (0, 0) class 0    1: (1, 0) class 0    2: (0, 2) class 1    3: (0, 0.5) class 1
#   d01 = 1, d02 = 2, d03 = 0.5, d12 = sqrt(5), d13 = sqrt(1.25) = sqrt(5)/2, d23 = 1.5.
HAND_LABELS = np.array([0, 0, 1, 1])
HAND_EMB = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [0.0, 0.5]], np.float32)
S5 = math.sqrt(5.0)


def test_semihard_hand_computed(mining_path):
    # (0,1): d=1, negatives {2: 2, 3: 0.5}; closest farther than 1 is 2 -> max(1 + 1 - 2, 0) = 0
    #        (semi-hard skips the hardest negative 3).
    # (1,0): d=1, negatives {2: sqrt5, 3: sqrt5/2 = 1.118} -> 1.118 -> 1 + 1 - sqrt5/2.
    # (2,3): d=1.5, negatives {0: 2, 1: sqrt5} -> 2 -> 1 + 1.5 - 2 = 0.5.
    # (3,2): d=1.5, negatives {0: 0.5, 1: 1.118}: none farther -> farthest 1.118
    #        -> 1 + 1.5 - sqrt5/2.
    # Mean over the 4 positive pairs: (5 - sqrt5) / 4 = 0.690983.
    expected = (5.0 - S5) / 4.0
    value = losses.triplet_semihard_loss(HAND_LABELS, HAND_EMB)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    pdist = pairwise_distances(HAND_EMB)
    chosen = mining.semihard_negative_distances(pdist, HAND_LABELS)
    # Row a, column p: the semi-hard negative of pair (a, p) (as TFA's semi_hard_negatives).
    np.testing.assert_allclose(chosen.numpy()[[0, 1, 2, 3], [1, 0, 3, 2]], [2, S5 / 2, 2, S5 / 2])


def test_hard_and_batch_all_hand_computed(mining_path):
    # Hard: per anchor max(hp - hn + 1, 0): 0: 1 - 0.5 + 1; 1: 1 - sqrt5/2 + 1; 2: 1.5 - 2 + 1;
    # 3: 1.5 - 0.5 + 1 -> mean (6 - sqrt5/2) / 4.
    hard = losses.triplet_hard_loss(HAND_LABELS, HAND_EMB)
    np.testing.assert_allclose(hard, (6.0 - S5 / 2) / 4.0, rtol=1e-6)
    # Batch-all: active triplets (d_ap - d_an + 1 > 0): (0,1,3) 1.5; (1,0,3) 2 - sqrt5/2;
    # (2,3,0) 0.5; (2,3,1) 2.5 - sqrt5; (3,2,0) 2; (3,2,1) 2.5 - sqrt5/2. Inactive: (0,1,2) = 0,
    # (1,0,2) < 0. Sum 11 - 2 sqrt5 over 6 active of 8 valid triplets.
    batch_all = losses.triplet_batch_all_loss(HAND_LABELS, HAND_EMB)
    np.testing.assert_allclose(batch_all, (11.0 - 2 * S5) / 6.0, rtol=1e-6)
    stats = mining.batch_statistics(HAND_LABELS, HAND_EMB, margin=1.0)
    np.testing.assert_allclose(stats["active_triplet_fraction"], 0.75, rtol=1e-6)
    np.testing.assert_allclose(stats["mean_positive_distance"], 1.25, rtol=1e-6)
    # Negative pairs (a, n): 2, 0.5, sqrt5, sqrt5/2, 2, sqrt5, 0.5, sqrt5/2 -> (5 + 3 sqrt5) / 8.
    np.testing.assert_allclose(stats["mean_negative_distance"], (5 + 3 * S5) / 8, rtol=1e-6)


# --- brute force references for what TFA does not have ---------------------------------------


def _brute_batch_all(labels, emb, margin, soft, metric):
    """Every triplet enumerated as a [B, B, B] array: (loss, active fraction)."""
    d = pairwise_distances(emb, metric).numpy().astype(np.float64)
    labels = np.reshape(labels, [-1])
    same = labels[:, None] == labels[None, :]
    positive = same & ~np.eye(len(labels), dtype=bool)
    valid = positive[:, :, None] & ~same[:, None, :]
    x = d[:, :, None] - d[:, None, :]  # x[a, p, n] = d(a, p) - d(a, n)
    active = valid & (x + margin > 0)
    fraction = active.sum() / valid.sum() if valid.any() else 0.0
    if soft:
        terms, counted = np.logaddexp(0.0, x), valid
    else:
        terms, counted = x + margin, active
    loss = terms[counted].sum() / counted.sum() if counted.any() else 0.0
    return loss, fraction


@pytest.mark.parametrize("metric,path", METRIC_PATHS)
@pytest.mark.parametrize("name,labels,emb", BATCHES, ids=BATCH_IDS)
def test_batch_all_matches_brute_force(monkeypatch, metric, path, name, labels, emb):
    _use_path(monkeypatch, path)
    for soft in (False, True):
        expected, fraction = _brute_batch_all(labels, emb, 0.3, soft, metric)
        value = losses.triplet_batch_all_loss(labels, emb, 0.3, soft, metric)
        np.testing.assert_allclose(value, expected, rtol=TOL, atol=TOL)
    stats = mining.batch_statistics(labels, emb, 0.3, metric)
    np.testing.assert_allclose(stats["active_triplet_fraction"], fraction, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("soft", [False, True])
def test_batch_all_gradient_matches_dense_formulation(mining_path, soft):
    rng = np.random.default_rng(5)
    labels, emb = rng.integers(0, 3, 14), _unit(rng, 14)

    def dense(emb):  # O(B³) formulation, differentiated by TensorFlow
        d = pairwise_distances(emb)
        same = labels[:, None] == labels[None, :]
        pos = tf.constant(same & ~np.eye(len(labels), dtype=bool), tf.float32)
        neg = tf.constant(~same, tf.float32)
        x = d[:, :, None] - d[:, None, :]
        mask = pos[:, :, None] * neg[:, None, :]
        if soft:
            return tf.reduce_sum(mask * tf.nn.softplus(x)) / tf.reduce_sum(mask)
        act = mask * tf.cast(x + 0.3 > 0, tf.float32)
        return tf.reduce_sum(act * (x + 0.3)) / tf.reduce_sum(act)

    ours = lambda e: losses.triplet_batch_all_loss(labels, e, 0.3, soft)
    grads = [value_and_grad(fn, emb) for fn in (ours, dense)]
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=TOL)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-6)


def _brute_semihard_matrix(d, labels):
    out = np.zeros_like(d)
    for a in range(len(labels)):
        negs = d[a][labels != labels[a]]
        for j in range(len(labels)):
            farther = negs[negs > d[a, j]]
            if farther.size:
                out[a, j] = farther.min()
            elif negs.size:
                out[a, j] = negs.max()
            else:
                out[a, j] = d[a].min()
    return out


def test_semihard_negative_distances_matrix(mining_path):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 4, 18)
    pdist = pairwise_distances(_unit(rng, 18))
    ours = mining.semihard_negative_distances(pdist, labels).numpy()
    np.testing.assert_allclose(ours, _brute_semihard_matrix(pdist.numpy(), labels), rtol=1e-6)


def test_mask_level_mining_api_matches_brute_force(mining_path):
    # The building blocks the triplet losses mine with, on masks they built once.
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 4, 18)
    pdist = pairwise_distances(_unit(rng, 18))
    d = pdist.numpy()
    negative = mining.negative_mask(labels)
    columns, valid = mining.positive_slots(labels)
    positive_d = mining.gather_rows(pdist, columns)
    cols, ok = columns.numpy(), valid.numpy()
    chosen = mining.masked_semihard_negative_distances(pdist, negative, positive_d, valid)
    brute = np.take_along_axis(_brute_semihard_matrix(d, labels), cols, axis=1)
    np.testing.assert_allclose(chosen.numpy()[ok], brute[ok], rtol=1e-6)

    neg = labels[:, None] != labels[None, :]
    rows = np.arange(len(labels))
    nearest = mining.masked_row_argmin(pdist, negative).numpy()
    farthest = mining.masked_row_argmin(pdist, negative, largest=True).numpy()
    assert nearest.shape == (len(labels), 1)
    np.testing.assert_array_equal(d[rows, nearest[:, 0]], np.where(neg, d, np.inf).min(axis=1))
    np.testing.assert_array_equal(d[rows, farthest[:, 0]], np.where(neg, d, -np.inf).max(axis=1))

    keys = mining.margin_keys(positive_d, valid, 0.3)
    active, counts = mining.margin_counts(tf.stop_gradient(pdist), negative, keys)
    positive_np = np.take_along_axis(d, cols, axis=1)
    # hit[a, k, n]: triplet (a, k-th positive, n) is active.
    hit = ok[:, :, None] & neg[:, None, :] & (d[:, None, :] < positive_np[:, :, None] + 0.3)
    np.testing.assert_array_equal(active.numpy(), hit.sum(axis=1))
    np.testing.assert_array_equal(counts.numpy()[ok], hit.sum(axis=2)[ok])


# --- degenerate batches: defined value, zero gradient, never NaN -------------------------------


ALL_LOSSES = {
    "semihard": lambda y, e, m: losses.triplet_semihard_loss(y, e, distance_metric=m),
    "hard": lambda y, e, m: losses.triplet_hard_loss(y, e, distance_metric=m),
    "hard_soft": lambda y, e, m: losses.triplet_hard_loss(y, e, soft=True, distance_metric=m),
    "batch_all": lambda y, e, m: losses.triplet_batch_all_loss(y, e, distance_metric=m),
    "batch_all_soft": lambda y, e, m: losses.triplet_batch_all_loss(
        y, e, soft=True, distance_metric=m
    ),
}


@pytest.mark.parametrize("missing", ["positive", "negative"])
@pytest.mark.parametrize("metric,path", METRIC_PATHS)
@pytest.mark.parametrize("loss_name", list(ALL_LOSSES))
def test_no_positive_pair_or_no_negative(monkeypatch, loss_name, metric, path, missing):
    _use_path(monkeypatch, path)
    if missing == "positive":
        labels, emb = np.arange(6), _unit(np.random.default_rng(8), 6)
    else:
        labels, emb = np.full(7, 3), _unit(np.random.default_rng(9), 7)
    value, grad = value_and_grad(lambda e: ALL_LOSSES[loss_name](labels, e, metric), emb)
    assert np.isfinite(value)
    np.testing.assert_array_equal(grad, 0.0)
    ref = tfa.triplet_semihard_loss(labels, emb, distance_metric=metric).numpy()
    if loss_name == "semihard" and missing == "positive":  # TFA is NaN here, ours 0
        assert np.isnan(ref) and value == 0.0
    elif loss_name == "semihard":  # TFA is finite here: same value
        np.testing.assert_allclose(value, ref, rtol=TOL, atol=TOL)
    if loss_name.startswith("batch_all"):
        assert value == 0.0


@pytest.mark.parametrize("loss_name", list(ALL_LOSSES))
def test_single_example_and_empty_batches(loss_name):
    for labels, emb in (([4], np.ones((1, 3), np.float32)), ([], np.zeros((0, 3), np.float32))):
        value, grad = value_and_grad(lambda e, y=labels: ALL_LOSSES[loss_name](y, e, "L2"), emb)
        assert np.isfinite(value) and np.all(grad == 0.0)


@pytest.mark.parametrize("metric,path", METRIC_PATHS)
@pytest.mark.parametrize("loss_name", list(ALL_LOSSES))
def test_finite_gradients_with_duplicate_embeddings(monkeypatch, loss_name, metric, path):
    _use_path(monkeypatch, path)
    rng = np.random.default_rng(10)
    base = _unit(rng, 4)
    emb = np.concatenate([base, base, base[:2]])  # random-valued exact duplicates
    labels = np.array([0, 0, 1, 1, 0, 1, 1, 2, 0, 0])
    value, grad = value_and_grad(lambda e: ALL_LOSSES[loss_name](labels, e, metric), emb)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("loss_name", list(ALL_LOSSES))
def test_half_precision_embeddings_are_mined_in_float32(loss_name, dtype):
    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(4), 3)
    half = tf.cast(_unit(rng, 12), dtype)
    value = ALL_LOSSES[loss_name](labels, half, "L2")
    assert value.dtype == tf.float32
    expected = ALL_LOSSES[loss_name](labels, tf.cast(half, tf.float32), "L2")
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    if loss_name == "semihard":
        ref = tfa.triplet_semihard_loss(labels, half)
        np.testing.assert_allclose(value, tf.cast(ref, tf.float32), rtol=1e-2)


def test_callable_distance_metric():
    rng = np.random.default_rng(12)
    labels, emb = np.repeat(np.arange(3), 4), _unit(rng, 12)

    def one_minus_dot(batch):
        return 1.0 - tf.matmul(batch, batch, transpose_b=True)

    ours = losses.triplet_semihard_loss(labels, emb, distance_metric=one_minus_dot)
    ref = tfa.triplet_semihard_loss(labels, emb, distance_metric=one_minus_dot)
    np.testing.assert_allclose(ours, ref, rtol=TOL, atol=TOL)


# --- anchor subsets (cross-replica mining) -----------------------------------------------------

TERMS = {
    "semihard": lambda y, e, idx: losses.semihard_loss_terms(y, e, 0.5, anchor_indices=idx),
    "hard": lambda y, e, idx: losses.hard_loss_terms(y, e, 0.5, anchor_indices=idx),
    "batch_all": lambda y, e, idx: losses.batch_all_loss_terms(y, e, 0.5, anchor_indices=idx),
    "batch_all_soft": lambda y, e, idx: losses.batch_all_loss_terms(
        y, e, soft=True, anchor_indices=idx
    ),
}


@pytest.mark.parametrize("name", list(TERMS))
def test_anchor_halves_reproduce_full_batch(mining_path, name):
    rng = np.random.default_rng(13)
    labels = np.repeat(np.arange(5), 4)[rng.permutation(20)]
    emb = tf.constant(_unit(rng, 20))
    check_anchor_halves(lambda e, idx: TERMS[name](labels, e, idx), emb)
    stats_full = mining.batch_statistics_terms(labels, pairwise_distances(emb), 0.5)
    parts = [
        mining.batch_statistics_terms(
            labels,
            pairwise_distances(emb, anchor_indices=tf.range(lo, lo + 10)),
            0.5,
            anchor_indices=tf.range(lo, lo + 10),
        )
        for lo in (0, 10)
    ]
    for key, value in stats_full.items():
        np.testing.assert_allclose(parts[0][key] + parts[1][key], value, rtol=TOL)


# --- Keras loss classes -------------------------------------------------------------------------

CLASSES = [
    (losses.TripletSemiHardLoss, {"margin": 0.5, "distance_metric": "angular"}),
    (losses.TripletHardLoss, {"margin": 0.3, "soft": True, "distance_metric": "squared-L2"}),
    (losses.TripletBatchAllLoss, {"margin": 0.2}),
]


@pytest.mark.parametrize("cls,kwargs", CLASSES)
def test_loss_class_values_and_config(cls, kwargs):
    rng = np.random.default_rng(14)
    labels, emb = np.repeat(np.arange(4), 3), _unit(rng, 12)
    loss = cls(**kwargs)
    functional = {
        losses.TripletSemiHardLoss: losses.triplet_semihard_loss,
        losses.TripletHardLoss: losses.triplet_hard_loss,
        losses.TripletBatchAllLoss: losses.triplet_batch_all_loss,
    }[cls]
    expected = functional(labels, emb, **kwargs)
    np.testing.assert_allclose(loss(y_true=labels, y_pred=emb), expected, rtol=1e-6)
    np.testing.assert_allclose(loss(labels[:, None], emb), expected, rtol=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls and restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(labels, emb), expected, rtol=1e-6)
    with pytest.raises(ValueError, match="sample_weight"):
        loss(labels, emb, sample_weight=np.ones(12))


def test_tfa_style_constructor_arguments():
    assert losses.TripletSemiHardLoss(1.0, "squared-L2", name="x").distance_metric == "squared-L2"
    hard = losses.TripletHardLoss(margin=0.1, soft=True, distance_metric="angular", name="h")
    assert (hard.margin, hard.soft, hard.name) == (pytest.approx(0.1), True, "h")
    with pytest.raises(ValueError, match="distance metric"):
        losses.TripletSemiHardLoss(distance_metric="L1")


def test_contrastive_matches_tfa():
    rng = np.random.default_rng(15)
    same = rng.integers(0, 2, 10)
    dist = rng.uniform(0, 2, 10).astype(np.float32)
    ref = tfa.contrastive_loss(same, dist, margin=1.5).numpy()
    np.testing.assert_allclose(losses.contrastive_loss(same, dist, 1.5), ref, rtol=1e-6)
    loss = losses.ContrastiveLoss(margin=1.5)
    np.testing.assert_allclose(loss(same, dist), ref.mean(), rtol=1e-6)
    np.testing.assert_allclose(loss(same[:, None], dist[:, None]), ref.mean(), rtol=1e-6)
    weights = rng.uniform(size=10).astype(np.float32)
    np.testing.assert_allclose(loss(same, dist, weights), (ref * weights).mean(), rtol=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert restored.margin == 1.5


def _per_replica(strategy, fn):
    values = strategy.experimental_local_results(strategy.run(fn))
    return [v.numpy() for v in values]


def test_loss_classes_scale_like_keras_under_mirrored_strategy(two_cpus):
    rng = np.random.default_rng(16)
    labels = tf.constant(np.repeat(np.arange(4), 3))
    emb = tf.constant(_unit(rng, 12))
    dist = tf.constant(rng.uniform(0, 2, 12).astype(np.float32))
    strategy = two_cpus
    cases = [
        (losses.TripletSemiHardLoss(), labels, emb),
        (losses.TripletHardLoss(), labels, emb),
        (losses.TripletBatchAllLoss(), labels, emb),
        (losses.ContrastiveLoss(), labels % 2, dist),
        # Keras' own convention (per-example values [B] -> mean, scaled by 1/replicas).
        (keras.losses.MeanSquaredError(), dist[:, None], dist[:, None] * 0.5),
    ]
    for loss, y_true, y_pred in cases:
        unscaled = loss(y_true, y_pred).numpy()
        assert unscaled > 0
        per_replica = _per_replica(strategy, tf.function(lambda: loss(y_true, y_pred)))  # noqa: B023
        np.testing.assert_allclose(per_replica, [unscaled / 2] * 2, rtol=1e-6, err_msg=loss.name)
    # The functional forms are never scaled.
    value = _per_replica(strategy, lambda: losses.triplet_semihard_loss(labels, emb))
    np.testing.assert_allclose(value, [losses.triplet_semihard_loss(labels, emb)] * 2, rtol=1e-6)


def test_compile_and_fit_with_triplet_loss(tmp_path):
    rng = np.random.default_rng(17)
    x = rng.normal(size=(16, 5)).astype(np.float32)
    y = np.repeat(np.arange(4), 4)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.compile(optimizer="sgd", loss=losses.TripletSemiHardLoss(margin=0.5))
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert all(np.isfinite(history.history["loss"]))
    expected = losses.triplet_semihard_loss(y, model(x), 0.5)
    np.testing.assert_allclose(model.evaluate(x, y, batch_size=16, verbose=0), expected, rtol=1e-5)
    path = os.fspath(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, losses.TripletSemiHardLoss) and loaded.loss.margin == 0.5
