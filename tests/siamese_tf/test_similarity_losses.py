"""Multi-similarity, circle, SupCon and ArcFace/CosFace losses against float64 numpy references.

The references follow the definitions (and PML 2.x's default reducers), sharing no code with the
project; WORKSPACE.md records their one-off cross-check against PML 2.9.0 itself.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import check_anchor_halves, value_and_grad
from helpers import unit_rows as _unit

from siamese_tf import losses
from siamese_tf.losses import arcface_loss, margin_cosines

TOL = 1e-5


# --- numpy references --------------------------------------------------------------------------


def _np_similarity(emb):
    emb = np.asarray(emb, np.float64)
    norms = np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    unit = emb / norms
    return unit @ unit.T


def _np_masks(labels):
    labels = np.reshape(labels, [-1])
    same = labels[:, None] == labels[None, :]
    return same & ~np.eye(len(labels), dtype=bool), ~same


def _log1p_sum_exp(x):
    return np.logaddexp.reduce(np.concatenate([[0.0], x])) if len(x) else 0.0


def ref_multi_similarity(labels, emb, alpha=2.0, beta=50.0, base=0.5):
    """Wang et al. 2019 eq. 5, mean over every anchor."""
    s = _np_similarity(emb)
    pos, neg = _np_masks(labels)
    per_anchor = [
        _log1p_sum_exp(-alpha * (s[a][pos[a]] - base)) / alpha
        + _log1p_sum_exp(beta * (s[a][neg[a]] - base)) / beta
        for a in range(len(s))
    ]
    return float(np.mean(per_anchor)) if len(s) > 1 else 0.0


def _mean_nonzero(values):
    values = np.asarray(values, np.float64)
    nonzero = values[values > 0]
    return float(nonzero.mean()) if nonzero.size else 0.0


def ref_circle(labels, emb, m=0.4, gamma=80.0, weights_at=None):
    """Sun et al. 2020 eq. 6 (pair-wise labels), mean over anchors with a non-zero loss.

    The weights alpha_p, alpha_n are constants in the paper's gradient (PML detaches them):
    `weights_at` evaluates them at other embeddings, for a finite-difference gradient.
    """
    s = _np_similarity(emb)
    w = s if weights_at is None else _np_similarity(weights_at)
    pos, neg = _np_masks(labels)
    per_anchor = []
    for a in range(len(s)):
        if not pos[a].any() or not neg[a].any():
            continue
        sp, sn = s[a][pos[a]], s[a][neg[a]]
        wp, wn = w[a][pos[a]], w[a][neg[a]]
        logit_p = -gamma * np.maximum(1 + m - wp, 0) * (sp - (1 - m))
        logit_n = gamma * np.maximum(wn + m, 0) * (sn - m)
        z = np.logaddexp.reduce(logit_p) + np.logaddexp.reduce(logit_n)
        per_anchor.append(np.logaddexp(0.0, z))
    return _mean_nonzero(per_anchor)


def ref_supcon(labels, emb, temperature=0.1):
    """Khosla et al. 2020 eq. 2 (L_out), mean over anchors with a non-zero loss."""
    s = _np_similarity(emb) / temperature
    pos, neg = _np_masks(labels)
    if not pos.any() or not neg.any():
        return 0.0
    per_anchor = []
    for a in range(len(s)):
        if not pos[a].any():
            continue
        others = pos[a] | neg[a]
        log_prob = s[a] - np.logaddexp.reduce(s[a][others])
        per_anchor.append(-log_prob[pos[a]].mean())
    return _mean_nonzero(per_anchor)


def ref_arcface(labels, cosines, margin=0.5, scale=64.0, variant="arcface"):
    """Deng et al. 2019 (with insightface's continuation beyond theta + m > pi) / CosFace."""
    cosines = np.asarray(cosines, np.float64)
    out = []
    for y, row in zip(labels, cosines):
        logits = row.copy()
        c = row[y]
        if variant == "cosface":
            logits[y] = c - margin
        else:
            theta = math.acos(c)
            beyond_pi = theta + margin > math.pi
            logits[y] = c - math.sin(margin) * margin if beyond_pi else math.cos(theta + margin)
        logits *= scale
        out.append(np.logaddexp.reduce(logits) - logits[y])
    return float(np.mean(out))


# --- batches -----------------------------------------------------------------------------------


def _batches():
    rng = np.random.default_rng(21)
    pk = np.repeat(np.arange(6), 4)
    dup = np.tile(_unit(rng, 3), (4, 1))  # every embedding 4 times, some with other labels
    axes = np.eye(6, dtype=np.float32)
    pairs = np.repeat(np.arange(6), 2)
    return [
        ("random", rng.integers(0, 5, 24), _unit(rng, 24)),
        ("pxk", pk, _unit(rng, 24)),
        ("pxk_labels_b1", pk[:, None], _unit(rng, 24)),
        ("unnormalised", rng.integers(0, 4, 20), rng.normal(size=(20, 5)).astype(np.float32) * 3),
        ("clustered", pk, (np.eye(8)[pk % 8] + 0.05 * rng.normal(size=(24, 8))).astype("f4")),
        ("no_positive_pair", np.arange(10), _unit(rng, 10)),
        ("one_class", np.zeros(9, np.int64), _unit(rng, 9)),
        ("duplicates", np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 3, 3, 3]), dup),
        ("single_example_classes", np.array([0, 0, 0, 1, 2, 3, 3, 4, 5]), _unit(rng, 9)),
        ("one_example", np.array([3]), _unit(rng, 1)),
        ("two_classes_high_dim", rng.integers(0, 2, 16), _unit(rng, 16, dim=64)),
        # The ends of the exponents' ranges: every positive pair at cosine -1 (circle's largest
        # positive exponent) or at 1, every negative at 0 (its smallest negative exponent).
        ("antipodal_positives", pairs, np.stack([axes, -axes], axis=1).reshape(12, 6)),
        ("identical_positives_orthogonal_negatives", pairs, np.repeat(axes, 2, axis=0)),
    ]


