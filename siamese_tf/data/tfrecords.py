"""Class-sharded TFRecords: the writer behind `launch.prepare` and a streaming P×K reader.

Layout of a prepared folder:

    index.json                        what is stored, and each class's shards and counts
    class<label>-<k>.tfrecord         examples of ONE class: features image (bytes), label (int64)

Images are written as the source stores them: encoded bytes stay encoded (decoded after
sampling), uint8 arrays are written raw. The writer buffers records per class and writes a
shard when a class reaches `shard_size` records or the buffers reach `buffer_bytes`, so
preparing streams through data larger than memory.

The streaming reader (`class_shard_pk_batches`) never loads the data: for each step it draws P
classes and, for each, a random window of K consecutive records of that class (a pure function
of (seed, stream, step), like `samplers.pk_indices`), opens those shards, and interleaves them
with cycle length P and block length K. Memory is bounded by the per-shard read buffers and the
prefetch buffer, whatever the dataset size; resuming at step s yields exactly the batches of a
run from step 0. Within a class, a window holds records that were written next to each other.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from siamese_tf.data import images as images_lib
from siamese_tf.data import samplers
from siamese_tf.data.sources import ImageSurvey, Source, open_stream
from siamese_tf.errors import InputError

INDEX_FILE = "index.json"
FORMAT = "siamese_tf.class_shards"
FORMAT_VERSION = 1
_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}


def _example(data: bytes, label: int) -> bytes:
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
            }
        )
    ).SerializeToString()


class ClassShardWriter:
    """Writes examples into per-class TFRecord shards with bounded buffers. Runs on host.

    Args:
      out_dir: an existing, empty folder.
      shard_size: records per shard (a class's last shard may hold fewer).
      buffer_bytes: when the buffered records of all classes exceed this, the largest class
        buffer is written as a (short) shard.
    """

    def __init__(self, out_dir, *, shard_size: int = 256, buffer_bytes: int = 256 << 20):
        if int(shard_size) < 1:
            raise InputError(f"shard_size must be >= 1, got {shard_size}")
        self.out_dir = pathlib.Path(out_dir)
        self.shard_size = int(shard_size)
        self.buffer_bytes = int(buffer_bytes)
        self._buffers: dict[int, list[bytes]] = {}
        self._sizes: dict[int, int] = {}  # buffered bytes per class
        self._buffered = 0
        self._shards: dict[int, list[dict]] = {}

    def add(self, items, labels) -> None:
        """Buffers a chunk: `items` are encoded bytes or uint8 arrays (written raw)."""
        for item, label in zip(items, np.asarray(labels, np.int64), strict=True):
            data = item if isinstance(item, (bytes, bytearray)) else np.asarray(item).tobytes()
            record = _example(bytes(data), int(label))
            label = int(label)
            self._buffers.setdefault(label, []).append(record)
            self._sizes[label] = self._sizes.get(label, 0) + len(record)
            self._buffered += len(record)
            if len(self._buffers[label]) >= self.shard_size:
                self._flush(label)
            while self._buffered > self.buffer_bytes:
                self._flush(max(self._sizes, key=self._sizes.get))

    def _flush(self, label: int) -> None:
        records = self._buffers.pop(label)
        self._buffered -= self._sizes.pop(label)
        shards = self._shards.setdefault(label, [])
        name = f"class{label}-{len(shards):05d}.tfrecord"
        with tf.io.TFRecordWriter(str(self.out_dir / name)) as writer:
            for record in records:
                writer.write(record)
        shards.append({"file": name, "count": len(records)})

    def close(self, **metadata) -> dict:
        """Writes the remaining buffers and `index.json`; returns the index.

        Args:
          **metadata: name, encoded, stored_shape, image_shape, class_names.
        """
        for label in list(self._buffers):
            self._flush(label)
        classes = [
            {"label": label, "count": sum(s["count"] for s in shards), "shards": shards}
            for label, shards in sorted(self._shards.items())
        ]
        index = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            **metadata,
            "num_examples": sum(c["count"] for c in classes),
            "num_classes": len(classes),
            "classes": classes,
        }
        with open(self.out_dir / INDEX_FILE, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=1)
        return index


def _metadata(name, encoded, image_shape, stored_shape, class_names) -> dict:
    return {
        "name": name,
        "encoded": bool(encoded),
        "image_shape": [int(d) for d in image_shape],
        "stored_shape": None if stored_shape is None else [int(d) for d in stored_shape],
        "class_names": None if class_names is None else [str(n) for n in class_names],
    }


def _check_out_dir(out_dir: pathlib.Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise InputError(
                f"output folder {out_dir} is not empty; pass --overwrite to replace it"
            )
        if not (out_dir / INDEX_FILE).is_file():
            raise InputError(
                f"output folder {out_dir} is not empty and holds no {INDEX_FILE}: not replacing "
                "a folder that launch.prepare did not write"
            )


def _write_atomically(out_dir, overwrite: bool, write: Callable) -> dict:
    """Runs `write(tmp_dir)` and moves the result to `out_dir` only when it succeeded."""
    out_dir = pathlib.Path(out_dir).absolute()
    _check_out_dir(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        index = write(tmp)
        _check_out_dir(out_dir, overwrite)  # still true after a long write?
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return index


def write_class_shards(
    source: Source, out_dir, *, shard_size: int = 256, overwrite: bool = False
) -> dict:
    """Writes an in-memory source as class shards (see the module docstring). Runs on host.

    Args:
      source: the source; its stored form is written (encoded bytes or raw uint8).
      out_dir: the output folder (created; must be empty unless `overwrite`).
      shard_size: records per shard.
      overwrite: replace an earlier prepared folder.

    Returns:
      The index (also written to `out_dir/index.json`).
    """

    def write(tmp):
        writer = ClassShardWriter(tmp, shard_size=shard_size)
        for start in range(0, len(source), 4096):
            rows = slice(start, start + 4096)
            writer.add(source.images[rows], source.labels[rows])
        return writer.close(
            **_metadata(
                source.name,
                source.encoded,
                source.image_shape,
                source.stored_shape,
                source.class_names,
            )
        )

    return _write_atomically(out_dir, overwrite, write)


def prepare_class_shards(
    spec: str,
    out_dir,
    *,
    image_size: int = 0,
    shard_size: int = 256,
    manual_dir: str = "",
    data_dir: str = "",
    overwrite: bool = False,
) -> dict:
    """Streams a dataset spec into class shards, checking every image. Runs on host.

    Memory is bounded by one read chunk plus the writer's buffers, so datasets larger than
    memory can be prepared. Nothing is left in `out_dir` when an image or label is bad.

    Args:
      spec: a `load_source` spec other than `tfrecord:`.
      out_dir: the output folder (created; must be empty unless `overwrite`).
      image_size: decode to image_size × image_size (0: sizes must agree).
      shard_size: records per shard.
      manual_dir: for `tfds:` local builders.
      data_dir: TFDS data folder.
      overwrite: replace an earlier prepared folder.

    Returns:
      The index.

    Raises:
      InputError: a bad spec, image or label (nothing is written then), or an output folder
        that is not empty.
    """
    if spec.startswith("tfrecord:"):
        raise InputError("the dataset is already prepared (tfrecord: spec); nothing to do")
    _check_out_dir(pathlib.Path(out_dir), overwrite)
    stream = open_stream(spec, data_dir=data_dir, manual_dir=manual_dir)

    def write(tmp):
        survey = ImageSurvey(stream.name, stream.encoded, image_size)
        writer = ClassShardWriter(tmp, shard_size=shard_size)
        for items, labels, names in stream.chunks:
            writer.add(items, survey.add(items, labels, names))
        shape = survey.image_shape()
        return writer.close(
            **_metadata(stream.name, stream.encoded, shape, survey.stored_shape, stream.class_names)
        )

    return _write_atomically(out_dir, overwrite, write)


# ------------------------------------------------------------------------------------------------
# Reading.


@dataclasses.dataclass(frozen=True)
class ClassShards:
    """A prepared folder, opened: what is stored and where each class's records are.

    Attributes:
      name: the dataset's name.
      encoded: records hold encoded images (else raw uint8 of `stored_shape`).
      stored_shape: (h, w, c) of raw records, or None.
      image_shape: (H, W, C) after decoding (and resizing).
      class_names: optional name per label value.
      labels: int64 [C] label of each class.
      counts: int64 [C] records of each class (only the selected shards).
      files: per class, its shard paths (in write order).
      file_counts: per class, the records in each of its shards.
    """

    name: str
    encoded: bool
    stored_shape: tuple | None
    image_shape: tuple
    class_names: tuple | None
    labels: np.ndarray
    counts: np.ndarray
    files: tuple
    file_counts: tuple

    @property
    def num_examples(self) -> int:
        """Number of records."""
        return int(self.counts.sum())

    def parse_fn(self, map_fn: Callable | None = None) -> Callable:
        """Batch function: serialized records [B] → (uint8 images [B, H, W, C], labels [B])."""
        decode = images_lib.decode_fn(
            self.image_shape, encoded=self.encoded, stored_shape=self.stored_shape
        )
        decode = images_lib.compose(decode, map_fn)
        stored_shape = self.stored_shape

        def parse(serialized):  # Runs in the input pipeline.
            example = tf.io.parse_example(serialized, _FEATURES)
            images = example["image"]
            if stored_shape is not None:
                images = tf.reshape(tf.io.decode_raw(images, tf.uint8), [-1, *stored_shape])
            return (images if decode is None else decode(images)), example["label"]

        return parse


def open_class_shards(path: str, *, image_size: int = 0) -> ClassShards:
    """Opens a folder written by `launch.prepare`.

    Args:
      path: the folder, its `index.json`, or a glob of some of its shard files (only those
        are read).
      image_size: resize to image_size × image_size (0: the size recorded at prepare time).

    Returns:
      The opened shards.

    Raises:
      InputError: no such folder or files, or not a folder written by `launch.prepare`.
    """
    path = os.fspath(path)
    selected = None
    if os.path.isdir(path):
        folder = pathlib.Path(path)
    elif os.path.isfile(path) and path.endswith(".json"):
        folder = pathlib.Path(path).parent
    else:
        matches = sorted(glob.glob(path))
        if not matches:
            raise InputError(f"tfrecord: no folder or files match {path}")
        folder = pathlib.Path(matches[0]).parent
        selected = {os.path.abspath(m) for m in matches}
    try:
        with open(folder / INDEX_FILE, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        raise InputError(
            f"tfrecord: {folder} has no {INDEX_FILE}; write it with python -m launch.prepare"
        ) from None
    except (OSError, ValueError) as err:
        raise InputError(f"tfrecord: cannot read {folder / INDEX_FILE}: {err}") from None
    if index.get("format") != FORMAT or index.get("version") != FORMAT_VERSION:
        raise InputError(
            f"tfrecord: {folder / INDEX_FILE} is not a {FORMAT} v{FORMAT_VERSION} index"
        )
    labels, counts, files, file_counts = [], [], [], []
    for entry in index["classes"]:
        shards = [
            (str(folder / s["file"]), int(s["count"]))
            for s in entry["shards"]
            if selected is None or os.path.abspath(folder / s["file"]) in selected
        ]
        if shards:
            labels.append(int(entry["label"]))
            counts.append(sum(c for _, c in shards))
            files.append(tuple(f for f, _ in shards))
            file_counts.append(tuple(c for _, c in shards))
    if not labels:
        raise InputError(f"tfrecord: {path} selects no shard of {folder}: the source is empty")
    shape = tuple(index["image_shape"])
    if int(image_size) > 0:
        shape = (int(image_size), int(image_size), shape[2])
    stored = index.get("stored_shape")
    names = index.get("class_names")
    return ClassShards(
        name=f"tfrecord:{path}",
        encoded=bool(index["encoded"]),
        stored_shape=None if stored is None else tuple(stored),
        image_shape=shape,
        class_names=None if names is None else tuple(names),
        labels=np.asarray(labels, np.int64),
        counts=np.asarray(counts, np.int64),
        files=tuple(files),
        file_counts=tuple(file_counts),
    )


def load_class_shards(path: str, *, image_size: int = 0) -> Source:
    """Reads prepared shards into an in-memory `Source` (stored form kept). Runs on host.

    Args:
      path: as for `open_class_shards`.
      image_size: as for `open_class_shards`.

    Returns:
      The source, its rows class by class.
    """
    shards = open_class_shards(path, image_size=image_size)
    files = [f for class_files in shards.files for f in class_files]
    ds = (
        tf.data.TFRecordDataset(files)
        .batch(4096)
        .map(lambda s: tf.io.parse_example(s, _FEATURES), num_parallel_calls=tf.data.AUTOTUNE)
    )
    items, labels = [], []
    try:
        for example in ds.as_numpy_iterator():
            items.extend(example["image"])
            labels.append(example["label"])
    except tf.errors.OpError as err:
        raise InputError(f"tfrecord: cannot read the shards of {path}: {err.message}") from None
    if shards.encoded:
        images = np.empty(len(items), dtype=object)
        images[:] = items
    else:
        images = np.frombuffer(b"".join(items), np.uint8).reshape(-1, *shards.stored_shape)
    return Source(
        images, np.concatenate(labels), shards.name, shards.image_shape, shards.class_names
    )


def class_shard_pk_batches(
    shards: ClassShards | str,
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
    """Streaming P×K batches `(images [P·K, H, W, C], labels [P·K])` read from class shards.

    Per step: P distinct classes drawn as in `samplers.pk_indices` (single-example classes
    excluded and reported once), and for each a window of K consecutive records starting at a
    random record (wrapping round the class; distinct records when the class has >= K). The
    shards are interleaved with cycle length P and block length K, then parsed, decoded and
    passed through `map_fn` in a parallel map. A pure function of (seed, stream, step).

    Args:
      shards: opened shards, or a path for `open_class_shards`.
      classes_per_batch: P.
      samples_per_class: K.
      seed: integer seed.
      start_step: first step to yield (resume).
      stream: replica / worker id.
      class_weighting: "uniform" or "proportional" to class size.
      map_fn: optional function applied to each decoded batch of images (augmentation).
      prefetch: add `prefetch(AUTOTUNE)` at the end.

    Returns:
      An infinite `tf.data.Dataset`.

    Raises:
      InputError: bad P or K, or fewer eligible classes than P.
    """
    if not isinstance(shards, ClassShards):
        shards = open_class_shards(shards)
    p, k = int(classes_per_batch), int(samples_per_class)
    if p < 1 or k < 1:
        raise InputError(f"classes_per_batch and samples_per_class must be >= 1, got {p} and {k}")
    samplers.warn_single_example_classes(shards.labels[shards.counts == 1], shards.name)
    eligible = np.flatnonzero(shards.counts >= 2)
    if eligible.size < p:
        raise InputError(
            f"classes_per_batch={p} but only {eligible.size} classes have 2 or more examples "
            f"(of {shards.labels.size}); lower classes_per_batch"
        )
    if class_weighting not in samplers.CLASS_WEIGHTINGS:
        raise InputError(
            f"class_weighting must be one of {samplers.CLASS_WEIGHTINGS}, got {class_weighting!r}"
        )
    # Flat tables of the eligible classes' shards: class i owns shards first[i] .. first[i]+n-1.
    files = [shards.files[c] for c in eligible]
    file_counts = [shards.file_counts[c] for c in eligible]
    num_files = np.array([len(f) for f in files], np.int64)
    first = np.concatenate([[0], np.cumsum(num_files)[:-1]]).astype(np.int64)
    offsets = np.concatenate([np.concatenate([[0], np.cumsum(c)[:-1]]) for c in file_counts])
    t_paths = tf.constant([f for fs in files for f in fs], tf.string)
    t_offsets = tf.constant(offsets.astype(np.int64))
    t_first = tf.constant(first)
    t_num = tf.constant(num_files)
    counts = shards.counts[eligible]
    t_counts = tf.constant(counts, tf.int64)
    log_weights = None if class_weighting == "uniform" else tf.constant(np.log(counts), tf.float32)

    def sample(step):  # Runs in the input pipeline, once per batch.
        class_seed, start_seed = tf.unstack(
            tf.random.experimental.stateless_split(samplers.step_seed(seed, stream, step), 2)
        )
        keys = samplers.class_keys([eligible.size], class_seed, log_weights)
        classes = tf.cast(tf.math.top_k(keys, k=p).indices, tf.int64)
        u = tf.random.stateless_uniform([p], seed=start_seed, dtype=tf.float64)
        starts = tf.cast(tf.floor(u * tf.cast(tf.gather(t_counts, classes), tf.float64)), tf.int64)
        return classes, starts

    def read_window(c, start):  # Runs in the input pipeline: K records of class c.
        n = t_num[c]
        class_offsets = tf.slice(t_offsets, [t_first[c]], [n])
        i = tf.searchsorted(class_offsets, start[None], side="right", out_type=tf.int64)[0] - 1
        rotated = tf.gather(t_paths, t_first[c] + (tf.range(n, dtype=tf.int64) + i) % n)
        head = tf.data.TFRecordDataset(rotated).skip(start - class_offsets[i])
        return head.concatenate(tf.data.TFRecordDataset(rotated).repeat()).take(k)

    ds = (
        tf.data.Dataset.counter(start_step, dtype=tf.int64)
        .map(sample)
        .unbatch()
        .interleave(
            read_window,
            cycle_length=p,
            block_length=k,
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .batch(p * k, drop_remainder=True)
        .map(shards.parse_fn(map_fn), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    )
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds
