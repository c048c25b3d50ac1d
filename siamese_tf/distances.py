"""Distances between embeddings: B×B matrices for mining, per-pair distances, Keras layers.

Three metrics, named as in TensorFlow Addons:

* ``"L2"``: Euclidean distance ``||a - b||``;
* ``"squared-L2"``: ``||a - b||²``;
* ``"angular"``: ``1 - cos(a, b)`` (inputs are L2-normalised first), in [0, 2].

Numerics (why the code looks the way it does):

* Everything is computed in float32 when embeddings are float16 / bfloat16 (mixed precision):
  half precision cannot resolve the small differences mining compares.
* The Euclidean square root has a zero-safe gradient: ``d sqrt(x) / dx`` is infinite at 0, which
  turns duplicate embeddings (distance exactly 0) into NaN gradients. Our square root returns the
  subgradient 0 there instead; its values are those of a plain square root.
* The B×B matrix uses ``|a|² + |b|² - 2 a·b`` (O(B·D) memory, one matmul), clamps the round-off
  negatives to 0 and sets every self-distance to exactly 0, as TFA's ``pairwise_distance`` does,
  so losses built on it agree with TFA's to float32 round-off. Its gradient is hand-written:
  zero where a distance is zero, and accumulated per pair when only a few entries receive one,
  instead of two B×B×D matmuls. The mining losses go one step further: they differentiate only
  the entries they select (`selectable_distances`), whose gradient goes straight to the
  embeddings without a B×B tensor in the backward pass. Per-pair distances use the difference
  ``a - b`` directly (exact 0 for identical inputs).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

METRICS = ("L2", "squared-L2", "angular")

_HALF = (tf.float16, tf.bfloat16)


def precise(x) -> tf.Tensor:
    """Float tensor in at least float32 (half precision is cast up, float64 is kept)."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating or x.dtype in _HALF:
        x = tf.cast(x, tf.float32)
    return x


def check_metric(metric) -> None:
    """Raises ValueError unless `metric` is one of `METRICS` or a callable.

    Args:
      metric: a metric name or a callable.

    Raises:
      ValueError: unknown metric name.
    """
    if callable(metric):
        return
    if metric not in METRICS:
        raise ValueError(
            f"unknown distance metric {metric!r}; use one of {', '.join(METRICS)} or a callable"
        )


@tf.custom_gradient
def safe_sqrt(x):
    """Square root of a non-negative tensor whose gradient is 0 (not inf) where `x` is 0.

    Args:
      x: float tensor, >= 0.

    Returns:
      `sqrt(x)`; the gradient is `0.5 / sqrt(x)` where `x > 0` and 0 where `x == 0`.
    """
    y = tf.sqrt(x)

    def grad(upstream):
        return tf.math.divide_no_nan(0.5 * upstream, y)

    return y, grad


def _pre_activation_gradient(upstream, distances, metric):
    """dL/d(squared distance, or cosine for angular) from dL/d(distance): 0 where it is 0."""
    if metric == "L2":
        return tf.math.divide_no_nan(0.5 * upstream, distances)
    zero = tf.zeros_like(distances)
    return tf.where(distances > 0, -upstream if metric == "angular" else upstream, zero)


def _pair_gradients(weights, rows, cols, x, y, metric):
    """Gradients to `x` and `y` of pairs `(x[rows[i]], y[cols[i]])` with pre-activation
    gradients `weights` [N], accumulated per row: O(N·D), no [A, B] tensor."""
    weights = weights[:, None]
    if metric == "angular":  # d cos / dx_a = y_b, d cos / dy_b = x_a
        to_x = weights * tf.gather(y, cols)
        to_y = weights * tf.gather(x, rows)
    else:  # d |x_a - y_b|² / dx_a = 2 (x_a - y_b) = -d / dy_b
        to_x = 2.0 * weights * (tf.gather(x, rows) - tf.gather(y, cols))
        to_y = -to_x
    return (
        tf.math.unsorted_segment_sum(to_x, rows, tf.shape(x)[0]),
        tf.math.unsorted_segment_sum(to_y, cols, tf.shape(y)[0]),
    )