BATCHES = _batches()
BATCH_IDS = [b[0] for b in BATCHES]

LOSSES = {
    "multi_similarity": (losses.multi_similarity_loss, ref_multi_similarity, {}),
    "multi_similarity_params": (
        losses.multi_similarity_loss,
        ref_multi_similarity,
        dict(alpha=1.0, beta=10.0, base=0.2),
    ),
    # Exponents spread beyond similarity_losses._FIXED_SHIFT_MAX: the row-maximum paths.
    "multi_similarity_large_beta": (
        losses.multi_similarity_loss,
        ref_multi_similarity,
        dict(beta=200.0),
    ),
    "circle": (losses.circle_loss, ref_circle, {}),
    # gamma above similarity_losses._CIRCLE_FIXED_SHIFT_MAX: the row-maximum path.
    "circle_params": (losses.circle_loss, ref_circle, dict(m=0.25, gamma=256.0)),
    "supcon": (losses.supcon_loss, ref_supcon, {}),
    "supcon_params": (losses.supcon_loss, ref_supcon, dict(temperature=0.5)),
    "supcon_small_temperature": (losses.supcon_loss, ref_supcon, dict(temperature=0.02)),
}


# SupCon's value there, log(1 + 10 exp(-10)) = 4.5e-4, is the difference of terms of size 1/T = 10:
# float32 resolves it to about ulp(1) = 1.2e-7 absolute (1e-4 relative), whatever the formulation.
ATOL = {("identical_positives_orthogonal_negatives", "supcon"): 1e-6}


@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("name,labels,emb", BATCHES, ids=BATCH_IDS)
def test_values_match_the_definition(loss_name, name, labels, emb):
    fn, ref, kwargs = LOSSES[loss_name]
    value, grad = value_and_grad(lambda e: fn(labels, e, **kwargs), emb)
    assert value.dtype == np.float32
    atol = ATOL.get((name, loss_name), 0)
    np.testing.assert_allclose(value, ref(labels, emb, **kwargs), rtol=TOL, atol=atol)
    assert grad is not None and np.all(np.isfinite(grad))


def test_circle_fixed_shift_at_its_widest_matches_the_definition():
    """m = 0, gamma = 80: the negatives' exponents span [0, gamma], the fixed shift's limit."""
    for name in ("random", "antipodal_positives", "identical_positives_orthogonal_negatives"):
        _, labels, emb = BATCHES[BATCH_IDS.index(name)]
        value, grad = value_and_grad(lambda e, y=labels: losses.circle_loss(y, e, 0.0, 80.0), emb)
        np.testing.assert_allclose(value, ref_circle(labels, emb, m=0.0, gamma=80.0), rtol=TOL)
        assert np.all(np.isfinite(grad)), name


@pytest.mark.parametrize("loss_name", ["circle", "supcon"])
def test_degenerate_batches_have_zero_value_and_gradient(loss_name):
    fn = LOSSES[loss_name][0]
    rng = np.random.default_rng(22)
    for labels in (np.arange(6), np.zeros(6, np.int64)):
        value, grad = value_and_grad(lambda e, y=labels: fn(y, e), _unit(rng, 6))
        assert value == 0.0
        np.testing.assert_array_equal(grad, 0.0)


def _numeric_gradient(ref, labels, emb, kwargs, eps=1e-6):
    grad = np.zeros_like(emb)
    for index in np.ndindex(*emb.shape):
        up, down = emb.copy(), emb.copy()
        up[index] += eps
        down[index] -= eps
        grad[index] = (ref(labels, up, **kwargs) - ref(labels, down, **kwargs)) / (2 * eps)
    return grad


