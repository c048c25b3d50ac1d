"""Cosine-similarity losses: multi-similarity, circle, supervised contrastive.

The functional forms behind `siamese_tf.losses.MultiSimilarityLoss`, `CircleLoss` and
`SupConLoss` (the proxy losses ArcFace / CosFace are in `siamese_tf.proxy_losses`). They score
every (anchor, other example) pair of a labelled batch on the cosine similarity of embeddings
they L2-normalise themselves, with the definitions and default reductions of
pytorch-metric-learning 2.x (PML) — no miner, default reducer:

* multi-similarity (Wang et al. 2019), per anchor a with positives P_a and negatives N_a:
  `1/alpha log(1 + sum_P exp(-alpha (s - base))) + 1/beta log(1 + sum_N exp(beta (s - base)))`,
  averaged over *all* anchors (PML's `MeanReducer`);
* circle (Sun et al. 2020), per anchor with a positive and a negative:
  `softplus(logsumexp_P(-gamma a_p (s - 1 + m)) + logsumexp_N(gamma a_n (s - m)))` with the
  constant weights `a_p = relu(1 + m - s)`, `a_n = relu(s + m)` (no gradient), averaged over
  the anchors with a non-zero loss (PML's `AvgNonZeroReducer`);
* supervised contrastive (Khosla et al. 2020), per anchor with a positive, when the batch has
  a negative: `-mean_P log softmax(s / T)` (the softmax over every other example of the
  batch), averaged over the anchors with a non-zero loss (`AvgNonZeroReducer`). With two
  augmented views per example as the only positives it is NT-Xent (SimCLR).

Each is computed row by row from the [A, B] similarity matrix of A anchors against the batch of
B (memory O(A·B)), with a hand-written gradient with respect to that matrix: the forward pass
keeps one [A, B] tensor (the derivative) instead of autodiff's chain of masked exponentials.
The `*_loss_terms` functions return `(loss_sum, count)` for some anchors of a batch (the rows
`anchor_indices`), so a replica can score its own anchors against an all-gathered batch, or a
batch against a cross-batch memory (`siamese_tf.memory`), and the sums and counts add up to the
value on the whole batch. Results are float32 for float16 / bfloat16 embeddings.

Degenerate batches follow PML: multi-similarity keeps its negative (no positive pair) or
positive (one class) term, with a gradient; circle and SupCon give 0 with a zero gradient.
"""

from __future__ import annotations

import tensorflow as tf

from siamese_tf import mining
from siamese_tf.distances import precise


def _anchor_rows(batch_size, anchor_indices):
    if anchor_indices is None:
        return tf.range(batch_size)
    return tf.cast(tf.reshape(anchor_indices, [-1]), tf.int32)


def cosine_similarity_rows(embeddings, anchor_indices=None) -> tf.Tensor:
    """[A, B] cosine similarities of some rows (default: all) to every row of `embeddings`.

    Args:
      embeddings: [B, D] float tensor; L2-normalised here (a zero row stays zero).
      anchor_indices: optional [A] int rows.

    Returns:
      float32 (float64 for float64 input) [A, B].
    """
    unit = tf.math.l2_normalize(precise(embeddings), axis=1)
    rows = _anchor_rows(tf.shape(unit)[0], anchor_indices)
    return tf.matmul(tf.gather(unit, rows), unit, transpose_b=True)


def _masked_logsumexp(x, mask, add_one=False):
    """Row-wise `log(sum_mask exp(x))` (with `add_one`: `log(1 + sum_mask exp(x))`) and softmax.

    Rows with an empty mask give 0 (PML's `lmu.logsumexp`) and a zero softmax. No inf or NaN
    reaches a gradient: masked entries are exp(-inf) = 0 before any arithmetic.

    Returns:
      `(lse [A], weights [A, B])`: `weights = exp(x - lse)` on the mask, 0 elsewhere (the
      derivative of `lse` with respect to `x`).
    """
    neg_inf = tf.constant(-float("inf"), x.dtype)
    masked = tf.where(mask, x, neg_inf)
    row_max = tf.reduce_max(masked, axis=1, keepdims=True)
    if add_one:
        row_max = tf.maximum(row_max, 0.0)
    row_max = tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max))
    exps = tf.exp(masked - row_max)
    total = tf.reduce_sum(exps, axis=1, keepdims=True)
    if add_one:
        total += tf.exp(-row_max)
    has = tf.reduce_any(mask, axis=1, keepdims=True)
    safe_total = tf.where(has, total, tf.ones_like(total))
    lse = tf.where(has, tf.math.log(safe_total) + row_max, tf.zeros_like(total))
    return lse[:, 0], exps / safe_total


