"""Stateless image augmentation: random affine distortions seeded per batch.

Koch et al. (2015) trained their Omniglot Siamese net with affine distortions (rotation, shear,
scale, translation). Drawing the parameters with stateless ops from the batch's step seed keeps
the pipeline a pure function of (seed, stream, step), so resumed runs replay identical batches —
a `keras.layers.RandomRotation` in the pipeline would carry hidden generator state.
"""

from __future__ import annotations

import dataclasses
import math

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class AffineRanges:
    """Ranges of the random affine distortion (Koch et al.'s defaults, in their units).

    Attributes:
      rotation_degrees: rotation uniform in [-r, r].
      shear: shear angle in radians, uniform in [-s, s] along each axis.
      scale: relative scale uniform in [1 - s, 1 + s] along each axis.
      translate: translation as a fraction of the image size, uniform in [-t, t].
      probability: each component is applied with this probability.
    """

    rotation_degrees: float = 10.0
    shear: float = 0.3
    scale: float = 0.2
    translate: float = 0.1
    probability: float = 0.5


def random_affine(images, seed, ranges: AffineRanges = AffineRanges()) -> tf.Tensor:
    """Applies an independent random affine distortion to each image. Runs in the input pipeline.

    Args:
      images: [B, H, W, C] images (any real or integer dtype; returned in the same dtype).
      seed: stateless seed [2] of this batch.
      ranges: the distortion ranges.

    Returns:
      The distorted images, same shape and dtype. Pixels mapped from outside the image repeat
      the nearest edge pixel (a white Omniglot background stays white).
    """
    dtype = images.dtype
    shape = tf.shape(images)
    batch = shape[0]
    height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    u = tf.random.stateless_uniform([batch, 7], seed=seed, minval=-1.0, maxval=1.0)
    on = (
        tf.random.stateless_uniform(
            [batch, 4], seed=tf.random.experimental.stateless_fold_in(seed, 1)
        )
        < ranges.probability
    )
    on = tf.cast(on, tf.float32)
    angle = on[:, 0] * u[:, 0] * ranges.rotation_degrees * math.pi / 180.0
    shear_x, shear_y = on[:, 1] * u[:, 1] * ranges.shear, on[:, 1] * u[:, 2] * ranges.shear
    scale_x, scale_y = (
        1.0 + on[:, 2] * u[:, 3] * ranges.scale,
        1.0 + on[:, 2] * u[:, 4] * ranges.scale,
    )
    shift_x = on[:, 3] * u[:, 5] * ranges.translate * width
    shift_y = on[:, 3] * u[:, 6] * ranges.translate * height
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Forward map A = R · Sh · S (about the image centre), then the shift. The transform op wants
    # the inverse map (output pixel -> input pixel), so invert the 2×2 part analytically.
    a00 = scale_x * (cos - sin * tf.tan(shear_y))
    a01 = scale_y * (cos * tf.tan(shear_x) - sin)
    a10 = scale_x * (sin + cos * tf.tan(shear_y))
    a11 = scale_y * (sin * tf.tan(shear_x) + cos)
    det = a00 * a11 - a01 * a10
    i00, i01, i10, i11 = a11 / det, -a01 / det, -a10 / det, a00 / det
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # input = inv · (output - centre - shift) + centre
    ox = cx + shift_x
    oy = cy + shift_y
    b0 = cx - (i00 * ox + i01 * oy)
    b1 = cy - (i10 * ox + i11 * oy)
    zeros = tf.zeros_like(a00)
    transforms = tf.stack([i00, i01, b0, i10, i11, b1, zeros, zeros], axis=1)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    if dtype.is_integer:
        out = tf.clip_by_value(tf.round(out), dtype.min, dtype.max)
    return tf.cast(out, dtype)


def augment_by_step(dataset, augment_fn, *, seed: int, stream: int = 0, start_step: int = 0):
    """Applies `augment_fn(images, seed)` to a sampler's batches, seeded by each batch's step.

    The sampler's element i is step `start_step + i`, so zipping with a counter gives every batch
    its step; the augmentation seed is `fold_in(step_seed(seed, stream, step), 1)`, independent
    of the sampling draws and a pure function of (seed, stream, step) like them.

    Args:
      dataset: per-step batches `(images, ...)` or `((images_a, images_b), ...)`, unprefetched.
      augment_fn: `fn(images, seed) -> images`, e.g. `random_affine`.
      seed: the augmentation seed (a run passes its `augmentation` sub-seed, `siamese_tf.seeds`).
      stream: replica / worker id of this pipeline.
      start_step: the sampler's first step.

    Returns:
      The dataset with augmented images.
    """
    from siamese_tf.data.sampling.rows import step_seed

    def apply(element, step):  # Runs in the input pipeline.
        images, *rest = element
        aug_seed = tf.random.experimental.stateless_fold_in(step_seed(seed, stream, step), 1)
        if isinstance(images, tuple):
            images = tuple(
                augment_fn(side, tf.random.experimental.stateless_fold_in(aug_seed, i))
                for i, side in enumerate(images)
            )
        else:
            images = augment_fn(images, aug_seed)
        return (images, *rest)

    steps = tf.data.Dataset.counter(start_step, dtype=tf.int64)
    return tf.data.Dataset.zip((dataset, steps)).map(
        apply, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