@pytest.mark.parametrize("loss_name", ["multi_similarity", "circle", "supcon_params"])
def test_gradient_matches_finite_differences(loss_name):
    # float64 embeddings are computed in float64, so the hand-written gradient can be compared
    # tightly with central differences of the reference.
    fn, ref, kwargs = LOSSES[loss_name]
    rng = np.random.default_rng(23)
    labels = np.repeat(np.arange(3), 3)
    emb = rng.normal(size=(9, 4))
    value, grad = value_and_grad(lambda e: fn(labels, e, **kwargs), emb)
    np.testing.assert_allclose(value, ref(labels, emb, **kwargs), rtol=1e-10)
    if loss_name == "circle":
        kwargs = dict(kwargs, weights_at=emb)
    expected = _numeric_gradient(ref, labels, emb, kwargs)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
@pytest.mark.parametrize("loss_name", ["multi_similarity", "circle", "supcon"])
def test_half_precision_is_computed_in_float32(loss_name, dtype):
    fn = LOSSES[loss_name][0]
    rng = np.random.default_rng(24)
    labels = np.repeat(np.arange(4), 3)
    half = tf.cast(_unit(rng, 12), dtype)
    value = fn(labels, half)
    assert value.dtype == tf.float32
    np.testing.assert_allclose(value, fn(labels, tf.cast(half, tf.float32)), rtol=1e-6)


TERMS = {
    "multi_similarity": losses.multi_similarity_loss_terms,
    "circle": losses.circle_loss_terms,
    "supcon": losses.supcon_loss_terms,
}


@pytest.mark.parametrize("name", list(TERMS))
def test_anchor_halves_reproduce_full_batch(name):
    rng = np.random.default_rng(25)
    labels = np.repeat(np.arange(5), 4)[rng.permutation(20)]
    emb = tf.constant(_unit(rng, 20))
    check_anchor_halves(lambda e, idx: TERMS[name](labels, e, anchor_indices=idx), emb)


CLASSES = [
    (losses.MultiSimilarityLoss, dict(alpha=1.5, beta=40.0, base=0.4), ref_multi_similarity),
    (losses.CircleLoss, dict(m=0.3, gamma=64.0), ref_circle),
    (losses.SupConLoss, dict(temperature=0.2), ref_supcon),
]


@pytest.mark.parametrize("cls,kwargs,ref", CLASSES)
def test_loss_classes_values_config_and_scaling(cls, kwargs, ref, two_cpus):
    rng = np.random.default_rng(26)
    labels, emb = np.repeat(np.arange(4), 3), _unit(rng, 12)
    loss = cls(**kwargs)
    expected = ref(labels, emb, **kwargs)
    np.testing.assert_allclose(loss(y_true=labels, y_pred=emb), expected, rtol=TOL)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is cls and restored.get_config() == loss.get_config()
    np.testing.assert_allclose(restored(labels, emb), expected, rtol=TOL)
    with pytest.raises(ValueError, match="sample_weight"):
        loss(labels, emb, sample_weight=np.ones(12))
    # Keras 3's convention under a strategy: times 1/replicas.
    values = two_cpus.experimental_local_results(
        two_cpus.run(tf.function(lambda: loss(tf.constant(labels), tf.constant(emb))))
    )
    np.testing.assert_allclose([v.numpy() for v in values], [expected / 2] * 2, rtol=TOL)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: losses.MultiSimilarityLoss(alpha=0.0), "alpha"),
        (lambda: losses.MultiSimilarityLoss(beta=-1.0), "beta"),
        (lambda: losses.CircleLoss(m=1.0), "m must be"),
        (lambda: losses.CircleLoss(gamma=0.0), "gamma"),
        (lambda: losses.SupConLoss(temperature=0.0), "temperature"),
        (lambda: losses.ArcFaceLoss(margin=2.0), "margin"),
        (lambda: losses.ArcFaceLoss(variant="sphereface"), "variant"),
        (lambda: losses.ArcFaceLoss(scale=-1.0), "scale"),
    ],
)
def test_out_of_range_hyperparameters_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


# --- ArcFace / CosFace -------------------------------------------------------------------------