def _same_and_not_self(labels, anchor_labels, anchor_rows):
    """[A, B] masks: same label as the anchor; not the anchor's own column."""
    same = tf.equal(anchor_labels[:, None], labels[None, :])
    not_self = tf.not_equal(anchor_rows[:, None], tf.range(tf.shape(labels)[0])[None, :])
    return same, not_self


def _masks(labels, anchor_labels, anchor_rows):
    """Positive (same label, not the anchor itself) and negative masks, [A, B]."""
    same, not_self = _same_and_not_self(labels, anchor_labels, anchor_rows)
    return tf.logical_and(same, not_self), tf.logical_not(same)


# The row functions below read the [A, B] similarities a few times and write one [A, B]
# derivative. Compiled with XLA, their masked exponentials and reductions fuse into a few passes
# over the matrix (1.2-1.4x faster on CPU than the same ops one by one; `launch.benchmark
# --suite=mining` compares them with the similarity-matrix floor). Each pass over the matrix
# costs about as much as copying it on CPU, so the fast paths make as few as they can: the
# positive pairs' per-anchor sums come from the [A, K] table of each anchor's positives
# (`mining.positive_slots`, one sort of the labels), not from a masked pass over [A, B]; the
# softmax over the negatives takes a fixed bound of the exponents instead of the row maximum.


# Each row's softmax is taken with a fixed bound of its exponents rather than with the row's
# masked maximum, which saves passes over the matrix: multi-similarity's rows 1.4-1.7x faster at
# B=4096, SupCon's 1.2x. Exact while the spread of the exponents is at most this: no exponential
# overflows, the row's largest term (multi-similarity: its "1 +") stays a normal float, and a
# term that underflows to 0 is below 1e-11 of it. Beyond it (a large beta, a small temperature)
# the rows take the row-maximum path.
_FIXED_SHIFT_MAX = 60.0

# Circle's negative exponents, gamma relu(s + m) (s - m) for cosines s in [-1, 1] and m in
# [0, 1], lie in [-gamma m^2, gamma (1 - m^2)]: shifted by the upper bound, every term is at least
# exp(-gamma), a normal float32 while gamma is at most this, so the negatives need no row maximum
# (their exponents span gamma = 80 by default, above `_FIXED_SHIFT_MAX`, but the row has no "1 +"
# term whose scale the others must match). Its positive exponents span 4 gamma: their maximum is
# taken over each anchor's positives (`_circle_positive_terms`).
_CIRCLE_FIXED_SHIFT_MAX = 80.0


def _multi_similarity_positive_terms(positives, valid, alpha, beta, base):
    """`((total_p,), slot_weights)` from each anchor's [A, K] positives: their sum
    sum_p exp(alpha (base - s_ap)) and the terms themselves (the derivative's positive part,
    up to the row factor `_multi_similarity_rows` returns)."""
    del beta
    terms = tf.exp(alpha * (base - positives))
    terms = tf.where(valid, terms, tf.zeros_like(terms))
    return (tf.reduce_sum(terms, axis=1),), terms


