"""Image bytes: format checks, host-side probing, and the decode + resize map of the samplers.

Sources keep images either as uint8 arrays or as their encoded bytes (PNG, JPEG, BMP, GIF),
whichever is smaller. Encoded images are decoded after sampling, a batch at a time, inside the
input pipeline's parallel map (`decode_fn`); the same function decodes on the host when a caller
needs the pixels (`decode_images`). Every image of a source decodes to one shape (H, W, C):
either all images share their size, or they are resized to `image_size` × `image_size`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from siamese_tf.errors import InputError

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "GIF")

# Magic numbers at the start of each supported file format.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)

# TensorFlow prefixes op errors with the function that raised them: noise to a user.
_TF_PREFIX = re.compile(r"\{\{[^}]*\}\}\s*")


def sniff_format(data: bytes) -> str | None:
    """Returns "PNG", "JPEG", "BMP" or "GIF" from the file's first bytes, or None."""
    head = bytes(data[:8])
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def check_format(data: bytes, name: str) -> str:
    """Checks that `data` is a supported image file by its content (not its file name).

    Args:
      data: the file's bytes.
      name: the file name or example id, for the message.

    Returns:
      The format name.

    Raises:
      InputError: empty or not a PNG / JPEG / BMP / GIF file (the message names `name`).
    """
    if len(data) == 0:
        raise InputError(f"image {name} is empty (0 bytes)")
    found = sniff_format(data)
    if found is None:
        raise InputError(
            f"unsupported image file {name}: not {', '.join(SUPPORTED_FORMATS)} "
            f"(starts with {bytes(data[:8])!r})"
        )
    return found


def _tf_message(err: tf.errors.OpError) -> str:
    return " ".join(_TF_PREFIX.sub("", err.message).split())


def _probe_one(data):
    """(height, width, is_gray) of one encoded image; GIFs give their first frame."""
    image = tf.io.decode_image(data, channels=0, expand_animations=False)
    shape = tf.shape(image)
    rgb = image[..., : tf.minimum(shape[2], 3)]
    # GIF (and some PNG / BMP) store grayscale pictures as RGB: call them gray when R = G = B.
    gray = tf.logical_or(
        shape[2] <= 2,
        tf.reduce_all(tf.equal(rgb, rgb[..., :1])),
    )
    return shape[0], shape[1], gray