@pytest.mark.parametrize("variant, margin", [("arcface", 0.5), ("arcface", 1.2), ("cosface", 0.35)])
def test_arcface_matches_the_definition_with_finite_gradients(variant, margin):
    rng = np.random.default_rng(27)
    labels = rng.integers(0, 7, 32)
    cosines = rng.uniform(-1, 1, (32, 7))
    # The edges: a true-class cosine of exactly 1 and -1 (arccos' derivative is infinite there).
    cosines[0, labels[0]], cosines[1, labels[1]] = 1.0, -1.0
    cosines = cosines.astype(np.float32)
    loss = losses.ArcFaceLoss(margin=margin, scale=16.0, variant=variant)
    value, grad = value_and_grad(lambda c: loss(labels, c), cosines)
    np.testing.assert_allclose(value, ref_arcface(labels, cosines, margin, 16.0, variant), rtol=TOL)
    assert np.all(np.isfinite(grad))
    # The hand-written derivative equals autodiff of the definition (margin cosines, softmax
    # cross-entropy), edges included.
    _, autodiff = value_and_grad(
        lambda c: tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=16.0 * margin_cosines(labels, c, margin, variant)
            )
        ),
        cosines,
    )
    np.testing.assert_allclose(grad, autodiff, rtol=1e-4, atol=1e-6)  # float32 round-off
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert restored.get_config() == loss.get_config()


@pytest.mark.parametrize(
    "case",
    ["one_class", "dominant_target_small_scale", "dominant_target_large_scale", "all_far"],
)
def test_arcface_edge_batches_match_the_definition(case):
    """Rows the softmax pass must not get wrong: one class, a true class far above the others
    (its margin logit is what is left of the sum), every cosine near -1 (nothing near the peak)."""
    rng = np.random.default_rng(31)
    scale = {"dominant_target_small_scale": 1.0, "dominant_target_large_scale": 128.0}.get(
        case, 64.0
    )
    classes = 1 if case == "one_class" else 9
    labels = rng.integers(0, classes, 16)
    cosines = rng.uniform(-1, 1, (16, classes))
    if case.startswith("dominant_target"):
        cosines = rng.uniform(-1, -0.9, (16, classes))
        cosines[np.arange(16), labels] = 0.999
    if case == "all_far":
        cosines = rng.uniform(-1, -0.99, (16, classes))
    cosines = cosines.astype(np.float32)
    loss = losses.ArcFaceLoss(scale=scale)
    value, grad = value_and_grad(lambda c: loss(labels, c), cosines)
    np.testing.assert_allclose(value, ref_arcface(labels, cosines, 0.5, scale), rtol=TOL)
    _, autodiff = value_and_grad(
        lambda c: tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=labels, logits=scale * margin_cosines(labels, c, 0.5)
            )
        ),
        cosines,
    )
    np.testing.assert_allclose(grad, autodiff, rtol=1e-4, atol=1e-6)


def test_arcface_label_outside_the_classes_is_nan_not_an_error():
    """The trainer sizes C from the labels; a label beyond it must stop training (NaN)."""
    for dtype in (np.float32, np.float64):  # float64 cosines are computed in float64
        values = arcface_loss(np.array([0, 4, -1]), np.zeros((3, 4), dtype)).numpy()
        assert values.dtype == dtype
        assert np.isfinite(values[0]) and np.isnan(values[1]) and np.isnan(values[2])


def test_arcface_loss_class_one_pass_mean_equals_keras_reduction(two_cpus):
    """`ArcFaceLoss` without weights takes the one-pass mean; with them, Keras's reduction of
    `arcface_loss`. Both give the same value and gradient, and 1/replicas under a strategy."""
    rng = np.random.default_rng(32)
    labels = rng.integers(0, 11, 40)
    cosines = rng.uniform(-1, 1, (40, 11)).astype(np.float32)
    weights = np.ones(40, np.float32)
    for variant, margin in (("arcface", 0.5), ("cosface", 0.35)):
        loss = losses.ArcFaceLoss(margin=margin, variant=variant)
        value, grad = value_and_grad(lambda c, loss=loss: loss(labels, c), cosines)
        weighted, weighted_grad = value_and_grad(
            lambda c, loss=loss: loss(labels, c, sample_weight=weights), cosines
        )
        np.testing.assert_allclose(value, weighted, rtol=TOL)
        np.testing.assert_allclose(grad, weighted_grad, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(value, ref_arcface(labels, cosines, margin, 64.0, variant), TOL)
    summed = losses.ArcFaceLoss(reduction="sum")(labels, cosines)
    np.testing.assert_allclose(summed, np.sum(arcface_loss(labels, cosines)), rtol=TOL)
    assert float(losses.ArcFaceLoss()(np.zeros(0, np.int64), np.zeros((0, 11), "f4"))) == 0.0
    loss = losses.ArcFaceLoss()
    values = two_cpus.experimental_local_results(
        two_cpus.run(tf.function(lambda: loss(tf.constant(labels), tf.constant(cosines))))
    )
    expected = ref_arcface(labels, cosines, 0.5, 64.0)
    np.testing.assert_allclose([v.numpy() for v in values], [expected / 2] * 2, rtol=TOL)
