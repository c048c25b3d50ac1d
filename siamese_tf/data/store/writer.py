"""Writes a prepared store from a stream of checked chunks (`python -m launch.prepare`).

Memory is bounded whatever the dataset's size: one chunk being checked, one read ahead, and the
per-record index (about 30 bytes a record). Checking decodes every image on all cores (a
parallel `tf.data` map); reading the next chunk overlaps it.

The store is written in place and `store.json` last: a folder without it is not a store, so a
prepare that stops half way is never mistaken for one, and a failed prepare removes what it
wrote. No folder is renamed: in a bucket that would copy every object.
"""

from __future__ import annotations

import json
import queue
import threading
import zlib

import numpy as np
import tensorflow as tf

from siamese_tf.data.class_index import ClassIndex
from siamese_tf.data.store import layout
from siamese_tf.data.stream import ImageSurvey, SourceStream, chunk_parts, collect_groups
from siamese_tf.errors import InputError

DEFAULT_SHARD_BYTES = 256 << 20


class _ShardedRecords:
    """Appends record payloads to shard files of about `shard_bytes`, indexing each one."""

    def __init__(self, folder: str, shard_bytes: int):
        self.folder = folder
        self.shard_bytes = int(shard_bytes)
        self.shards: list[dict] = []
        self._file = None
        self._columns = {name: [] for name in layout.INDEX_ARRAYS}
        self._groups: list = []

    def add(self, items, labels, groups=None) -> None:
        offsets, lengths, crcs, shard_ids = [], [], [], []
        for item in items:
            data = item if isinstance(item, (bytes, bytearray)) else np.asarray(item).tobytes()
            if self._file is None or self.shards[-1]["bytes"] >= self.shard_bytes:
                self._next_shard()
            shard = self.shards[-1]
            self._file.write(data)
            offsets.append(shard["bytes"])
            lengths.append(len(data))
            crcs.append(zlib.crc32(data))
            shard_ids.append(len(self.shards) - 1)
            shard["bytes"] += len(data)
            shard["records"] += 1
        self._columns["labels"].append(np.asarray(labels, np.int64))
        self._columns["shard"].append(np.asarray(shard_ids, np.int32))
        self._columns["offset"].append(np.asarray(offsets, np.int64))
        self._columns["length"].append(np.asarray(lengths, np.int64))
        self._columns["crc32"].append(np.asarray(crcs, np.uint32))
        self._groups.append(groups)

    def _next_shard(self) -> None:
        self.close()
        name = f"records-{len(self.shards):05d}.bin"
        self._file = tf.io.gfile.GFile(layout.join(self.folder, name), "wb")
        self.shards.append({"file": name, "records": 0, "bytes": 0})

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def index(self, name: str) -> dict:
        """The per-record columns (and groups, when the stream has them) and the class index."""
        columns = {
            name: np.concatenate(parts) if parts else np.zeros(0, np.int64)
            for name, parts in self._columns.items()
        }
        groups = collect_groups(self._groups, name)
        if groups is not None:
            columns[layout.GROUPS_ARRAY] = groups
        classes = ClassIndex.from_labels(columns["labels"])
        columns.update(
            class_labels=classes.class_labels.astype(np.int64),
            class_starts=classes.starts,
            class_counts=classes.counts,
            class_order=classes.order,
        )
        return columns


def _read_ahead(chunks, depth: int = 1):
    """Yields `chunks` while a thread reads the next `depth` ones (file reads overlap checks)."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce():
        try:
            for chunk in chunks:
                slots.put(chunk)
            slots.put(done)
        except BaseException as err:  # Re-raised in the consumer, with its own message.
            slots.put(err)

    threading.Thread(target=produce, daemon=True).start()
    while True:
        item = slots.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def check_out_dir(out: str, overwrite: bool) -> None:
    """Refuses an output that is a file, or a non-empty folder other than a store to replace.

    Raises:
      InputError: as above.
    """
    if tf.io.gfile.exists(out) and not tf.io.gfile.isdir(out):
        raise InputError(f"output {out} exists and is not a folder")
    if tf.io.gfile.isdir(out) and tf.io.gfile.listdir(out):
        if not overwrite:
            raise InputError(f"output folder {out} is not empty; pass --overwrite to replace it")
        ours = (layout.META_FILE, layout.LEGACY_INDEX_FILE)
        if not any(tf.io.gfile.exists(layout.join(out, name)) for name in ours):
            raise InputError(
                f"output folder {out} is not empty and holds no {layout.META_FILE}: not "
                "replacing a folder that launch.prepare did not write"
            )


def write_store(
    stream: SourceStream,
    out: str,
    *,
    image_size: int = 0,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
) -> dict:
    """Streams a dataset into a prepared store at `out`, checking every image. Runs on host.

    Records keep the source's order (record i is row i of `load_source` of the same spec), so
    training from the store draws exactly the batches training from the spec draws.

    Args:
      stream: the dataset's checked-as-read chunks (`siamese_tf.data.sources.open_stream`).
      out: the store folder, local or a bucket URL (created; must be empty unless
        `overwrite`, which replaces an earlier store).
      image_size: decode to image_size × image_size when training (0: sizes must agree).
      shard_bytes: start a new shard file once one holds this many bytes.
      overwrite: replace an earlier store (or class-shard folder) at `out`; it is deleted
        before the new one is written.

    Returns:
      The store's metadata (`store.json`).

    Raises:
      InputError: a bad image or label (the message names it; nothing is left at `out`), an
        output that is not empty, or a non-positive `shard_bytes`.
    """
    if int(shard_bytes) < 1:
        raise InputError(f"shard_bytes must be >= 1, got {shard_bytes}")
    out = out.rstrip("/")
    check_out_dir(out, overwrite)
    if tf.io.gfile.exists(out):
        tf.io.gfile.rmtree(out)  # An earlier store (checked above), replaced as asked.
    tf.io.gfile.makedirs(out)
    try:
        return _write(stream, out, image_size, shard_bytes)
    except BaseException:
        tf.io.gfile.rmtree(out)
        raise


def _write(stream: SourceStream, folder: str, image_size: int, shard_bytes: int) -> dict:
    survey = ImageSurvey(stream.name, stream.encoded, image_size)
    records = _ShardedRecords(folder, shard_bytes)
    try:
        for chunk in _read_ahead(stream.chunks):
            items, labels, names, groups = chunk_parts(chunk)
            records.add(items, survey.add(items, labels, names), groups)
    finally:
        records.close()
    image_shape = survey.image_shape()  # Raises on an empty stream.
    index = records.index(stream.name)
    index_bytes = layout.npz_bytes(index)
    with tf.io.gfile.GFile(layout.join(folder, layout.INDEX_FILE), "wb") as f:
        f.write(index_bytes)
    meta = {
        "format": layout.FORMAT,
        "version": layout.VERSION,
        "name": stream.name,
        "encoded": bool(stream.encoded),
        "image_shape": [int(d) for d in image_shape],
        "stored_shape": None
        if survey.stored_shape is None
        else [int(d) for d in survey.stored_shape],
        "class_names": None if stream.class_names is None else [str(n) for n in stream.class_names],
        "group_names": None if stream.group_names is None else [str(n) for n in stream.group_names],
        "num_examples": int(index["labels"].size),
        "num_classes": int(index["class_labels"].size),
        "shards": records.shards,
        "index": {"bytes": len(index_bytes), "sha256": layout.sha256(index_bytes)},
    }
    # Written last: a folder without store.json is not a store.
    with tf.io.gfile.GFile(layout.join(folder, layout.META_FILE), "w") as f:
        f.write(json.dumps(meta, indent=1))
    return meta
