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
  so losses built on it agree with TFA's to float32 round-off. Per-pair distances use the
  difference ``a - b`` directly (exact 0 for identical inputs).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

METRICS = ("L2", "squared-L2", "angular")

_HALF = (tf.float16, tf.bfloat16)


def _precise(x) -> tf.Tensor:
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


def _zero_self_and_clamp(matrix, coords, metric):
    """Clamps round-off negatives to 0, zeroes the self-distances, takes the root for "L2".

    One custom-gradient step instead of max / scatter / sqrt ops: the backward pass keeps only
    the output (one A×B tensor instead of three) and is 0 wherever the distance is 0 (self,
    duplicates, clamped round-off), never inf or NaN.
    """

    @tf.custom_gradient
    def finish(matrix):
        out = tf.nn.relu(matrix)
        if metric == "L2":
            out = tf.sqrt(out)
        num = tf.shape(coords)[0]
        # Self-distances are exactly 0 (round-off leaves ~1e-7, whose square root is ~3e-4).
        out = tf.tensor_scatter_nd_update(out, coords, tf.zeros([num], out.dtype))

        def grad(upstream):
            if metric == "L2":
                return tf.math.divide_no_nan(0.5 * upstream, out)
            return tf.where(out > 0, upstream, tf.zeros_like(upstream))

        return out, grad

    return finish(matrix)


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
    embeddings = _precise(embeddings)
    if callable(metric):
        matrix = _precise(metric(embeddings))
        if anchor_indices is not None:
            matrix = tf.gather(matrix, anchor_indices)
        return matrix
    if anchor_indices is None:
        anchors = embeddings
        self_columns = tf.range(tf.shape(embeddings)[0])
    else:
        self_columns = tf.cast(tf.reshape(anchor_indices, [-1]), tf.int32)
        anchors = tf.gather(embeddings, self_columns)
    if metric == "angular":
        anchors = tf.math.l2_normalize(anchors, axis=1)
        others = tf.math.l2_normalize(embeddings, axis=1)
        matrix = 1.0 - tf.matmul(anchors, others, transpose_b=True)
    else:
        anchor_sq = tf.reduce_sum(tf.square(anchors), axis=1, keepdims=True)
        other_sq = tf.reduce_sum(tf.square(embeddings), axis=1, keepdims=True)
        # Scaling the [*, D] operand by -2 (exact in floating point) instead of the [A, B]
        # product saves an A×B temporary; the values are TFA's `(|x|² + |y|²) - 2 x·y`.
        gram = tf.matmul(-2.0 * anchors, embeddings, transpose_b=True)
        matrix = (anchor_sq + tf.transpose(other_sq)) + gram
    coords = tf.stack([tf.range(tf.shape(self_columns)[0]), self_columns], axis=1)
    return _zero_self_and_clamp(matrix, coords, metric)


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
    a, b = _precise(a), _precise(b)
    if callable(metric):
        return _precise(metric(a, b))
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
class L2Normalization(keras.layers.Layer):
    """Scales each embedding to unit L2 norm (the usual last layer of an encoder).

    Computes in float32 by default (pass `dtype=` to override), so it is safe as the output
    layer of a mixed-precision model. A zero vector stays zero (no NaN).

    Args:
      axis: axis to normalise along.
      epsilon: lower bound on the squared norm (as `tf.math.l2_normalize`).
      **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, axis: int = -1, epsilon: float = 1e-12, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        return tf.math.l2_normalize(inputs, axis=self.axis, epsilon=self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, epsilon=self.epsilon)
        return config
