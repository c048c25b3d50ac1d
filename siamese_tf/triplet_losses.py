"""Triplet losses with online mining: semi-hard, batch-hard, batch-all (the TFA successors).

The functional forms behind `siamese_tf.losses.TripletSemiHardLoss`, `TripletHardLoss` and
`TripletBatchAllLoss`, all importable from `siamese_tf.losses` too. Each mines a labelled batch
with `siamese_tf.mining` in O(B²) memory; the `*_loss_terms` functions return `(loss_sum,
count)` for some anchors of a batch (the rows `anchor_indices`), so a replica can score its own
anchors against an all-gathered batch and the sums and counts add up to the full-batch value.
Values equal TensorFlow Addons' wherever TFA's are finite; the deliberate differences are
listed in `siamese_tf.losses`. Nothing here is scaled for distribution.
"""

from __future__ import annotations

import tensorflow as tf

from siamese_tf import distances as distances_lib
from siamese_tf import mining


def _degenerate(labels):
    """True when the batch has no positive pair or no negative (zero-gradient case)."""
    labels = tf.reshape(labels, [-1])
    num_classes = tf.size(tf.unique(labels).y)
    return tf.logical_or(num_classes >= tf.size(labels), num_classes <= 1)


def _no_gradient_if(condition, value):
    # tf.where sends a zero gradient to the unselected branch, so `value` gets none when true.
    return tf.where(condition, tf.stop_gradient(value), value)


def _prepare(y_true, y_pred, distance_metric, anchor_indices, dense=False):
    """What every triplet loss mines from: labels, distances, negatives and positive pairs.

    Args:
      dense: the loss differentiates the whole matrix (batch-all); otherwise only the entries
        it selects, whose gradient goes straight to the embeddings
        (`distances.selectable_distances`: no B×B pass in the backward).

    Returns:
      `(labels [B], pdist [A, B], negative [A, B] bool, valid [A, K] bool, positive_d [A, K],
      select)`: `positive_d[a, j]` is the distance of anchor a to its j-th positive where
      `valid`; `select(columns [A, Q])` gives the differentiable entries `pdist[a, columns[a, q]]`
      (with `dense`, `pdist` itself is differentiable).
    """
    labels = tf.reshape(tf.convert_to_tensor(y_true), [-1])
    if dense:
        pdist = distances_lib.pairwise_distances(y_pred, distance_metric, anchor_indices)

        def select(columns):
            return mining.gather_rows(pdist, columns)

    else:
        pdist, select = distances_lib.selectable_distances(y_pred, distance_metric, anchor_indices)
    negative = mining.negative_mask(labels, anchor_indices)
    columns, valid = mining.positive_slots(labels, anchor_indices)
    return labels, pdist, negative, valid, select(columns), select


def semihard_loss_terms(y_true, y_pred, margin=1.0, distance_metric="L2", anchor_indices=None):
    """Sum and count of the semi-hard triplet loss terms of some anchors.

    For every positive pair (a, p) with `a` among the anchors: `max(margin + d(a, p) - d(a, n),
    0)` where `n` is the semi-hard negative (see `mining.semihard_negative_distances`).

    Args:
      y_true: [B] or [B, 1] labels of the whole batch.
      y_pred: [B, D] embeddings of the whole batch.
      margin: margin term.
      distance_metric: "L2", "squared-L2", "angular" or a callable (embeddings -> [B, B]).
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      `(loss_sum, num_positive_pairs)`, float scalars; the loss is their ratio. Zero gradient
      for a degenerate batch (see module docstring).
    """
    labels, pdist, negative, valid, positive_d, select = _prepare(
        y_true, y_pred, distance_metric, anchor_indices
    )
    negative_d = select(mining.masked_semihard_negative_columns(pdist, negative, positive_d, valid))
    terms = tf.maximum(margin + (positive_d - negative_d), 0.0)
    loss_sum = tf.reduce_sum(tf.where(valid, terms, 0.0))
    count = tf.reduce_sum(tf.cast(valid, pdist.dtype))
    return _no_gradient_if(_degenerate(labels), loss_sum), count


