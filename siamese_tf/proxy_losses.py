"""Proxy losses: ArcFace (additive angular margin) and CosFace (additive cosine margin).

ArcFace (Deng et al. 2019) and CosFace (Wang et al. 2018) take the cosines of the embeddings to
learned class proxies (`siamese_tf.heads.ClassProxies`), apply the margin to the true class and
take a scaled softmax cross-entropy: ordinary `(images, labels)` batches, no P×K sampling. The
functional form behind `siamese_tf.losses.ArcFaceLoss`; results are float32 for float16 /
bfloat16 cosines.
"""

from __future__ import annotations

import math

import tensorflow as tf

from siamese_tf.distances import precise, safe_sqrt

ARCFACE_VARIANTS = ("arcface", "cosface")


def margin_cosines(y_true, cosines, margin=0.5, variant="arcface"):
    """The cosines with the true class's entry replaced by its margin version.

    ArcFace: `cos(theta + m)` where `theta + m <= pi`, and beyond that `cos(theta) - m sin(m)`
    (insightface's continuation, which keeps the logit decreasing in theta); computed as
    `cos theta cos m - sin theta sin m` with a square root whose gradient is 0, not inf, at
    `|cos theta| = 1`, so gradients are finite everywhere. CosFace: `cos theta - m`.

    Args:
      y_true: [B] int class indices in [0, C).
      cosines: [B, C] cosines of the embeddings to the class proxies.
      margin: additive angular margin in radians (arcface) or additive cosine margin (cosface).
      variant: "arcface" or "cosface".

    Returns:
      [B, C] float tensor.

    Raises:
      ValueError: unknown variant.
    """
    if variant not in ARCFACE_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(ARCFACE_VARIANTS)}")
    cosines = precise(cosines)
    labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
    target = tf.gather(cosines, labels[:, None], batch_dims=1)[:, 0]
    if variant == "cosface":
        adjusted = target - margin
    else:
        sine = safe_sqrt(tf.maximum(1.0 - tf.square(target), 0.0))
        adjusted = target * math.cos(margin) - sine * math.sin(margin)
        adjusted = tf.where(
            target > math.cos(math.pi - margin), adjusted, target - math.sin(margin) * margin
        )
    one_hot = tf.one_hot(labels, tf.shape(cosines)[1], dtype=cosines.dtype)
    return cosines + one_hot * (adjusted - target)[:, None]


def arcface_loss(y_true, cosines, margin=0.5, scale=64.0, variant="arcface"):
    """Per-example ArcFace / CosFace loss: softmax cross-entropy of `scale` × margin cosines.

    Args:
      y_true: [B] (or [B, 1]) int class indices in [0, C).
      cosines: [B, C] cosines of the embeddings to the class proxies.
      margin: additive angular margin in radians (arcface, default 0.5) or additive cosine
        margin (cosface, e.g. 0.35).
      scale: the logit scale s. Default 64.
      variant: "arcface" or "cosface".

    Returns:
      [B] losses (not reduced, not scaled): float32, float64 for float64 cosines.
    """
    return _with_derivative(_arcface_rows, y_true, cosines, margin, scale, variant)


def arcface_mean_loss(y_true, cosines, margin=0.5, scale=64.0, variant="arcface"):
    """The mean of `arcface_loss` over the batch (0 for an empty batch), in one compiled pass.

    What `ArcFaceLoss` computes without sample weights: the mean and its derivative come out of
    the compiled pass, so the backward is one product with the upstream scalar (Keras's own
    reduction around the per-example losses added a dozen small ops, 7% of a B=1024 step).

    Args:
      y_true: [B] (or [B, 1]) int class indices in [0, C).
      cosines: [B, C] cosines of the embeddings to the class proxies.
      margin: as `arcface_loss`.
      scale: as `arcface_loss`.
      variant: "arcface" or "cosface".

    Returns:
      float32 scalar (float64 for float64 cosines), not scaled for distribution.
    """
    return _with_derivative(_arcface_mean, y_true, cosines, margin, scale, variant)


def _with_derivative(compiled, y_true, cosines, margin, scale, variant):
    """`compiled(labels, cosines, ...) -> (value, d value / d cosines)` as a differentiable op:
    per-example values [B] (upstream [B]) or their mean (a scalar upstream)."""
    if variant not in ARCFACE_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(ARCFACE_VARIANTS)}")
    labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)

    @tf.custom_gradient
    def loss(cosines):
        value, derivative = compiled(labels, cosines, float(margin), float(scale), variant)
        per_example = value.shape.rank == 1
        return value, lambda upstream: (upstream[:, None] if per_example else upstream) * derivative

    return loss(precise(cosines))