@tf.function(jit_compile=True)
def _multi_similarity_rows(s, labels, anchor_labels, anchor_rows, total_p, alpha, beta, base):
    # Cosines are in [-1, 1]: below `_FIXED_SHIFT_MAX` no exponent overflows, and with the "1 +"
    # term log(1 + sum exp(x)) is log1p of the sum, exactly 0 without terms. Two passes over the
    # matrix, one exponential per entry: the negatives' exponentials (for their sum) and their
    # derivative; the positives' part of it stays with their [A, K] slots.
    zero = tf.zeros([], s.dtype)
    same = tf.equal(anchor_labels[:, None], labels[None, :])
    exps_n = tf.where(same, zero, tf.exp(beta * (s - base)))
    total_n = tf.reduce_sum(exps_n, axis=1)
    values = tf.math.log1p(total_p) / alpha + tf.math.log1p(total_n) / beta
    # d/ds of lse_n / beta is softmax_n; of lse_p / alpha, -softmax_p: the slots' terms times
    # 1 / (1 + total_p).
    return values, exps_n / (1.0 + total_n[:, None]), 1.0 / (1.0 + total_p)


@tf.function(jit_compile=True)
def _multi_similarity_rows_by_row_max(s, labels, anchor_labels, anchor_rows, alpha, beta, base):
    positive, negative = _masks(labels, anchor_labels, anchor_rows)
    lse_p, w_p = _masked_logsumexp(alpha * (base - s), positive, add_one=True)
    lse_n, w_n = _masked_logsumexp(beta * (s - base), negative, add_one=True)
    # d/ds of lse_p / alpha is -w_p, of lse_n / beta is w_n (disjoint masks).
    return lse_p / alpha + lse_n / beta, w_n - w_p


def _circle_positive_exponents(s, m, gamma):
    # PML detaches the weights a_p = gamma relu(1 + m - s), a_n = gamma relu(s + m): only the
    # (s - delta) factors carry a gradient.
    return gamma * tf.nn.relu(1.0 + m - s) * (1.0 - m - s)


def _circle_positive_terms(positives, valid, m, gamma):
    """`((max_p, total_p, has_positive), slot_weights)` from each anchor's [A, K] positives:
    the largest positive exponent (0 without a positive), the sum of exp(exponent - max_p), and
    each slot's exp(exponent - max_p) a_p (the derivative's positive part, up to the row factor
    `_circle_rows` returns)."""
    exponents = _circle_positive_exponents(positives, m, gamma)
    lowest = tf.constant(-float("inf"), exponents.dtype)
    max_p = tf.reduce_max(tf.where(valid, exponents, lowest), axis=1)
    has_positive = tf.reduce_any(valid, axis=1)
    max_p = tf.where(has_positive, max_p, tf.zeros_like(max_p))
    exps = tf.where(valid, tf.exp(exponents - max_p[:, None]), tf.zeros_like(exponents))
    weights = exps * (gamma * tf.nn.relu(1.0 + m - positives))
    return (max_p, tf.reduce_sum(exps, axis=1), has_positive), weights


@tf.function(jit_compile=True)
def _circle_rows(s, labels, anchor_labels, anchor_rows, max_p, total_p, has_positive, m, gamma):
    # Two passes over the matrix, one exponential per entry (the negatives' exponentials, their
    # derivative) where the masked row maxima of `_circle_rows_by_row_max` take seven; the
    # positives' part of the derivative stays with their [A, K] slots.
    zero, one = tf.zeros([], s.dtype), tf.ones([], s.dtype)
    same = tf.equal(anchor_labels[:, None], labels[None, :])
    shift_n = gamma * (1.0 - m * m)
    exps_n = tf.where(same, zero, tf.exp(gamma * tf.nn.relu(s + m) * (s - m) - shift_n))
    total_n = tf.reduce_sum(exps_n, axis=1)
    # Every negative term is at least exp(-gamma) > 0: the sum is 0 only without negatives.
    valid = tf.logical_and(has_positive, total_n > 0)
    total_p = tf.where(valid, total_p, one)
    total_n = tf.where(valid, total_n, one)
    z = tf.math.log(total_p) + max_p + tf.math.log(total_n) + shift_n
    values = tf.where(valid, tf.nn.softplus(z), zero)
    # d/ds: sigmoid(z) (softmax_n a_n - softmax_p a_p), the per-row factors taken first.
    scale = tf.where(valid, gamma * tf.sigmoid(z), zero)
    derivative_n = (scale / total_n)[:, None] * exps_n * tf.nn.relu(s + m)
    return values, derivative_n, scale / (gamma * total_p)