def hard_loss_terms(
    y_true, y_pred, margin=1.0, soft=False, distance_metric="L2", anchor_indices=None
):
    """Sum and count of the batch-hard triplet loss terms of some anchors.

    Per anchor: hardest positive `max_p d(a, p)` and hardest negative `min_n d(a, n)`, then
    `max(hp - hn + margin, 0)` or, with `soft`, `log(1 + exp(hp - hn))`. As in TFA, an anchor
    without positive uses the row minimum (0) as `hp`, one without negative the row maximum as
    `hn`, and every anchor counts.

    Args:
      y_true: [B] or [B, 1] labels of the whole batch.
      y_pred: [B, D] embeddings of the whole batch.
      margin: margin term (unused when `soft`).
      soft: soft-margin variant.
      distance_metric: "L2", "squared-L2", "angular" or a callable.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      `(loss_sum, num_anchors)`, float scalars.
    """
    labels, pdist, negative, valid, positive_d, select = _prepare(
        y_true, y_pred, distance_metric, anchor_indices
    )
    inf = tf.constant(float("inf"), pdist.dtype)
    everything = tf.ones_like(negative)
    num_anchors = tf.shape(pdist)[0]

    def columns_if_needed(needed, largest):
        # Row arg-min/max over the whole row, only computed when some anchor needs it.
        return tf.cond(
            tf.reduce_all(needed),
            lambda: tf.zeros([num_anchors, 1], tf.int32),
            lambda: mining.masked_row_argmin(pdist, everything, largest),
        )

    # Arg-min/max then `select`: the gradient goes per pair to the embeddings, no B×B pass.
    has_positive = tf.reduce_any(valid, axis=1)
    row_min = select(columns_if_needed(has_positive, False))[:, 0]
    hardest_positive = tf.where(
        has_positive, tf.reduce_max(tf.where(valid, positive_d, -inf), axis=1), row_min
    )
    has_negative = tf.reduce_any(negative, axis=1, keepdims=True)
    nearest_negative = mining.masked_row_argmin(pdist, negative)
    farthest = columns_if_needed(has_negative, True)
    hardest_negative = select(tf.where(has_negative, nearest_negative, farthest))[:, 0]
    gap = hardest_positive - hardest_negative
    terms = tf.nn.softplus(gap) if soft else tf.maximum(gap + margin, 0.0)
    count = tf.cast(tf.shape(pdist)[0], pdist.dtype)
    return _no_gradient_if(_degenerate(labels), tf.reduce_sum(terms)), count


def _soft_triplet_sum(positive_d, valid, pdist, negative):
    """Sum of softplus(d(a, p) - d(a, n)) over all valid triplets, in O(B²) memory.

    Loops over the K positive slots (O(B²·K) time) with a hand-written gradient, so the backward
    pass does not keep K B×B intermediates.
    """
    dtype = pdist.dtype
    valid_f = tf.cast(valid, dtype)
    negative_f = tf.cast(negative, dtype)
    num_slots = tf.shape(positive_d)[1]

    def weights(j):
        return valid_f[:, j : j + 1] * negative_f

    @tf.custom_gradient
    def total(positive_d, pdist):
        def body(j, acc):
            x = positive_d[:, j : j + 1] - pdist
            return j + 1, acc + tf.reduce_sum(weights(j) * tf.nn.softplus(x))

        _, value = tf.while_loop(
            lambda j, _: j < num_slots, body, (tf.constant(0), tf.zeros([], dtype))
        )

        def grad(upstream):
            def grad_body(j, grad_positive, grad_pdist):
                s = weights(j) * tf.sigmoid(positive_d[:, j : j + 1] - pdist)
                return j + 1, grad_positive.write(j, tf.reduce_sum(s, axis=1)), grad_pdist - s

            _, grad_positive, grad_pdist = tf.while_loop(
                lambda j, *_: j < num_slots,
                grad_body,
                (tf.constant(0), tf.TensorArray(dtype, size=num_slots), tf.zeros_like(pdist)),
            )
            grad_positive = tf.reshape(tf.transpose(grad_positive.stack()), tf.shape(positive_d))
            return upstream * grad_positive, upstream * grad_pdist

        return value, grad

    return total(positive_d, pdist)


