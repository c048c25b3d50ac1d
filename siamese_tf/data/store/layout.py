"""The prepared store's layout on disk, and the checks that open it.

    DIR/store.json          format, version, image metadata, shard list, the index's size and
                            SHA-256; written last, so a folder without it is not a store
    DIR/index.npz           per record: label (int64), shard (int32), offset (int64),
                            length (int64), crc32 (uint32), optionally groups (int64); and the
                            class index: class_labels, class_starts, class_counts, class_order
                            (record ids grouped by class)
    DIR/records-NNNNN.bin   record payloads back to back: the image as the source stores it
                            (encoded file bytes, or raw uint8 h·w·c bytes)

Every path goes through `tf.io.gfile`, so DIR may be local or a bucket (`gs://…`).
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import tensorflow as tf

from siamese_tf.errors import InputError

FORMAT = "siamese_tf.prepared_store"
VERSION = 1
META_FILE = "store.json"
INDEX_FILE = "index.npz"
# The class-shard TFRecords of earlier versions (format "siamese_tf.class_shards").
LEGACY_INDEX_FILE = "index.json"
INDEX_ARRAYS = ("labels", "shard", "offset", "length", "crc32")
CLASS_ARRAYS = ("class_labels", "class_starts", "class_counts", "class_order")
# Optional: the group of each record (see `Source.groups`), when the dataset has groups.
GROUPS_ARRAY = "groups"
# Marks a store error raised inside the input pipeline, so the trainer can find it again in
# the TensorFlow error that wraps it (see `marked` and `store_error_from`).
ERROR_MARK = "[prepared store] "


class StoreError(InputError):
    """A prepared store that cannot be read: not a store, another version, missing or corrupt
    parts. Its message names the store (and the record and class, for a bad record)."""


def marked(err: StoreError) -> RuntimeError:
    """The error to raise inside `tf.numpy_function`: its text carries the mark."""
    return RuntimeError(ERROR_MARK + str(err))


def store_error_from(err: BaseException) -> StoreError | None:
    """The `StoreError` inside a TensorFlow error from the input pipeline, else None.

    A Python exception raised in `tf.numpy_function` reaches the caller as an `OpError` whose
    message holds the original text; the first marked line is ours.
    """
    for line in str(getattr(err, "message", err)).splitlines():
        at = line.find(ERROR_MARK)
        if at >= 0:
            return StoreError(line[at + len(ERROR_MARK) :].strip())
    return None


def join(path: str, name: str) -> str:
    """`path/name` for local paths and URLs alike."""
    return path.rstrip("/") + "/" + name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npz_bytes(arrays: dict) -> bytes:
    """The arrays as `.npz` bytes (uncompressed: ids and offsets barely compress)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_meta(path: str) -> dict:
    """Reads and checks `store.json` of the store at `path`.

    Raises:
      StoreError: not a store, a store of another version, or an unreadable store.json.
    """
    how = f"prepare one with python -m launch.prepare --dataset=SPEC --out={path}"
    if not tf.io.gfile.isdir(path):
        raise StoreError(f"{path} is not a prepared store (no such folder); {how}")
    meta_path = join(path, META_FILE)
    if not tf.io.gfile.exists(meta_path):
        if tf.io.gfile.exists(join(path, LEGACY_INDEX_FILE)):
            raise StoreError(
                f"{path} holds class-shard TFRecords of an earlier siamese_tf, not a prepared "
                f"store; re-run python -m launch.prepare --dataset=SPEC --out={path} --overwrite"
            )
        raise StoreError(f"{path} is not a prepared store (no {META_FILE}); {how}")
    try:
        with tf.io.gfile.GFile(meta_path, "rb") as f:
            meta = json.loads(f.read())
    except (ValueError, tf.errors.OpError) as err:
        raise StoreError(f"{meta_path} is unreadable or corrupt ({type(err).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise StoreError(f"{path} is not a prepared store ({META_FILE} has another format)")
    if meta.get("version") != VERSION:
        raise StoreError(
            f"{path} was prepared by another siamese_tf (store version {meta.get('version')}; "
            f"this one reads version {VERSION}); re-run python -m launch.prepare with --overwrite"
        )
    return meta


def read_index(path: str, meta: dict) -> dict:
    """Reads `index.npz` and checks it against `store.json`.

    Raises:
      StoreError: a missing, truncated or corrupt index.
    """
    index_path = join(path, INDEX_FILE)
    expected = meta["index"]
    try:
        with tf.io.gfile.GFile(index_path, "rb") as f:
            data = f.read()
    except tf.errors.NotFoundError:
        raise StoreError(f"{path}: {INDEX_FILE} is missing; re-run launch.prepare") from None
    if len(data) != expected["bytes"] or sha256(data) != expected["sha256"]:
        raise StoreError(
            f"{path}: {INDEX_FILE} is truncated or corrupt ({len(data)} bytes, "
            f"{expected['bytes']} expected); re-run launch.prepare"
        )
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        index = {name: arrays[name] for name in INDEX_ARRAYS + CLASS_ARRAYS}
        index[GROUPS_ARRAY] = arrays[GROUPS_ARRAY] if GROUPS_ARRAY in arrays.files else None
    n = int(meta["num_examples"])
    groups = index[GROUPS_ARRAY]
    if any(index[name].shape != (n,) for name in INDEX_ARRAYS) or (
        groups is not None and groups.shape != (n,)
    ):
        raise StoreError(f"{path}: {INDEX_FILE} does not hold {n} records; re-run launch.prepare")
    return index