@tf.function(jit_compile=True)
def _circle_rows_by_row_max(s, labels, anchor_labels, anchor_rows, m, gamma):
    positive, negative = _masks(labels, anchor_labels, anchor_rows)
    weight_p = gamma * tf.nn.relu(1.0 + m - s)
    weight_n = gamma * tf.nn.relu(s + m)
    lse_p, w_p = _masked_logsumexp(-weight_p * (s - (1.0 - m)), positive)
    lse_n, w_n = _masked_logsumexp(weight_n * (s - m), negative)
    valid = tf.logical_and(tf.reduce_any(positive, 1), tf.reduce_any(negative, 1))
    z = lse_p + lse_n
    values = tf.where(valid, tf.nn.softplus(z), tf.zeros_like(z))
    scale = tf.where(valid, tf.sigmoid(z), tf.zeros_like(z))[:, None]
    return values, scale * (w_n * weight_n - w_p * weight_p)


def _supcon_positive_terms(positives, valid, temperature):
    """`((num_positive, positive_logits), None)` [A]: how many positives, the sum of their s / T
    (their part of D, -1 / (T count), has no exponential and stays in the [A, B] pass)."""
    valid_f = tf.cast(valid, positives.dtype)
    num_positive = tf.reduce_sum(valid_f, axis=1)
    return (num_positive, tf.reduce_sum(valid_f * positives, axis=1) / temperature), None


@tf.function(jit_compile=True)
def _supcon_rows(s, labels, anchor_labels, anchor_rows, num_positive, positive_logits, temperature):
    # Cosines are at most 1: 1 / T bounds the logits, and each row's largest term is at least
    # exp(-2 / T). Two passes over the matrix: the exponentials (for their sum), the derivative.
    shift = 1.0 / temperature
    zero, one = tf.zeros([], s.dtype), tf.ones([], s.dtype)
    same, not_self = _same_and_not_self(labels, anchor_labels, anchor_rows)
    exps = tf.where(not_self, tf.exp(s * shift - shift), zero)
    # The anchor's own row is in the batch: a negative exists unless its label fills the rest.
    has_negative = num_positive + 1.0 < tf.cast(tf.shape(labels)[0], s.dtype)
    valid = tf.logical_and(num_positive > 0, has_negative)
    count = tf.where(valid, num_positive, one)
    safe_total = tf.where(valid, tf.reduce_sum(exps, axis=1), one)
    values = tf.where(valid, tf.math.log(safe_total) + shift - positive_logits / count, zero)
    inverse_total = tf.where(valid, shift / safe_total, zero)
    inverse_count = tf.where(valid, shift / count, zero)
    positive_f = tf.where(tf.logical_and(same, not_self), one, zero)
    return values, exps * inverse_total[:, None] - positive_f * inverse_count[:, None]


@tf.function(jit_compile=True)
def _supcon_rows_by_row_max(s, labels, anchor_labels, anchor_rows, temperature):
    positive, negative = _masks(labels, anchor_labels, anchor_rows)
    logits = s / temperature
    lse, softmax = _masked_logsumexp(logits, tf.logical_or(positive, negative))
    positive_f = tf.cast(positive, s.dtype)
    num_positive = tf.reduce_sum(positive_f, axis=1)
    valid = tf.logical_and(num_positive > 0, tf.reduce_any(negative, axis=1))
    count = tf.where(valid, num_positive, tf.ones_like(num_positive))
    positive_logits = tf.reduce_sum(tf.where(positive, logits, tf.zeros_like(logits)), axis=1)
    values = tf.where(valid, lse - positive_logits / count, tf.zeros_like(lse))
    derivative = (softmax - positive_f / count[:, None]) / temperature
    return values, tf.where(valid[:, None], derivative, tf.zeros_like(derivative))