def batch_all_loss_terms(
    y_true, y_pred, margin=1.0, soft=False, distance_metric="L2", anchor_indices=None
):
    """Sum and count of the batch-all triplet loss terms of some anchors.

    Hard margin: sum of `d(a, p) - d(a, n) + margin` over the *active* triplets (those where it
    is > 0) and their number — O(B² log K) time via sorted positives. Soft margin: sum of
    `log(1 + exp(d(a, p) - d(a, n)))` over all valid triplets and their number — O(B²·K) time.
    Memory O(B²) in both.

    Args:
      y_true: [B] or [B, 1] labels of the whole batch.
      y_pred: [B, D] embeddings of the whole batch.
      margin: margin term (unused when `soft`).
      soft: soft-margin variant.
      distance_metric: "L2", "squared-L2", "angular" or a callable.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      `(loss_sum, num_triplets)`, float scalars.
    """
    labels, pdist, negative, valid, positive_d, _ = _prepare(
        y_true, y_pred, distance_metric, anchor_indices, dense=True
    )
    if soft:
        loss_sum = _soft_triplet_sum(positive_d, valid, pdist, negative)
        num_valid = tf.reduce_sum(tf.cast(valid, pdist.dtype), axis=1)
        num_negative = tf.reduce_sum(tf.cast(negative, pdist.dtype), axis=1)
        count = tf.reduce_sum(num_valid * num_negative)
    else:
        plain = tf.stop_gradient(pdist)
        keys = mining.margin_keys(positive_d, valid, margin)
        active, counts = mining.margin_counts(plain, negative, keys)
        # Given which triplets are active, the loss is linear in the distances:
        # sum over active (a, p, n) of d(a, p) + margin - d(a, n)
        #   = sum_(a, p) counts(a, p) (d(a, p) + margin) - sum_(a, n) active(a, n) d(a, n),
        # taken per anchor row first to keep the float32 cancellation small.
        counts = tf.cast(counts, pdist.dtype)
        positive_part = tf.reduce_sum(tf.where(valid, counts * (positive_d + margin), 0.0), axis=1)
        negative_part = tf.reduce_sum(tf.cast(active, pdist.dtype) * pdist, axis=1)
        loss_sum = tf.reduce_sum(positive_part - negative_part)
        count = tf.reduce_sum(tf.where(valid, counts, 0.0))
    return _no_gradient_if(_degenerate(labels), loss_sum), count


def _mean(terms):
    loss_sum, count = terms
    return tf.math.divide_no_nan(loss_sum, count)


def triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2", anchor_indices=None):
    """Triplet loss with FaceNet semi-hard negative mining, as `tfa.losses.triplet_semihard_loss`.

    Mean over positive pairs (a, p) of `max(d(a, p) - d(a, n) + margin, 0)`, `n` the closest
    negative farther than `p`, else the farthest negative (Schroff et al. 2015).

    Args:
      y_true: [B] or [B, 1] integer (or float) class labels.
      y_pred: [B, D] embeddings (usually L2-normalised).
      margin: margin term.
      distance_metric: "L2", "squared-L2", "angular" or a callable (embeddings -> [B, B]).
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      float32 scalar (not scaled for distribution). 0 with zero gradient without positive pair.
    """
    return _mean(semihard_loss_terms(y_true, y_pred, margin, distance_metric, anchor_indices))


def triplet_hard_loss(
    y_true, y_pred, margin=1.0, soft=False, distance_metric="L2", anchor_indices=None
):
    """Batch-hard triplet loss (Hermans et al. 2017), as `tfa.losses.triplet_hard_loss`.

    Args:
      y_true: [B] or [B, 1] class labels.
      y_pred: [B, D] embeddings.
      margin: margin term (unused when `soft`).
      soft: soft-margin variant `log(1 + exp(hp - hn))`.
      distance_metric: "L2", "squared-L2", "angular" or a callable.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      float32 scalar: mean over anchors (not scaled for distribution).
    """
    return _mean(hard_loss_terms(y_true, y_pred, margin, soft, distance_metric, anchor_indices))


def triplet_batch_all_loss(
    y_true, y_pred, margin=1.0, soft=False, distance_metric="L2", anchor_indices=None
):
    """Batch-all triplet loss: mean over active triplets (all valid triplets when `soft`).

    Args:
      y_true: [B] or [B, 1] class labels.
      y_pred: [B, D] embeddings.
      margin: margin term (unused when `soft`).
      soft: soft-margin variant `log(1 + exp(d(a, p) - d(a, n)))` over all valid triplets.
      distance_metric: "L2", "squared-L2", "angular" or a callable.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      float32 scalar (not scaled for distribution); 0 when no triplet is active.
    """
    return _mean(
        batch_all_loss_terms(y_true, y_pred, margin, soft, distance_metric, anchor_indices)
    )