def _distance_matrix(x, y, coords, metric):
    """[A, B] distances between the rows of `x` and `y` with a hand-written gradient.

    Forward: TFA's formulas (Gram trick for L2 / squared-L2, `1 - x·y` of normalised rows for
    angular), round-off negatives clamped to 0, the entries at `coords` (self-distances) set to
    exactly 0 (round-off leaves ~1e-7 there, whose square root is ~3e-4).

    Backward: 0 wherever a distance is 0 (self, duplicates, clamped round-off), never inf/NaN;
    only the output is kept. Mining losses send a gradient to a few entries per row (the
    selected pairs), so when at most A·B/D entries are non-zero the gradient is accumulated per
    pair (O(nnz·D)) instead of by two [A, B] × [B, D] matmuls.
    """
    angular = metric == "angular"

    @tf.custom_gradient
    def matrix_fn(x, y):
        if angular:
            out = tf.nn.relu(1.0 - tf.matmul(x, y, transpose_b=True))
        else:
            x_sq = tf.reduce_sum(tf.square(x), axis=1, keepdims=True)
            y_sq = tf.reduce_sum(tf.square(y), axis=1, keepdims=True)
            # Scaling the [*, D] operand by -2 (exact in floating point) instead of the [A, B]
            # product saves an A×B temporary; the values are TFA's `(|x|² + |y|²) - 2 x·y`.
            gram = tf.matmul(-2.0 * x, y, transpose_b=True)
            out = tf.nn.relu((x_sq + tf.transpose(y_sq)) + gram)
            if metric == "L2":
                out = tf.sqrt(out)
        out = tf.tensor_scatter_nd_update(out, coords, tf.zeros([tf.shape(coords)[0]], out.dtype))

        def grad(upstream):
            g = _pre_activation_gradient(upstream, out, metric)
            num_x, num_y = tf.shape(x)[0], tf.shape(y)[0]
            dim = tf.cast(tf.shape(x)[1], tf.int64)
            nonzero = tf.math.count_nonzero(g)
            sparse = nonzero * tf.maximum(dim, 1) <= tf.cast(num_x * num_y, tf.int64)

            def by_pairs():
                where = tf.where(tf.not_equal(g, 0))
                weights = tf.gather_nd(g, where)
                return _pair_gradients(weights, where[:, 0], where[:, 1], x, y, metric)

            def by_matmul():
                grad_x = tf.matmul(g, y)
                grad_y = tf.matmul(g, x, transpose_a=True)
                if angular:
                    return grad_x, grad_y
                row_sum = tf.reduce_sum(g, axis=1, keepdims=True)
                col_sum = tf.transpose(tf.reduce_sum(g, axis=0, keepdims=True))
                return 2.0 * (row_sum * x - grad_x), 2.0 * (col_sum * y - grad_y)

            return tf.cond(sparse, by_pairs, by_matmul)

        return out, grad

    return matrix_fn(x, y)


def pairwise_distances(embeddings, metric="L2", anchor_indices=None) -> tf.Tensor:
    """Distance matrix between the rows of `embeddings`, stable at zero.

    Args:
      embeddings: [B, D] float tensor (half precision is computed in float32).
      metric: "L2", "squared-L2", "angular", or a callable mapping [B, D] embeddings to a [B, B]
        matrix (as TFA's `distance_metric`).
      anchor_indices: optional [A] int tensor: compute only these rows (anchors a replica owns,
        scored against the whole, e.g. all-gathered, batch). Default: all rows.

    Returns:
      float32 (float64 for float64 input) tensor [A, B] (A = B by default) with
      `out[i, j] = d(embeddings[anchor_indices[i]], embeddings[j])`, exact zeros at the anchors'
      own columns, and a finite gradient everywhere (0 where a distance is 0).

    Raises:
      ValueError: unknown metric name.
    """
    check_metric(metric)
    embeddings = precise(embeddings)
    if callable(metric):
        matrix = precise(metric(embeddings))
        if anchor_indices is not None:
            matrix = tf.gather(matrix, anchor_indices)
        return matrix
    anchors, embeddings, coords = _operands(embeddings, metric, anchor_indices)
    return _distance_matrix(anchors, embeddings, coords, metric)


def _operands(embeddings, metric, anchor_indices):
    """`(anchors [A, D], embeddings [B, D], self-distance coordinates [A, 2])` of a matrix."""
    if metric == "angular":
        embeddings = tf.math.l2_normalize(embeddings, axis=1)
    if anchor_indices is None:
        anchors = embeddings
        self_columns = tf.range(tf.shape(embeddings)[0])
    else:
        self_columns = tf.cast(tf.reshape(anchor_indices, [-1]), tf.int32)
        anchors = tf.gather(embeddings, self_columns)
    coords = tf.stack([tf.range(tf.shape(self_columns)[0]), self_columns], axis=1)
    return anchors, embeddings, coords


