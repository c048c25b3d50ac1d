"""`Source`: what a dataset is to the rest of the package — stored images, labels, a decode.

A source keeps its images in one of two places:

* in memory: uint8 [N, h, w, c], or a 1-D object array of encoded images (bytes), whichever is
  smaller (Omniglot's 32k PNGs then cost megabytes, not gigabytes);
* in a prepared store on disk or in a bucket (`siamese_tf.data.store`): `images` is then a
  `StoredRows`, the row ids of the store that belong to this source, read on demand.

Either way the samplers draw row ids first, then gather only those rows (`gather_fn`) and
decode / resize them (`map_fn`) in the input pipeline's parallel map; host-side readers
(`decoded_batches`, `decoded_images`) go through the same two functions, a bounded batch at a
time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import numpy as np
import tensorflow as tf

from siamese_tf.data import images as images_lib
from siamese_tf.data.class_index import as_int_labels
from siamese_tf.errors import InputError

STORAGES = ("auto", "stored", "decoded")

# Host memory a Python bytes object and its array slot cost beyond the payload.
_BYTES_OVERHEAD = 64


@runtime_checkable
class StoredRows(Protocol):
    """Rows of a dataset kept outside memory, read on demand (see `siamese_tf.data.store`).

    Attributes:
      encoded: rows read as encoded bytes (else as uint8 arrays of `stored_shape`).
      stored_shape: (h, w, c) of raw uint8 rows; None when encoded.
    """

    encoded: bool
    stored_shape: tuple | None

    def __len__(self) -> int: ...

    def take(self, rows) -> StoredRows:
        """The rows at these positions."""

    def read(self, rows) -> np.ndarray:
        """Host read: object array of bytes [n], or uint8 [n, h, w, c]."""

    def tf_read(self, rows: tf.Tensor) -> tf.Tensor:
        """In-pipeline read of int64 positions [n]: tf.string [n] or uint8 [n, h, w, c]."""


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """A dataset: stored images, int64 labels, and how to decode the images.

    Attributes:
      images: uint8 [N, h, w, c], a 1-D object array of encoded images (bytes), or
        `StoredRows` of a prepared store (nothing loaded).
      labels: int64 [N].
      name: the dataset's name (its spec when loaded by `load_source`).
      image_shape: (H, W, C) of decoded images; defaults to the stored shape of uint8 images
        and is required for encoded or stored ones. A uint8 source whose `image_shape` differs
        from its stored (h, w) is resized in `map_fn`.
      class_names: optional name of each label value (index = label), e.g. folder names.
      groups: optional int64 [N], a group per example that holds whole classes (Omniglot's
        alphabet, a folder's top level): `--split_by=group` holds out whole groups.
      group_names: optional name of each group value.

    Raises:
      InputError: empty, mismatched lengths, non-integer labels or groups, a class in two
        groups, or images that are neither uint8 [N, H, W, C], encoded bytes nor stored rows.
    """

    images: np.ndarray | StoredRows
    labels: np.ndarray
    name: str = "arrays"
    image_shape: tuple | None = None
    class_names: tuple | None = None
    groups: np.ndarray | None = None
    group_names: tuple | None = None

    def __post_init__(self):
        images = self.images
        stored = isinstance(images, StoredRows)
        if not stored and not isinstance(images, np.ndarray):
            images = np.asarray(images, dtype=object if _looks_encoded(images) else None)
        if len(images) != len(self.labels):
            raise InputError(
                f"source {self.name!r}: images and labels differ in length: "
                f"{len(images)} vs {len(self.labels)}"
            )
        if len(images) == 0:
            raise InputError(f"source {self.name!r} is empty: no examples")
        labels = as_int_labels(self.labels)
        if stored or images.dtype == object:
            if not stored and images.ndim != 1:
                raise InputError(f"encoded images must be a 1-D array, got shape {images.shape}")
            if self.image_shape is None:
                raise InputError("a source of encoded or stored images needs image_shape")
            shape = tuple(int(d) for d in self.image_shape)
            if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
                raise InputError(f"image_shape must be (H, W, 1 or 3), got {self.image_shape}")
        else:
            if images.ndim == 3:
                images = images[..., None]  # [N, H, W] grayscale
            if images.dtype != np.uint8 or images.ndim != 4:
                raise InputError(
                    f"source {self.name!r}: images must be uint8 [N, H, W, C] or encoded bytes, "
                    f"got {images.dtype} {images.shape}"
                )
            stored_shape = tuple(int(d) for d in images.shape[1:])
            shape = (
                stored_shape
                if self.image_shape is None
                else tuple(int(d) for d in self.image_shape)
            )
            if len(shape) != 3 or shape[2] != stored_shape[2] or min(shape) < 1:
                raise InputError(
                    f"image_shape {self.image_shape} does not fit stored images {stored_shape}: "
                    "only height and width can change"
                )
        if self.groups is not None:
            groups = as_int_labels(self.groups)
            if groups.size != labels.size:
                raise InputError(
                    f"source {self.name!r}: {groups.size} groups for {labels.size} examples"
                )
            object.__setattr__(self, "groups", groups)
        if self.group_names is not None:
            object.__setattr__(self, "group_names", tuple(str(n) for n in self.group_names))
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "image_shape", shape)
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def in_memory(self) -> bool:
        """Whether the images are held in memory (else read from a prepared store)."""
        return not isinstance(self.images, StoredRows)

    @property
    def encoded(self) -> bool:
        """Whether images are stored as encoded bytes (decoded by `map_fn`)."""
        if not self.in_memory:
            return self.images.encoded
        return self.images.dtype == object

    @property
    def stored_shape(self) -> tuple | None:
        """(h, w, c) of stored uint8 images; None for encoded images."""
        if not self.in_memory:
            return self.images.stored_shape
        return None if self.encoded else tuple(int(d) for d in self.images.shape[1:])

    @property
    def nbytes(self) -> int:
        """Host memory of the images (payload plus per-object overhead when encoded; 0 when
        they stay in a store)."""
        if not self.in_memory:
            return 0
        if self.encoded:
            return int(sum(len(b) for b in self.images)) + _BYTES_OVERHEAD * len(self)
        return int(self.images.nbytes)

    @property
    def map_fn(self) -> Callable | None:
        """Batch function: stored images [B, ...] → uint8 [B, H, W, C]; None when identity."""
        return images_lib.decode_fn(
            self.image_shape, encoded=self.encoded, stored_shape=self.stored_shape
        )

    def gather_fn(self) -> Callable:
        """Batch function: int64 rows [n] → their stored images, run in the input pipeline.

        In memory this gathers from a constant built once here; from a store it reads only
        those rows.
        """
        if not self.in_memory:
            return self.images.tf_read
        images = tf.convert_to_tensor(self.images)
        return lambda rows: tf.gather(images, rows)

    def take(self, rows) -> Source:
        """The sub-source of the given rows (same storage kind, same image shape)."""
        rows = _as_rows(rows)
        images = self.images[rows] if self.in_memory else self.images.take(rows)
        groups = None if self.groups is None else self.groups[rows]
        return dataclasses.replace(self, images=images, labels=self.labels[rows], groups=groups)

    def decoded_batches(self, rows=None, batch_size: int = 256) -> Iterator[np.ndarray]:
        """Decoded uint8 images [≤ batch_size, H, W, C] of `rows` (all when None), in order.

        Reads and decodes a bounded number of batches at a time (parallel, prefetched), so a
        split of any size costs the memory of a few batches. Runs on host.
        """
        rows = np.arange(len(self)) if rows is None else _as_rows(rows).reshape(-1)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if rows.size == 0:
            return
        gather, decode = self.gather_fn(), self.map_fn

        def read(batch_rows):  # Runs in the input pipeline.
            stored = gather(batch_rows)
            return stored if decode is None else decode(stored)

        ds = (
            tf.data.Dataset.from_tensor_slices(rows.astype(np.int64))
            .batch(int(batch_size))
            .map(read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(2)
        )
        for batch in ds:
            yield np.asarray(batch)

    def decoded_images(self, rows=None) -> np.ndarray:
        """Decoded uint8 images [n, H, W, C] of `rows` (all when None). Runs on host.

        Holds all n images: for a large split read `decoded_batches` instead.
        """
        if self.in_memory:
            stored = self.images if rows is None else self.images[_as_rows(rows)]
            if len(stored) == 0:
                return np.zeros((0, *self.image_shape), np.uint8)
            return images_lib.decode_images(stored, self.map_fn)
        parts = list(self.decoded_batches(rows))
        if not parts:
            return np.zeros((0, *self.image_shape), np.uint8)
        return np.concatenate(parts)

    def with_storage(self, storage: str = "auto") -> Source:
        """This source stored as asked.

        Args:
          storage: "stored" (as it is), "decoded" (uint8 at `image_shape` in memory: no work
            after sampling), or "auto" (in memory: whichever of the two takes less memory; a
            store-backed source stays in its store).

        Returns:
          A source with the same images and labels.

        Raises:
          InputError: an unknown storage.
        """
        if storage not in STORAGES:
            raise InputError(f"storage must be one of {STORAGES}, got {storage!r}")
        if storage == "stored" or (storage == "auto" and not self.in_memory):
            return self
        if self.in_memory and self.map_fn is None:
            return self
        decoded_bytes = len(self) * int(np.prod(self.image_shape))
        if storage == "auto" and self.nbytes < decoded_bytes:
            return self
        return dataclasses.replace(self, images=self.decoded_images())


def _as_rows(rows) -> np.ndarray:
    """Row indices (or a boolean mask); an empty list indexes nothing instead of failing."""
    rows = np.asarray(rows)
    return rows.astype(np.int64) if rows.size == 0 else rows


def _looks_encoded(images) -> bool:
    return len(images) > 0 and isinstance(images[0], (bytes, bytearray))
