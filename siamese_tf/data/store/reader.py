"""Random-access reads from a prepared store: only the rows a sampler drew, in any order.

`open_store(DIR)` checks the store (version, index, every shard's size) and returns a `Source`
whose images are `StoreRows`: record ids, nothing loaded. Memory is the index (about 30 bytes a
record) plus the batches in flight.

Reads run in the input pipeline through `tf.numpy_function` (TensorFlow has no op that reads a
byte range of a file): local shards with `os.pread` (thread-safe, releases the GIL, so the
pipeline's parallel calls read concurrently), other URLs with one `tf.io.gfile.GFile` per shard
and thread. Each record's CRC-32 is checked as it is read; a mismatch raises a `StoreError`
naming the record and its class, which stops training before anything is saved.
"""

from __future__ import annotations

import os
import threading
import zlib

import numpy as np
import tensorflow as tf

from siamese_tf.data.source import Source
from siamese_tf.data.store import layout
from siamese_tf.data.store.layout import StoreError


class RecordStore:
    """An opened store: its metadata, index and shard files. Thread-safe reads.

    Args:
      path: the store folder (local or a URL `tf.io.gfile` reads).

    Raises:
      StoreError: not a store, another version, a truncated index, or a missing or truncated
        shard (a record that cannot be read).
    """

    def __init__(self, path: str):
        self.path = path.rstrip("/")
        self.meta = layout.read_meta(self.path)
        index = layout.read_index(self.path, self.meta)
        self.labels = index["labels"]
        self.groups = index[layout.GROUPS_ARRAY]
        self._shard = index["shard"]
        self._offset = index["offset"]
        self._length = index["length"]
        self._crc = index["crc32"]
        self.shard_files = [layout.join(self.path, s["file"]) for s in self.meta["shards"]]
        for shard, file in zip(self.meta["shards"], self.shard_files, strict=True):
            try:
                size = tf.io.gfile.stat(file).length
            except tf.errors.NotFoundError:
                raise StoreError(
                    f"{self.path}: shard {shard['file']} is missing ({shard['records']} records "
                    "cannot be read); re-run launch.prepare"
                ) from None
            if size != shard["bytes"]:
                raise StoreError(
                    f"{self.path}: shard {shard['file']} is truncated or altered ({size} bytes, "
                    f"{shard['bytes']} expected); re-run launch.prepare"
                )
        self._local = "://" not in self.path
        self._fds: dict[int, int] = {}
        self._fd_lock = threading.Lock()
        self._thread_files = threading.local()

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def encoded(self) -> bool:
        return bool(self.meta["encoded"])

    @property
    def stored_shape(self) -> tuple | None:
        shape = self.meta["stored_shape"]
        return None if shape is None else tuple(int(d) for d in shape)

    def class_name(self, label: int) -> str:
        names = self.meta["class_names"]
        return names[label] if names is not None and 0 <= label < len(names) else str(label)

    def read(self, ids) -> list[bytes]:
        """The payloads of records `ids` (any order, repeats allowed), checked. Runs on host.

        Raises:
          StoreError: a record whose bytes do not match its checksum (named with its class).
        """
        ids = np.asarray(ids, np.int64).reshape(-1)
        out: list = [b""] * ids.size
        # Read in file order (fewer seeks), return in the asked order.
        for position in np.lexsort((self._offset[ids], self._shard[ids])):
            record = int(ids[position])
            data = self._read_bytes(
                int(self._shard[record]), int(self._offset[record]), int(self._length[record])
            )
            if zlib.crc32(data) != int(self._crc[record]):
                label = int(self.labels[record])
                raise StoreError(
                    f"{self.path}: record {record} (class {self.class_name(label)!r}, label "
                    f"{label}) is corrupt: its bytes do not match their checksum; re-run "
                    "launch.prepare"
                )
            out[position] = data
        return out

    def _read_bytes(self, shard: int, offset: int, length: int) -> bytes:
        if self._local:
            data = os.pread(self._fd(shard), length, offset)
        else:
            files = self._thread_files.__dict__.setdefault("files", {})
            if shard not in files:
                files[shard] = tf.io.gfile.GFile(self.shard_files[shard], "rb")
            files[shard].seek(offset)
            data = files[shard].read(length)
        if len(data) != length:
            raise StoreError(
                f"{self.path}: {self.shard_files[shard]} ends inside a record (offset {offset}); "
                "re-run launch.prepare"
            )
        return data

    def _fd(self, shard: int) -> int:
        fd = self._fds.get(shard)
        if fd is None:
            with self._fd_lock:
                fd = self._fds.get(shard)
                if fd is None:
                    fd = self._fds[shard] = os.open(self.shard_files[shard], os.O_RDONLY)
        return fd

    def __del__(self):
        for fd in getattr(self, "_fds", {}).values():
            try:
                os.close(fd)
            except OSError:
                pass


class StoreRows:
    """Some records of a store, as a `Source`'s images (`siamese_tf.data.source.StoredRows`).

    Args:
      store: the opened store.
      ids: int64 record ids, one per source row.
    """

    def __init__(self, store: RecordStore, ids: np.ndarray):
        self.store = store
        self.ids = np.asarray(ids, np.int64)
        self.encoded = store.encoded
        self.stored_shape = store.stored_shape

    def __len__(self) -> int:
        return int(self.ids.size)

    def take(self, rows) -> StoreRows:
        return StoreRows(self.store, self.ids[rows])

    def read(self, rows) -> np.ndarray:
        """Stored images of source rows: object array of bytes [n], or uint8 [n, h, w, c]."""
        payloads = self.store.read(self.ids[np.asarray(rows, np.int64).reshape(-1)])
        if self.encoded:
            out = np.empty(len(payloads), dtype=object)
            out[:] = payloads
            return out
        flat = np.frombuffer(b"".join(payloads), np.uint8)
        return flat.reshape(len(payloads), *self.stored_shape)

    def tf_read(self, rows: tf.Tensor) -> tf.Tensor:
        """`read` inside the input pipeline: rows int64 [n] → tf.string [n] / uint8 [n, h, w, c]."""
        dtype = tf.string if self.encoded else tf.uint8

        def read(rows_array):  # Runs in the input pipeline (a host thread).
            try:
                return self.read(rows_array)
            except StoreError as err:
                raise layout.marked(err) from None

        images = tf.numpy_function(read, [rows], dtype, stateful=False)
        shape = [None] if self.encoded else [None, *self.stored_shape]
        return tf.ensure_shape(images, shape)


def open_store(path: str, *, image_size: int = 0) -> Source:
    """Opens a prepared store as a `Source` that reads rows on demand. Runs on host.

    Args:
      path: the store folder (`python -m launch.prepare --out=PATH`), local or a bucket URL.
      image_size: decode to image_size × image_size (0: the size it was prepared with).

    Returns:
      A source of all the store's records, in their prepared order.

    Raises:
      StoreError: see `RecordStore`.
      InputError: a negative `image_size`.
    """
    if int(image_size) < 0:
        raise StoreError(f"image_size must be >= 0, got {image_size}")
    store = RecordStore(path)
    height, width, channels = (int(d) for d in store.meta["image_shape"])
    if image_size:
        height = width = int(image_size)
    return Source(
        StoreRows(store, np.arange(len(store), dtype=np.int64)),
        store.labels,
        name=store.meta["name"],
        image_shape=(height, width, channels),
        class_names=store.meta["class_names"],
        groups=store.groups,
        group_names=store.meta.get("group_names"),
    )