@tf.function(jit_compile=True)
def _arcface_rows(labels, cosines, margin, scale, variant):
    return _arcface_terms(labels, cosines, margin, scale, variant)


@tf.function(jit_compile=True)
def _arcface_mean(labels, cosines, margin, scale, variant):
    values, derivative = _arcface_terms(labels, cosines, margin, scale, variant)
    inverse = tf.math.divide_no_nan(
        tf.ones([], values.dtype), tf.cast(tf.size(values), values.dtype)
    )
    return tf.reduce_sum(values) * inverse, derivative * inverse


# The largest logit / scale of a row is within `margin_gap` of the row's largest raw cosine (the
# true class's own cosine included): its cosine minus its margin version is at most
# 2 sin(m/2) (ArcFace, theta + m <= pi), m sin m (ArcFace beyond) or m (CosFace). While
# scale × gap is at most this, that raw maximum, read straight from the input, is a safe shift:
# no exponential overflows and the largest term is at least exp(-60), a normal float.
_RAW_PEAK_GAP_MAX = 60.0


def _margin_gap(margin, variant):
    if variant == "cosface":
        return margin
    return max(2.0 * math.sin(margin / 2.0), margin * math.sin(margin))


def _arcface_terms(labels, cosines, margin, scale, variant):
    """Per-example losses [B] and their derivative [B, C] with respect to the cosines.

    The derivative is written by hand and computed in the same compiled pass as the loss (as the
    pair losses' row functions do): autodiff of a compiled function ran a second compiled pass
    over the B×C matrix for the backward. The true class's cosine is gathered ([B]) and the
    softmax is taken over the other classes plus its margin logit, with one exponential per
    entry: the one-hot product and a second exponential for the softmax made this pass 2× slower
    (`python -m launch.benchmark --suite=mining`). Labels outside [0, C) give NaN, not an error:
    the trainer sizes C from the labels, and a NaN loss stops training.
    """
    num_classes = tf.shape(cosines)[1]
    in_range = tf.logical_and(labels >= 0, labels < num_classes)
    target = tf.gather(cosines, tf.clip_by_value(labels, 0, num_classes - 1)[:, None], batch_dims=1)
    target = target[:, 0]
    if variant == "cosface":
        adjusted, slope = target - margin, tf.ones_like(target)
    else:
        # As `margin_cosines`; d sine / d target = -target / sine, 0 where sine = 0 (safe_sqrt).
        sine = tf.sqrt(tf.maximum(1.0 - tf.square(target), 0.0))
        inside = target > math.cos(math.pi - margin)
        adjusted = tf.where(
            inside,
            target * math.cos(margin) - sine * math.sin(margin),
            target - math.sin(margin) * margin,
        )
        slope_inside = math.cos(margin) + math.sin(margin) * tf.math.divide_no_nan(target, sine)
        slope = tf.where(inside, slope_inside, tf.ones_like(target))
    is_target = tf.range(num_classes)[None, :] == labels[:, None]
    # `peak` (at least the row's largest logit / scale) is subtracted before the exponential so
    # that it cannot overflow.
    if 0.0 <= margin <= math.pi and scale * _margin_gap(margin, variant) <= _RAW_PEAK_GAP_MAX:
        # One pass less over the matrix than masking the true class out first (1.3x faster at
        # B=4096, C=1024).
        peak = tf.reduce_max(cosines, axis=1)
    else:
        # Cosines are >= -1, so -2 is below every other class.
        others = tf.where(is_target, tf.constant(-2.0, cosines.dtype), cosines)
        peak = tf.maximum(tf.reduce_max(others, axis=1), adjusted)
    exp_others = tf.where(
        is_target, tf.zeros([], cosines.dtype), tf.exp(scale * (cosines - peak[:, None]))
    )
    exp_target = tf.exp(scale * (adjusted - peak))
    total = tf.reduce_sum(exp_others, axis=1) + exp_target
    values = tf.math.log(total) + scale * (peak - adjusted)
    values = tf.where(in_range, values, tf.constant(float("nan"), values.dtype))
    # d loss / d logits = softmax - one_hot; d logits / d cosines = scale, times `slope` on the
    # true class.
    inverse = scale / total
    target_derivative = (inverse * exp_target - scale) * slope
    derivative = tf.where(is_target, target_derivative[:, None], exp_others * inverse[:, None])
    return values, derivative
