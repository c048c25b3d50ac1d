"""P×K and balanced pair batches of images: draw row ids, then read only those rows.

The draws are `siamese_tf.data.sampling.rows` (pure functions of (seed, stream, step)); this
module turns them into images. In-memory rows are gathered a block of steps at a time when the
block is small; rows of a prepared store are read step by step in a parallel map (each call reads
one batch's records). Either way decoding, resizing and `map_fn` run per step in a parallel map,
so memory and latency stay those of a few batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from siamese_tf.data.images import compose
from siamese_tf.data.sampling.rows import BLOCKS_IN_FLIGHT, Blocks, pair_blocks, pk_blocks
from siamese_tf.data.source import Source
from siamese_tf.errors import InputError

# Gather a whole block of steps at once (one tf.data call per S batches) while the block's
# stored images take at most this much memory; bigger images are gathered step by step.
_GATHER_BLOCK_BYTES = 16 << 20
# Bytes an encoded image is counted as when deciding how to gather.
_ENCODED_ROW_BYTES = 1024


@dataclasses.dataclass(frozen=True)
class _RowReader:
    """How a batch's rows become stored images inside the input pipeline."""

    gather: Callable  # int64 rows [n] -> stored images [n, ...]
    bytes_per_row: int
    in_memory: bool


def _unpack(images, labels, map_fn):
    """(row reader, labels, map_fn) from arrays or a `Source` (its decode runs first)."""
    if isinstance(images, Source):
        if labels is not None:
            raise InputError("pass either a Source or images and labels, not both")
        row_bytes = _ENCODED_ROW_BYTES if images.encoded else int(np.prod(images.stored_shape))
        reader = _RowReader(images.gather_fn(), row_bytes, images.in_memory)
        return reader, images.labels, compose(images.map_fn, map_fn)
    if labels is None:
        raise InputError("labels are required when images are an array")
    if len(images) != len(labels):
        raise InputError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
    tensor = tf.convert_to_tensor(images)
    if tensor.dtype == tf.string:
        row_bytes = _ENCODED_ROW_BYTES
    else:
        row_bytes = int(np.prod(tensor.shape[1:])) * tensor.dtype.size
    reader = _RowReader(lambda rows: tf.gather(tensor, rows), row_bytes, True)
    return reader, labels, map_fn


def _gathered_steps(blocks: Blocks, reader: _RowReader, rows_per_step: int, to_images, map_fn):
    """Per-step batches: rows read (a block at a time when small), then `map_fn` per step.

    `to_images(gather, *element)` turns a block (or one step) of row ids into stored images;
    `map_fn` (decode, resize, augment) runs per step in a parallel map, so its memory and
    latency stay those of one batch.
    """
    parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    block_bytes = blocks.block * rows_per_step * reader.bytes_per_row
    if reader.in_memory and block_bytes <= _GATHER_BLOCK_BYTES:
        # A block serves S steps: two in flight keep ahead of training and bound the memory.
        ds = blocks.steps(
            blocks.dataset.map(
                lambda *e: to_images(reader.gather, *e),
                num_parallel_calls=BLOCKS_IN_FLIGHT,
                deterministic=True,
            )
        )
        if map_fn is not None:
            ds = ds.map(lambda x, *rest: (_apply(map_fn, x), *rest), **parallel)
        return ds
    # Large images, or a store: each parallel call reads and decodes one step's rows.
    return blocks.steps().map(
        lambda *e: _apply_first(map_fn, to_images(reader.gather, *e)), **parallel
    )


def _apply(map_fn, x):
    """`map_fn` on images, or on both sides of a pair."""
    if isinstance(x, tuple):
        return tuple(map_fn(side) for side in x)
    return map_fn(x)


def _apply_first(map_fn, element):
    return element if map_fn is None else (_apply(map_fn, element[0]), *element[1:])


def pk_batches(
    images,
    labels=None,
    *,
    classes_per_batch: int,
    samples_per_class: int,
    seed: int,
    start_step: int = 0,
    stream: int = 0,
    class_weighting: str = "uniform",
    map_fn: Callable | None = None,
    prefetch: bool = True,
) -> tf.data.Dataset:
    """Dataset of P×K batches `(images [P·K, ...], labels [P·K])` from arrays or a `Source`.

    See `pk_indices` for the sampling guarantees. Rows are sampled first; only then are they
    gathered, decoded (a `Source`'s `map_fn`) and passed through `map_fn` (e.g. augmentation),
    in a parallel map.

    Args:
      images: a `Source`, or an array [N, ...] (kept as is; uint8 recommended).
      labels: integer labels [N] with an array; None with a `Source`.
      classes_per_batch: P.
      samples_per_class: K.
      seed: integer seed.
      start_step: first step to yield.
      stream: replica / worker id.
      class_weighting: "uniform" or "proportional".
      map_fn: optional function applied to each (decoded) batch of images.
      prefetch: add `prefetch(AUTOTUNE)` at the end.

    Returns:
      An infinite `tf.data.Dataset`.

    Raises:
      InputError: bad arguments or data (see `pk_indices`).
    """
    class_names = getattr(images, "class_names", None)
    reader, labels, map_fn = _unpack(images, labels, map_fn)
    blocks = pk_blocks(
        labels,
        classes_per_batch=classes_per_batch,
        samples_per_class=samples_per_class,
        seed=seed,
        start_step=start_step,
        stream=stream,
        class_weighting=class_weighting,
        class_names=class_names,
    )
    rows_per_step = int(classes_per_batch) * int(samples_per_class)

    def to_images(gather, rows, y):  # Runs in the input pipeline.
        return gather(rows), y

    ds = _gathered_steps(blocks, reader, rows_per_step, to_images, map_fn)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


def balanced_pairs(
    images,
    labels=None,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    stream: int = 0,
    class_weighting: str = "uniform",
    map_fn: Callable | None = None,
    prefetch: bool = True,
) -> tf.data.Dataset:
    """Dataset of balanced pair batches `((images_a, images_b), same)` from arrays or a `Source`.

    See `pair_indices` for the balance rule and the sampling guarantees. Both sides of a batch
    are gathered (and decoded) together, then split.

    Args:
      images: a `Source`, or an array [N, ...].
      labels: integer labels [N] with an array; None with a `Source`.
      batch_size: pairs per batch.
      seed: integer seed.
      start_step: first step to yield.
      stream: replica / worker id.
      class_weighting: "uniform" or "proportional".
      map_fn: optional function applied to each (decoded) batch of images.
      prefetch: add `prefetch(AUTOTUNE)` at the end.

    Returns:
      An infinite `tf.data.Dataset`; `same` is float32 1.0 / 0.0.

    Raises:
      InputError: bad arguments or data (see `pair_indices`).
    """
    class_names = getattr(images, "class_names", None)
    reader, labels, map_fn = _unpack(images, labels, map_fn)
    blocks = pair_blocks(
        labels,
        batch_size=batch_size,
        seed=seed,
        start_step=start_step,
        stream=stream,
        class_weighting=class_weighting,
        class_names=class_names,
    )

    def to_images(gather, a, b, same):  # Runs in the input pipeline.
        return (gather(a), gather(b)), same

    ds = _gathered_steps(blocks, reader, 2 * int(batch_size), to_images, map_fn)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds
