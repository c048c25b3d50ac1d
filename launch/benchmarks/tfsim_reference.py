"""TF Similarity 0.17's multi-similarity, circle and ArcFace losses, for the mining benchmark.

Re-implemented here from the formulas TF Similarity publishes (its documentation and the
docstrings of `tfsim.losses.MultiSimilarityLoss`, `CircleLoss`, `ArcFaceLoss`), so that the
benchmark runs the peer's algorithm without installing it (it pins TensorFlow < 2.16 and
Keras 2). Used for timing and memory only — the values are those of TF Similarity's
definitions, which differ from pytorch-metric-learning's (and ours) on purpose: TF Similarity
works on cosine *distances* `d = 1 - cos`, mines pairs for multi-similarity, keeps the
gradient through circle's weights and has no softplus there, and averages every loss over the
whole batch. Dense [B, B] formulations, differentiated by TensorFlow, as TF Similarity does.

* multi-similarity (`alpha=2, beta=40, epsilon=0.1, lmda=0.5, center=1`): positives kept when
  `d > min_negative(d) - epsilon`, negatives when `d < max_positive(d) + epsilon`; per anchor
  with both, `log(1 + sum_P exp(alpha (d + lmda - center))) / alpha +
  log(1 + sum_N exp(-beta (d + lmda - center))) / beta`; mean over the batch (0 for others).
* circle (`gamma=80, margin=0.4`): `w_p = relu(margin + d)`, `w_n = relu(1 + margin - d)` on
  their masks; per anchor with both, `log(1 + sum_P exp(-gamma w_p (margin - d))) +
  log(1 + sum_N exp(gamma w_n (1 - margin - d)))`; mean over the batch.
* ArcFace (`margin=0.5, scale=64`): `cos = clip(normalise(e) @ normalise(W), -1, 1)`, the true
  class's angle `acos(cos) + margin`, `scale * cos(angle)` logits, mean softmax cross-entropy.

Every `log(1 + sum exp)` is TF Similarity's: shifted by the row maximum of the unmasked matrix.
"""

from __future__ import annotations

import tensorflow as tf


def _cosine_distances(embeddings):
    unit = tf.math.l2_normalize(embeddings, axis=1)
    return 1.0 - tf.matmul(unit, unit, transpose_b=True)


def _masks(labels):
    labels = tf.reshape(labels, [-1])
    same = tf.equal(labels[:, None], labels[None, :])
    positive = tf.logical_and(same, tf.logical_not(tf.eye(tf.size(labels), dtype=tf.bool)))
    return positive, tf.logical_not(same)


def _log_one_plus_sum_exp(x, mask):
    """[B, 1] `log(1 + sum_mask exp(x))`, shifted by each row's maximum over all of x."""
    row_max = tf.reduce_max(x, axis=1, keepdims=True)
    shift = tf.stop_gradient(tf.where(tf.math.is_finite(row_max), row_max, tf.zeros_like(row_max)))
    total = tf.reduce_sum(tf.exp(x - shift) * tf.cast(mask, x.dtype), axis=1, keepdims=True)
    return tf.math.log(tf.exp(-shift) + total) + shift


def _masked_extreme(d, mask, largest):
    fill = tf.reduce_min(d) if largest else tf.reduce_max(d)
    picked = tf.where(mask, d, fill)
    reduce = tf.reduce_max if largest else tf.reduce_min
    return reduce(picked, axis=1, keepdims=True)


def multi_similarity_loss(
    labels, embeddings, alpha=2.0, beta=40.0, epsilon=0.1, lmda=0.5, center=1.0
):
    """TF Similarity's multi-similarity loss (see the module docstring); scalar."""
    d = _cosine_distances(embeddings)
    positive, negative = _masks(labels)
    keep_positive = tf.logical_and(d > _masked_extreme(d, negative, False) - epsilon, positive)
    keep_negative = tf.logical_and(d < _masked_extreme(d, positive, True) + epsilon, negative)
    valid = tf.logical_and(
        tf.reduce_any(keep_positive, axis=1), tf.reduce_any(keep_negative, axis=1)
    )
    shifted = d + lmda - center
    p_loss = _log_one_plus_sum_exp(alpha * shifted, keep_positive) / alpha
    n_loss = _log_one_plus_sum_exp(-beta * shifted, keep_negative) / beta
    return tf.reduce_mean((p_loss + n_loss)[:, 0] * tf.cast(valid, d.dtype))


def circle_loss(labels, embeddings, gamma=80.0, margin=0.4):
    """TF Similarity's circle loss on cosine distances (see the module docstring); scalar."""
    d = _cosine_distances(embeddings)
    positive, negative = _masks(labels)
    positive_f, negative_f = tf.cast(positive, d.dtype), tf.cast(negative, d.dtype)
    valid = tf.logical_and(tf.reduce_any(positive, axis=1), tf.reduce_any(negative, axis=1))
    weight_p = tf.maximum((margin + d) * positive_f, 0.0)
    weight_n = tf.maximum((1.0 + margin - d) * negative_f, 0.0)
    p_loss = _log_one_plus_sum_exp(-gamma * weight_p * (margin - d), positive)
    n_loss = _log_one_plus_sum_exp(gamma * weight_n * (1.0 - margin - d), negative)
    return tf.reduce_mean((p_loss + n_loss)[:, 0] * tf.cast(valid, d.dtype))


def arcface_loss(labels, embeddings, kernel, margin=0.5, scale=64.0):
    """TF Similarity's ArcFace loss with class kernel [D, C] (see the module docstring)."""
    cosines = tf.matmul(
        tf.math.l2_normalize(embeddings, axis=1), tf.math.l2_normalize(kernel, axis=0)
    )
    angles = tf.acos(tf.clip_by_value(cosines, -1.0, 1.0))
    angles += tf.one_hot(labels, tf.shape(kernel)[1], on_value=margin, dtype=angles.dtype)
    logits = scale * tf.cos(angles)
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    )