def _row_losses(rows_fn, y_true, y_pred, anchor_indices, params, positive_terms=None):
    """Per-anchor losses [A] of a row function on the [A, B] cosine similarities.

    `rows_fn(similarity, labels, anchor_labels, anchor_rows, *terms, *params)` returns the
    losses and their derivative D with respect to the similarities. With `positive_terms`,
    `(terms, slot_weights) = positive_terms(positives [A, K], valid [A, K], *params)` are
    per-anchor sums over each anchor's positive similarities (`mining.positive_slots`) and
    `rows_fn` also returns a row factor r [A]: D is then its negatives' part, and the positive
    entries' derivative is `-r * slot_weights`, applied per slot in the backward. The gradient is
    written by hand from D alone (the similarity matrix is not kept): with `u` the unit
    embeddings and `g` the upstream gradient per anchor, `d/d anchors = g * (D @ u)` and
    `d/d u = D^T @ (g * anchors)` — the per-anchor scale is applied to [A, D] operands, not to
    the [A, B] matrix.
    """
    labels = tf.reshape(tf.convert_to_tensor(y_true), [-1])
    unit = tf.math.l2_normalize(precise(y_pred), axis=1)
    anchor_rows = _anchor_rows(tf.shape(labels)[0], anchor_indices)
    anchor_labels = tf.gather(labels, anchor_rows)
    if positive_terms is not None:
        columns, valid = mining.positive_slots(labels, anchor_indices)

    @tf.custom_gradient
    def losses(anchors, unit):
        similarity = tf.matmul(anchors, unit, transpose_b=True)
        terms, slot_weights = (), None
        if positive_terms is not None:
            positives = tf.gather(similarity, columns, batch_dims=1)
            terms, slot_weights = positive_terms(positives, valid, *params)
        outputs = rows_fn(similarity, labels, anchor_labels, anchor_rows, *terms, *params)
        values, derivative = outputs[:2]
        if slot_weights is not None:  # D's positive entries: -row factor × slot weight
            slot_derivative = -outputs[2][:, None] * slot_weights

        def grad(upstream):
            upstream = upstream[:, None]
            # D^T @ x as (x^T @ D)^T: the same product with D read row by row, 1.6x faster at
            # B=4096 on CPU than `transpose_a=True` on the [A, B] operand.
            weighted = tf.matmul(upstream * anchors, derivative, transpose_a=True)
            to_anchors = upstream * tf.matmul(derivative, unit)
            to_unit = tf.transpose(weighted)
            if slot_weights is not None:  # the positive slots' part, O(A·K·D)
                g = upstream * slot_derivative
                to_anchors += tf.einsum("ak,akd->ad", g, tf.gather(unit, columns))
                to_unit += tf.math.unsorted_segment_sum(
                    g[:, :, None] * anchors[:, None, :], columns, tf.shape(unit)[0]
                )
            return to_anchors, to_unit

        return values, grad

    anchors = unit if anchor_indices is None else tf.gather(unit, anchor_rows)
    return losses(anchors, unit)


def multi_similarity_loss_terms(
    y_true, y_pred, alpha=2.0, beta=50.0, base=0.5, anchor_indices=None
):
    """Sum over anchors of the multi-similarity loss, and the number of anchors.

    Args:
      y_true: [B] or [B, 1] labels of the whole batch.
      y_pred: [B, D] embeddings of the whole batch (normalised here).
      alpha: weight of the positive term.
      beta: weight of the negative term.
      base: the similarity margin (lambda in the paper).
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      `(loss_sum, num_anchors)`, float scalars; the loss is their ratio.
    """
    params = (float(alpha), float(beta), float(base))
    if max(alpha * (1.0 + base), beta * (1.0 - base)) <= _FIXED_SHIFT_MAX:
        rows_fn, terms = _multi_similarity_rows, _multi_similarity_positive_terms
    else:
        rows_fn, terms = _multi_similarity_rows_by_row_max, None
    per_anchor = _row_losses(rows_fn, y_true, y_pred, anchor_indices, params, terms)
    return tf.reduce_sum(per_anchor), tf.cast(tf.size(per_anchor), per_anchor.dtype)