def probe_encoded(items: Sequence[bytes], names: Sequence[str]) -> tuple:
    """Checks and measures encoded images on the host, decoding them in parallel.

    Args:
      items: encoded images (bytes).
      names: a name per image (file path or example id) for error messages.

    Returns:
      `(heights, widths, gray)`: int64 [n], int64 [n], bool [n] (True when the picture has one
      channel, or R = G = B everywhere).

    Raises:
      InputError: an empty, unsupported or undecodable image; the message names it.
    """
    for data, name in zip(items, names, strict=True):
        check_format(data, name)
    if len(items) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, bool)
    ds = (
        tf.data.Dataset.from_tensor_slices(tf.constant(list(items), tf.string))
        .map(_probe_one, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(4096)
    )
    try:
        parts = [tuple(np.asarray(t) for t in batch) for batch in ds]
    except tf.errors.OpError:
        # The pipeline does not say which element failed: find it, one at a time.
        for data, name in zip(items, names, strict=True):
            try:
                tf.io.decode_image(data, channels=0, expand_animations=False)
            except tf.errors.OpError as err:
                raise InputError(f"cannot decode image {name}: {_tf_message(err)}") from None
        raise
    heights, widths, gray = (np.concatenate(p) for p in zip(*parts, strict=True))
    return heights.astype(np.int64), widths.astype(np.int64), gray.astype(bool)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Converts a decoded uint8 image [H, W, n] (n = 1..4) to `channels` (1 or 3) channels."""
    n = tf.shape(image)[-1]
    if channels == 1:
        return tf.cond(
            n >= 3,
            lambda: tf.image.rgb_to_grayscale(image[..., :3]),
            lambda: image[..., :1],
        )
    if channels == 3:
        return tf.cond(
            n >= 3,
            lambda: image[..., :3],
            lambda: tf.image.grayscale_to_rgb(image[..., :1]),
        )
    raise InputError(f"encoded images decode to 1 or 3 channels, got {channels}")


def resize_uint8(images: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
    """Resizes uint8 images ([H, W, C] or [B, H, W, C]) to `size` = (H', W'), as uint8.

    Bilinear with antialiasing, so downscaling averages instead of aliasing.
    """
    resized = tf.image.resize(images, size, method="bilinear", antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(resized, 0.0, 255.0)), tf.uint8)


def decode_one(data: tf.Tensor, image_shape: Sequence[int]) -> tf.Tensor:
    """Decodes one encoded image to uint8 `image_shape` (H, W, C), resizing when it differs."""
    height, width, channels = (int(d) for d in image_shape)
    image = to_channels(tf.io.decode_image(data, channels=0, expand_animations=False), channels)
    shape = tf.shape(image)
    same_size = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    image = tf.cond(same_size, lambda: image, lambda: resize_uint8(image, (height, width)))
    return tf.ensure_shape(image, (height, width, channels))


def decode_fn(
    image_shape: Sequence[int], *, encoded: bool, stored_shape: Sequence[int] | None = None
) -> Callable | None:
    """The batch function from stored images to uint8 [B, H, W, C], or None when it is identity.

    Args:
      image_shape: (H, W, C) after decoding and resizing.
      encoded: the stored images are encoded bytes [B] (else uint8 [B, h, w, c]).
      stored_shape: (h, w, c) of stored uint8 images (ignored when `encoded`).

    Returns:
      `fn(batch) -> uint8 [B, H, W, C]`, run in the input pipeline's parallel map; None when
      the stored images already have `image_shape`.
    """
    image_shape = tuple(int(d) for d in image_shape)
    if encoded:

        def decode_batch(batch):  # Runs in the input pipeline (or on host for decode_images).
            return tf.map_fn(
                lambda data: decode_one(data, image_shape),
                batch,
                fn_output_signature=tf.TensorSpec(image_shape, tf.uint8),
            )

        return decode_batch
    if stored_shape is None or tuple(int(d) for d in stored_shape) == image_shape:
        return None

    def resize_batch(batch):  # Runs in the input pipeline.
        return tf.ensure_shape(resize_uint8(batch, image_shape[:2]), (None, *image_shape))

    return resize_batch


def compose(first: Callable | None, second: Callable | None) -> Callable | None:
    """`second(first(x))`, skipping whichever is None."""
    if first is None:
        return second
    if second is None:
        return first
    return lambda batch: second(first(batch))


def decode_images(items, map_fn: Callable | None, batch_size: int = 256) -> np.ndarray:
    """Applies a source's `map_fn` on the host, in parallel batches. Runs on host.

    Args:
      items: stored images: object array of bytes [n], or uint8 [n, h, w, c].
      map_fn: the source's batch function, or None (the items are returned as they are).
      batch_size: images per decoded batch.

    Returns:
      uint8 numpy array [n, H, W, C] (n >= 1).
    """
    if map_fn is None:
        return np.asarray(items)
    items = np.asarray(items)
    if items.dtype == object:
        tensor = tf.constant(list(items), tf.string) if items.size else tf.zeros([0], tf.string)
    else:
        tensor = tf.convert_to_tensor(items)
    ds = (
        tf.data.Dataset.from_tensor_slices(tensor)
        .batch(batch_size)
        .map(map_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )
    return np.concatenate([np.asarray(batch) for batch in ds])


def decode_encoded_images(items, image_shape, names) -> np.ndarray:
    """Decodes encoded images to uint8 `image_shape`, converting channels and resizing.

    The resize is the training pipeline's (`siamese_tf.data.images.decode_one`: bilinear,
    antialiased, rounded), so files of another size are treated exactly as a source resized
    with `image_size` was. PNGs decode with TensorFlow: 1-bit PNGs (Omniglot) become 0 / 255,
    the polarity of the TFDS Omniglot images (black strokes, 0, on white, 255).

    Raises:
      InputError: an empty, unsupported or undecodable image (the message names it).
    """
    items = list(items)
    probe_encoded(items, list(names))  # Names the bad file, if any.
    encoded = np.empty(len(items), dtype=object)
    encoded[:] = items
    return decode_images(encoded, decode_fn(image_shape, encoded=True))
