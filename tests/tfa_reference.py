"""Reference: TensorFlow Addons' metric-learning losses, re-implemented for TF 2.21.

TFA (Apache-2.0) is retired and does not import on TensorFlow >= 2.16, so the tests and the
mining benchmark use this re-implementation of its formulation (tensorflow_addons/losses/
metric_learning.py, triplet.py and contrastive.py, last release): the same ops in the same
order — Gram-trick pairwise distance with the `error_mask` / 1e-16 square-root guard and a zeroed
diagonal, `1 - cos` angular distance clamped at 1e-16, the offset-and-mask `_masked_maximum` /
`_masked_minimum`, and the semi-hard mining that tiles the B×B distance matrix B times (a
[B², B] tensor: O(B³) memory). float16/bfloat16 embeddings are computed in float32 and the loss
is cast back, as TFA did.

Not a test module (no `test_` prefix): imported by tests and by `launch/benchmarks/mining.py`.
"""

import tensorflow as tf


def pairwise_distance(feature, squared=False):
    """TFA `metric_learning.pairwise_distance`: [B, B] (squared) Euclidean distances."""
    norms_row = tf.math.reduce_sum(tf.math.square(feature), axis=[1], keepdims=True)
    norms_col = tf.math.reduce_sum(tf.math.square(tf.transpose(feature)), axis=[0], keepdims=True)
    squared_d = tf.math.add(norms_row, norms_col) - 2.0 * tf.matmul(feature, tf.transpose(feature))
    # Round-off can make them slightly negative.
    squared_d = tf.math.maximum(squared_d, 0.0)
    error_mask = tf.math.less_equal(squared_d, 0.0)
    if squared:
        distances = squared_d
    else:
        distances = tf.math.sqrt(squared_d + tf.cast(error_mask, tf.float32) * 1e-16)
    distances = tf.math.multiply(distances, tf.cast(tf.math.logical_not(error_mask), tf.float32))
    num_data = tf.shape(feature)[0]
    off_diagonal = tf.ones_like(distances) - tf.linalg.diag(tf.ones([num_data]))
    return tf.math.multiply(distances, off_diagonal)


def angular_distance(feature):
    """TFA `metric_learning.angular_distance`: `1 - cos`, clamped at 1e-16."""
    feature = tf.math.l2_normalize(feature, axis=1)
    distances = 1 - tf.matmul(feature, tf.transpose(feature))
    return tf.maximum(distances, 1e-16)


def _masked_maximum(data, mask, dim=1):
    """Row-wise maximum over `mask`; the row minimum when the mask is empty."""
    row_min = tf.math.reduce_min(data, dim, keepdims=True)
    return tf.math.reduce_max(tf.math.multiply(data - row_min, mask), dim, keepdims=True) + row_min


def _masked_minimum(data, mask, dim=1):
    """Row-wise minimum over `mask`; the row maximum when the mask is empty."""
    row_max = tf.math.reduce_max(data, dim, keepdims=True)
    return tf.math.reduce_min(tf.math.multiply(data - row_max, mask), dim, keepdims=True) + row_max


def _distance_matrix(embeddings, distance_metric):
    if distance_metric == "L2":
        return pairwise_distance(embeddings, squared=False)
    if distance_metric == "squared-L2":
        return pairwise_distance(embeddings, squared=True)
    if distance_metric == "angular":
        return angular_distance(embeddings)
    return distance_metric(embeddings)


def _precise(embeddings):
    embeddings = tf.convert_to_tensor(embeddings)
    half = embeddings.dtype in (tf.float16, tf.bfloat16)
    return (tf.cast(embeddings, tf.float32) if half else embeddings), half


def triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2"):
    """TFA `triplet_semihard_loss` (tiled, O(B³) memory). NaN for a batch without positives."""
    labels = tf.convert_to_tensor(y_true)
    embeddings, half = _precise(y_pred)
    labels = tf.reshape(labels, [tf.shape(labels)[0], 1])
    pdist_matrix = _distance_matrix(embeddings, distance_metric)
    adjacency = tf.math.equal(labels, tf.transpose(labels))
    adjacency_not = tf.math.logical_not(adjacency)
    batch_size = tf.size(labels)

    # Row (p * B + a) of the tile holds anchor a's distances, compared with d(a, p).
    pdist_matrix_tile = tf.tile(pdist_matrix, [batch_size, 1])
    mask = tf.math.logical_and(
        tf.tile(adjacency_not, [batch_size, 1]),
        tf.math.greater(pdist_matrix_tile, tf.reshape(tf.transpose(pdist_matrix), [-1, 1])),
    )
    mask_final = tf.reshape(
        tf.math.greater(tf.math.reduce_sum(tf.cast(mask, dtype=tf.float32), 1, keepdims=True), 0.0),
        [batch_size, batch_size],
    )
    mask_final = tf.transpose(mask_final)
    adjacency_not = tf.cast(adjacency_not, dtype=tf.float32)
    mask = tf.cast(mask, dtype=tf.float32)

    # Closest negative farther than the positive ...
    negatives_outside = tf.reshape(
        _masked_minimum(pdist_matrix_tile, mask), [batch_size, batch_size]
    )
    negatives_outside = tf.transpose(negatives_outside)
    # ... else the farthest negative.
    negatives_inside = tf.tile(_masked_maximum(pdist_matrix, adjacency_not), [1, batch_size])
    semi_hard_negatives = tf.where(mask_final, negatives_outside, negatives_inside)

    loss_mat = tf.math.add(margin, pdist_matrix - semi_hard_negatives)
    mask_positives = tf.cast(adjacency, dtype=tf.float32) - tf.linalg.diag(tf.ones([batch_size]))
    num_positives = tf.math.reduce_sum(mask_positives)
    loss = tf.math.truediv(
        tf.math.reduce_sum(tf.math.maximum(tf.math.multiply(loss_mat, mask_positives), 0.0)),
        num_positives,
    )
    return tf.cast(loss, y_pred.dtype) if half else loss


def triplet_hard_loss(y_true, y_pred, margin=1.0, soft=False, distance_metric="L2"):
    """TFA `triplet_hard_loss`: hardest positive and negative per anchor, mean over anchors."""
    labels = tf.convert_to_tensor(y_true)
    embeddings, half = _precise(y_pred)
    labels = tf.reshape(labels, [tf.shape(labels)[0], 1])
    pdist_matrix = _distance_matrix(embeddings, distance_metric)
    adjacency = tf.math.equal(labels, tf.transpose(labels))
    adjacency_not = tf.cast(tf.math.logical_not(adjacency), dtype=tf.float32)
    hard_negatives = _masked_minimum(pdist_matrix, adjacency_not)
    batch_size = tf.size(labels)
    mask_positives = tf.cast(adjacency, dtype=tf.float32) - tf.linalg.diag(tf.ones([batch_size]))
    hard_positives = _masked_maximum(pdist_matrix, mask_positives)
    if soft:
        loss = tf.math.log1p(tf.math.exp(hard_positives - hard_negatives))
    else:
        loss = tf.maximum(hard_positives - hard_negatives + margin, 0.0)
    loss = tf.reduce_mean(loss)
    return tf.cast(loss, y_pred.dtype) if half else loss


def contrastive_loss(y_true, y_pred, margin=1.0):
    """TFA `contrastive_loss`: per-pair `y d² + (1 - y) max(margin - d, 0)²`."""
    y_pred = tf.convert_to_tensor(y_pred)
    y_true = tf.cast(y_true, y_pred.dtype)
    return y_true * tf.math.square(y_pred) + (1.0 - y_true) * tf.math.square(
        tf.math.maximum(margin - y_pred, 0.0)
    )