def circle_loss_terms(y_true, y_pred, m=0.4, gamma=80.0, anchor_indices=None):
    """Sum of the circle losses of the anchors that have one, and how many are non-zero.

    Args:
      y_true: [B] or [B, 1] labels of the whole batch.
      y_pred: [B, D] embeddings of the whole batch (normalised here).
      m: the relaxation margin.
      gamma: the scale.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      `(loss_sum, num_nonzero)`, float scalars; the loss is their ratio (0 when no anchor has
      both a positive and a negative).
    """
    params = (float(m), float(gamma))
    if 0.0 <= m <= 1.0 and gamma <= _CIRCLE_FIXED_SHIFT_MAX:
        rows_fn, terms = _circle_rows, _circle_positive_terms
    else:
        rows_fn, terms = _circle_rows_by_row_max, None
    per_anchor = _row_losses(rows_fn, y_true, y_pred, anchor_indices, params, terms)
    return _nonzero_terms(per_anchor)


def supcon_loss_terms(y_true, y_pred, temperature=0.1, anchor_indices=None):
    """Sum of the supervised contrastive losses of the anchors, and how many are non-zero.

    Args:
      y_true: [B] or [B, 1] labels of the whole batch.
      y_pred: [B, D] embeddings of the whole batch (normalised here).
      temperature: the softmax temperature T.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      `(loss_sum, num_nonzero)`, float scalars; the loss is their ratio (0 without a positive
      pair or without a negative).
    """
    params = (float(temperature),)
    if 2.0 / temperature <= _FIXED_SHIFT_MAX:
        rows_fn, terms = _supcon_rows, _supcon_positive_terms
    else:
        rows_fn, terms = _supcon_rows_by_row_max, None
    per_anchor = _row_losses(rows_fn, y_true, y_pred, anchor_indices, params, terms)
    return _nonzero_terms(per_anchor)


def _nonzero_terms(per_anchor):
    """PML's `AvgNonZeroReducer` as (sum, count): the mean over the strictly positive losses."""
    nonzero = tf.stop_gradient(per_anchor) > 0
    loss_sum = tf.reduce_sum(tf.where(nonzero, per_anchor, tf.zeros_like(per_anchor)))
    return loss_sum, tf.reduce_sum(tf.cast(nonzero, per_anchor.dtype))


def _mean(terms):
    loss_sum, count = terms
    return tf.math.divide_no_nan(loss_sum, count)


def multi_similarity_loss(y_true, y_pred, alpha=2.0, beta=50.0, base=0.5, anchor_indices=None):
    """Multi-similarity loss (Wang et al. 2019), as PML 2.x's `MultiSimilarityLoss`.

    Args:
      y_true: [B] or [B, 1] class labels.
      y_pred: [B, D] embeddings (L2-normalised here).
      alpha: weight of the positive term. Default 2.
      beta: weight of the negative term. Default 50.
      base: the similarity margin lambda. Default 0.5.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      float32 scalar (not scaled for distribution): the mean over anchors.
    """
    return _mean(multi_similarity_loss_terms(y_true, y_pred, alpha, beta, base, anchor_indices))


def circle_loss(y_true, y_pred, m=0.4, gamma=80.0, anchor_indices=None):
    """Circle loss (Sun et al. 2020) on cosine similarities, as PML 2.x's `CircleLoss`.

    Args:
      y_true: [B] or [B, 1] class labels.
      y_pred: [B, D] embeddings (L2-normalised here).
      m: relaxation margin. Default 0.4.
      gamma: scale. Default 80.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      float32 scalar (not scaled for distribution): the mean over anchors with a non-zero loss.
    """
    return _mean(circle_loss_terms(y_true, y_pred, m, gamma, anchor_indices))


def supcon_loss(y_true, y_pred, temperature=0.1, anchor_indices=None):
    """Supervised contrastive loss (Khosla et al. 2020), as PML 2.x's `SupConLoss`.

    Args:
      y_true: [B] or [B, 1] class labels (two views of each example under one label: NT-Xent).
      y_pred: [B, D] embeddings (L2-normalised here).
      temperature: softmax temperature. Default 0.1.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      float32 scalar (not scaled for distribution): the mean over anchors with a non-zero loss.
    """
    return _mean(supcon_loss_terms(y_true, y_pred, temperature, anchor_indices))