def selectable_distances(embeddings, metric="L2", anchor_indices=None):
    """The distance matrix for mining, and its selected entries with a per-pair gradient.

    Mining losses differentiate a few entries per row (each anchor's positives and mined
    negatives). Gathered from `pairwise_distances`, their gradient is first scattered into a
    dense [A, B] tensor that the matrix's backward pass then scans: five passes over the matrix,
    as long as the forward pass itself at B=4096. `select` sends the gradient of its entries
    straight to the embeddings instead, O(A·K·D), and the matrix is not kept for the backward.

    Args:
      embeddings: [B, D] float tensor (half precision is computed in float32).
      metric: "L2", "squared-L2", "angular" or a callable (as `pairwise_distances`; a callable
        metric's entries are gathered from its differentiable matrix).
      anchor_indices: optional [A] int rows (default: all).

    Returns:
      `(matrix, select)`: the [A, B] `pairwise_distances` without gradient, and
      `select(columns [A, K] int) -> [A, K]` with `out[i, k] = matrix[i, columns[i, k]]`,
      differentiable with respect to `embeddings` (0 where a distance is 0, as the matrix's).

    Raises:
      ValueError: unknown metric name.
    """
    check_metric(metric)
    if callable(metric):
        matrix = pairwise_distances(embeddings, metric, anchor_indices)
        return tf.stop_gradient(matrix), lambda columns: tf.gather(matrix, columns, batch_dims=1)
    anchors, others, coords = _operands(precise(embeddings), metric, anchor_indices)
    matrix = tf.stop_gradient(_distance_matrix(anchors, others, coords, metric))

    def select(columns):
        values = tf.gather(matrix, columns, batch_dims=1)
        return _selected_entries(anchors, others, columns, values, metric)

    return matrix, select


def _selected_entries(x, y, columns, values, metric):
    """`values` (entries `[i, columns[i, k]]` of the x-to-y matrix) with a per-pair gradient."""
    columns = tf.cast(columns, tf.int32)

    @tf.custom_gradient
    def entries(x, y):
        def grad(upstream):
            g = _pre_activation_gradient(upstream, values, metric)
            rows = tf.broadcast_to(tf.range(tf.shape(columns)[0])[:, None], tf.shape(columns))
            rows, cols = tf.reshape(rows, [-1]), tf.reshape(columns, [-1])
            return _pair_gradients(tf.reshape(g, [-1]), rows, cols, x, y, metric)

        return tf.identity(values), grad

    return entries(x, y)


def pair_distances(a, b, metric="L2") -> tf.Tensor:
    """Distance of each pair `(a[i], b[i])`.

    Args:
      a: [B, D] float tensor (or [..., D]).
      b: same shape as `a`.
      metric: "L2", "squared-L2", "angular" or a callable `(a, b) -> [B]`.

    Returns:
      float32 [B] (the leading shape of `a`); 0 with a finite (zero) gradient for identical
      inputs.

    Raises:
      ValueError: unknown metric name.
    """
    check_metric(metric)
    a, b = precise(a), precise(b)
    if callable(metric):
        return precise(metric(a, b))
    if metric == "angular":
        cosine = tf.reduce_sum(tf.math.l2_normalize(a, -1) * tf.math.l2_normalize(b, -1), -1)
        return tf.maximum(1.0 - cosine, 0.0)
    squared = tf.reduce_sum(tf.square(a - b), axis=-1)
    return safe_sqrt(squared) if metric == "L2" else squared


class _PairDistance(keras.layers.Layer):
    """Base of the distance layers: `layer(a, b)` or `layer([a, b])` -> [B] distances."""

    metric: str | Callable = "L2"

    def __init__(self, **kwargs):
        # float32 by default so that, under a mixed-precision policy, the inputs are cast up
        # before the distance is computed (a float16 distance loses the small differences).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, a, b=None):
        if b is None:
            a, b = a
        return pair_distances(a, b, self.metric)


@keras.saving.register_keras_serializable(package="siamese_tf")
class L2Distance(_PairDistance):
    """Euclidean distance of each pair: `L2Distance()(a, b) -> [B]` (zero-safe gradient)."""

    metric = "L2"


@keras.saving.register_keras_serializable(package="siamese_tf")
class SquaredL2Distance(_PairDistance):
    """Squared Euclidean distance of each pair: `SquaredL2Distance()(a, b) -> [B]`."""

    metric = "squared-L2"


@keras.saving.register_keras_serializable(package="siamese_tf")
class AngularDistance(_PairDistance):
    """Angular distance `1 - cos(a, b)` of each pair: `AngularDistance()(a, b) -> [B]`."""

    metric = "angular"


@keras.saving.register_keras_serializable(package="siamese_tf")
class L2Normalization(keras.layers.UnitNormalization):
    """Deprecated: loads `.keras` files whose encoders ended in our own normalisation layer.

    Encoders now end in `keras.layers.UnitNormalization(dtype="float32")`; the old `epsilon`
    is accepted and ignored (the two differ only for embeddings of norm < 1e-6).
    """

    def __init__(self, axis=-1, epsilon=None, **kwargs):
        super().__init__(axis=axis, **kwargs)
