"""Data sources: every dataset becomes one `Source` of (stored images, int64 labels).

`load_source(spec)` reads a dataset named by a spec string:

* `digits`: scikit-learn's bundled 8×8 digits (no files);
* `mnist:DIR[:train|test|all]`: MNIST IDX files (`train-images-idx3-ubyte[.gz]`, ...), default
  `train`;
* `npz:PATH`: a `.npz` file with arrays `images` [N, H, W(, C)] and integer `labels` [N];
* `tfds:NAME[:SPLIT]`: a TFDS split (default `train`), from a local builder folder under
  `datasets/` first, else the TFDS catalogue; its supervised keys, else `image` / `label`;
* `folder:PATH`: an image folder, one sub-folder per class (PNG / JPEG / BMP / GIF);
* `tfrecord:DIR_OR_GLOB`: class shards written by `python -m launch.prepare`.

A source stores its images either as uint8 [N, h, w, c] or as their encoded bytes, whichever is
smaller (Omniglot's 32k PNGs then cost megabytes, not gigabytes); `map_fn` decodes and resizes
a batch of stored images to `image_shape`, and the samplers run it after sampling, in their
parallel map. Loading runs on host, in chunks: each chunk's images are checked (format, decodable,
one shape unless `image_size` resizes) before the next is read, so an error names its file early.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
import re
import struct
from collections.abc import Callable, Iterator

import numpy as np

from siamese_tf.data import images as images_lib
from siamese_tf.data.class_index import as_int_labels
from siamese_tf.errors import InputError

STORAGES = ("auto", "stored", "decoded")

# Host memory a Python bytes object and its array slot cost beyond the payload.
_BYTES_OVERHEAD = 64
_CHUNK = 1024


@dataclasses.dataclass(frozen=True, eq=False)
class Source:
    """A dataset in memory: stored images, int64 labels, and how to decode the images.

    Attributes:
      images: uint8 [N, h, w, c], or a 1-D object array of encoded images (bytes).
      labels: int64 [N].
      name: the dataset's name (its spec when loaded by `load_source`).
      image_shape: (H, W, C) of decoded images; defaults to the stored shape of uint8 images
        and is required for encoded ones. A uint8 source whose `image_shape` differs from its
        stored (h, w) is resized in `map_fn`.
      class_names: optional name of each label value (index = label), e.g. folder names.

    Raises:
      InputError: empty, mismatched lengths, non-integer labels, or images that are neither
        uint8 [N, H, W, C] nor encoded bytes.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str = "arrays"
    image_shape: tuple | None = None
    class_names: tuple | None = None

    def __post_init__(self):
        images = self.images
        if not isinstance(images, np.ndarray):
            images = np.asarray(images, dtype=object if _looks_encoded(images) else None)
        if len(images) != len(self.labels):
            raise InputError(
                f"source {self.name!r}: images and labels differ in length: "
                f"{len(images)} vs {len(self.labels)}"
            )
        if len(images) == 0:
            raise InputError(f"source {self.name!r} is empty: no examples")
        labels = as_int_labels(self.labels)
        if images.dtype == object:
            if images.ndim != 1:
                raise InputError(f"encoded images must be a 1-D array, got shape {images.shape}")
            if self.image_shape is None:
                raise InputError("a source of encoded images needs image_shape (H, W, C)")
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
            stored = tuple(int(d) for d in images.shape[1:])
            shape = stored if self.image_shape is None else tuple(int(d) for d in self.image_shape)
            if len(shape) != 3 or shape[2] != stored[2] or min(shape) < 1:
                raise InputError(
                    f"image_shape {self.image_shape} does not fit stored images {stored}: "
                    "only height and width can change"
                )
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "image_shape", shape)
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))

    def __len__(self) -> int:
        return int(self.labels.size)

    @property
    def encoded(self) -> bool:
        """Whether images are stored as encoded bytes (decoded by `map_fn`)."""
        return self.images.dtype == object

    @property
    def stored_shape(self) -> tuple | None:
        """(h, w, c) of stored uint8 images; None for encoded images."""
        return None if self.encoded else tuple(int(d) for d in self.images.shape[1:])

    @property
    def nbytes(self) -> int:
        """Host memory of the stored images (payload plus per-object overhead when encoded)."""
        if self.encoded:
            return int(sum(len(b) for b in self.images)) + _BYTES_OVERHEAD * len(self)
        return int(self.images.nbytes)

    @property
    def map_fn(self) -> Callable | None:
        """Batch function: stored images [B, ...] → uint8 [B, H, W, C]; None when identity."""
        return images_lib.decode_fn(
            self.image_shape, encoded=self.encoded, stored_shape=self.stored_shape
        )

    def take(self, rows) -> Source:
        """The sub-source of the given rows (same storage kind, same image shape)."""
        rows = _as_rows(rows)
        return dataclasses.replace(self, images=self.images[rows], labels=self.labels[rows])

    def decoded_images(self, rows=None) -> np.ndarray:
        """Decoded uint8 images [n, H, W, C] of `rows` (all when None). Runs on host."""
        stored = self.images if rows is None else self.images[_as_rows(rows)]
        if len(stored) == 0:
            return np.zeros((0, *self.image_shape), np.uint8)
        return images_lib.decode_images(stored, self.map_fn)

    def with_storage(self, storage: str = "auto") -> Source:
        """This source stored as asked.

        Args:
          storage: "stored" (as it is), "decoded" (uint8 at `image_shape`: no work after
            sampling), or "auto" (whichever of the two takes less memory).

        Returns:
          A source with the same images and labels.

        Raises:
          InputError: an unknown storage.
        """
        if storage not in STORAGES:
            raise InputError(f"storage must be one of {STORAGES}, got {storage!r}")
        if self.map_fn is None or storage == "stored":
            return self
        decoded_bytes = len(self) * int(np.prod(self.image_shape))
        if storage == "auto" and self.nbytes < decoded_bytes:
            return self
        return dataclasses.replace(self, images=self.decoded_images())


# Backward-compatible name: the in-memory source of earlier versions.
ArraySource = Source


def _as_rows(rows) -> np.ndarray:
    """Row indices (or a boolean mask); an empty list indexes nothing instead of failing."""
    rows = np.asarray(rows)
    return rows.astype(np.int64) if rows.size == 0 else rows


def _looks_encoded(images) -> bool:
    return len(images) > 0 and isinstance(images[0], (bytes, bytearray))


# ------------------------------------------------------------------------------------------------
# Streams: a source read chunk by chunk, checked as it goes (load_source and launch.prepare).


@dataclasses.dataclass
class SourceStream:
    """A dataset read in chunks, before it is assembled (or written to shards).

    Attributes:
      name: the dataset's name.
      encoded: chunks hold encoded bytes (else uint8 [n, h, w, c]).
      chunks: iterator of `(items, labels, names)`; `names` (per-item file or example names
        for error messages) may be None.
      class_names: optional name of each label value.
    """

    name: str
    encoded: bool
    chunks: Iterator
    class_names: list | None = None


class ImageSurvey:
    """Checks a stream's chunks and works out the decoded image shape. Runs on host.

    Args:
      name: the dataset's name, for messages.
      encoded: the chunks hold encoded bytes.
      image_size: resize every image to image_size × image_size; 0 keeps sizes, which must
        then all agree.
    """

    def __init__(self, name: str, encoded: bool, image_size: int = 0):
        if int(image_size) < 0:
            raise InputError(f"image_size must be >= 0, got {image_size}")
        self.name = name
        self.encoded = encoded
        self.image_size = int(image_size)
        self.count = 0
        self.stored_shape = None  # uint8 chunks: (h, w, c)
        self._first = None  # (height, width, item name) of the first image
        self._all_gray = True

    def add(self, items, labels, names=None) -> np.ndarray:
        """Checks one chunk; returns its labels as int64.

        Raises:
          InputError: non-integer labels, an unsupported or undecodable image, or an image
            whose size differs from the first one's without `image_size`.
        """
        if len(items) != len(labels):
            raise InputError(
                f"{self.name}: a chunk has {len(items)} images but {len(labels)} labels"
            )
        if len(items) == 0:
            return np.zeros(0, np.int64)
        labels = as_int_labels(labels)
        start = self.count
        if names is None:
            names = [f"{self.name} example {start + i}" for i in range(len(items))]
        if self.encoded:
            heights, widths, gray = images_lib.probe_encoded(items, names)
            self._all_gray &= bool(gray.all())
        else:
            shape = tuple(int(d) for d in np.shape(items)[1:])
            if self.stored_shape is not None and shape != self.stored_shape:
                raise InputError(
                    f"{self.name}: image arrays differ in shape: {self.stored_shape} then {shape}"
                )
            self.stored_shape = shape
            heights = np.full(len(items), shape[0])
            widths = np.full(len(items), shape[1])
        if self._first is None:
            self._first = (int(heights[0]), int(widths[0]), names[0])
        if not self.image_size:
            height, width, first_name = self._first
            bad = np.flatnonzero((heights != height) | (widths != width))
            if bad.size:
                i = int(bad[0])
                raise InputError(
                    f"{self.name}: images differ in size: {first_name} is {height}x{width} but "
                    f"{names[i]} is {heights[i]}x{widths[i]}; pass image_size (--image_size) "
                    "to resize them all"
                )
        self.count += len(items)
        return labels

    def image_shape(self) -> tuple:
        """(H, W, C) of decoded images, once every chunk was added.

        Raises:
          InputError: the stream was empty.
        """
        if self.count == 0:
            raise InputError(f"source {self.name!r} is empty: no examples")
        if self.image_size:
            height = width = self.image_size
        else:
            height, width = self._first[:2]
        if self.encoded:
            channels = 1 if self._all_gray else 3
        else:
            channels = self.stored_shape[2]
        return (height, width, channels)


def assemble(stream: SourceStream, image_size: int = 0, storage: str = "auto") -> Source:
    """Reads a whole stream into a `Source`. Runs on host.

    Args:
      stream: the chunks.
      image_size: resize to image_size × image_size (0: keep sizes, which must agree).
      storage: "auto", "stored" or "decoded" (see `Source.with_storage`).

    Returns:
      The source.

    Raises:
      InputError: the stream is empty or holds a bad image or label.
    """
    if storage not in STORAGES:
        raise InputError(f"storage must be one of {STORAGES}, got {storage!r}")
    survey = ImageSurvey(stream.name, stream.encoded, image_size)
    parts, labels = [], []
    for items, chunk_labels, names in stream.chunks:
        labels.append(survey.add(items, chunk_labels, names))
        parts.append(np.asarray(items, dtype=object) if stream.encoded else np.asarray(items))
    shape = survey.image_shape()
    if stream.encoded:
        images = np.empty(survey.count, dtype=object)
        images[:] = [item for part in parts for item in part]
    else:
        images = parts[0] if len(parts) == 1 else np.concatenate(parts)
    source = Source(images, np.concatenate(labels), stream.name, shape, stream.class_names)
    return source.with_storage(storage)


# ------------------------------------------------------------------------------------------------
# The readers.


def digits_stream() -> SourceStream:
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes)."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    # Pixel values are 0..16; scale to the uint8 range every other source uses.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    chunks = iter([(images, digits.target.astype(np.int64), None)])
    return SourceStream("digits", False, chunks, [str(d) for d in range(10)])


def load_digits() -> Source:
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes): the default, no files."""
    return assemble(digits_stream())


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (MNIST's format), gzipped or not, as a uint8 array.

    Raises:
      InputError: a missing file, or one that is not a uint8 IDX file (the message names it).
    """
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(f"IDX file {path} not found") from None
    except (OSError, EOFError) as err:
        raise InputError(f"cannot read IDX file {path}: {err}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise InputError(f"{path} is not a uint8 IDX file")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != int(np.prod(dims)):
        raise InputError(f"IDX file {path} holds {len(data) - header} bytes, header says {dims}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find_idx(folder: pathlib.Path, prefix: str, kind: str) -> pathlib.Path:
    for name in (f"{prefix}-{kind}", f"{prefix}-{kind}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"MNIST file {folder / (prefix + '-' + kind)}[.gz] not found")


def mnist_stream(arg: str) -> SourceStream:
    """MNIST from IDX files: `DIR`, `DIR:train`, `DIR:test` or `DIR:all` (train then test)."""
    folder, split = arg, "train"
    head, _, tail = arg.rpartition(":")
    if head and tail in ("train", "test", "all"):
        folder, split = head, tail
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise InputError(f"mnist: {folder} is not a folder (expected MNIST's IDX files there)")
    prefixes = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    images, labels = [], []
    for prefix in prefixes:
        x = read_idx(_find_idx(root, prefix, "images-idx3-ubyte"))
        y = read_idx(_find_idx(root, prefix, "labels-idx1-ubyte"))
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise InputError(f"mnist: {prefix} images {x.shape} and labels {y.shape} disagree")
        images.append(x[..., None])
        labels.append(y.astype(np.int64))
    if len(images) > 1:
        images, labels = [np.concatenate(images)], [np.concatenate(labels)]
    chunks = iter([(images[0], labels[0], None)])
    return SourceStream(f"mnist:{folder}:{split}", False, chunks, [str(d) for d in range(10)])


def _as_uint8_images(images: np.ndarray, where: str) -> np.ndarray:
    """uint8 [N, H, W, C] from uint8, integer or float arrays (floats in [0, 1] are scaled)."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise InputError(f"{where}: images must be [N, H, W] or [N, H, W, C], got {images.shape}")
    if images.dtype == np.uint8:
        return images
    if images.dtype == bool or not np.issubdtype(images.dtype, np.number):
        raise InputError(f"{where}: images must be numeric, got dtype {images.dtype}")
    if images.size and (
        np.nanmin(images) < 0 or np.nanmax(images) > 255 or not np.all(np.isfinite(images))
    ):
        raise InputError(f"{where}: image values must lie in [0, 255]")
    if np.issubdtype(images.dtype, np.floating) and images.size and np.max(images) <= 1.0:
        images = images * 255.0
    return np.round(images).astype(np.uint8)


def npz_stream(path: str) -> SourceStream:
    """A `.npz` file with `images` [N, H, W(, C)] and integer `labels` [N]."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("images", "labels") if k not in data.files]
            if missing:
                raise InputError(
                    f"npz file {path} lacks {', '.join(missing)} (it holds {', '.join(data.files)})"
                )
            images, labels = data["images"], data["labels"]
    except FileNotFoundError:
        raise InputError(f"npz file {path} not found") from None
    except (OSError, ValueError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(f"cannot read npz file {path}: {err}") from None
    images = _as_uint8_images(images, f"npz file {path}")
    return SourceStream(f"npz:{path}", False, iter([(images, labels, None)]))


def _class_folders(root: pathlib.Path) -> list[tuple[str, list[pathlib.Path]]]:
    """(class name, files) for every folder under `root` that directly holds non-hidden files."""
    classes = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        files = sorted(f for f in files if not f.startswith("."))
        here = pathlib.Path(folder)
        if here != root and files:
            classes.append((here.relative_to(root).as_posix(), [here / f for f in files]))
    return sorted(classes)


def folder_stream(path: str) -> SourceStream:
    """An image folder: each sub-folder holding files is a class (named by its relative path).

    Every non-hidden file in a class folder must be a PNG, JPEG, BMP or GIF image (checked by
    content); files directly in `path` are ignored (a README may sit there). Classes are
    numbered in sorted order of their names.
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise InputError(f"folder: {path} is not a folder")
    classes = _class_folders(root)
    if not classes:
        loose = [f for f in root.iterdir() if f.is_file() and not f.name.startswith(".")]
        if loose:
            raise InputError(
                f"folder {path} holds {len(loose)} files but no class sub-folders: put each "
                f"class's images in a sub-folder of its own ({root / 'CLASS_NAME' / loose[0].name})"
            )
        raise InputError(
            f"folder {path} holds no images: expected one sub-folder of images per class"
        )
    files = [(f, label) for label, (_, fs) in enumerate(classes) for f in fs]

    def chunks():
        for start in range(0, len(files), _CHUNK):
            part = files[start : start + _CHUNK]
            items = []
            for file, _ in part:
                try:
                    items.append(file.read_bytes())
                except OSError as err:
                    raise InputError(f"cannot read image file {file}: {err.strerror}") from None
            labels = np.array([label for _, label in part], np.int64)
            yield items, labels, [str(f) for f, _ in part]

    return SourceStream(f"folder:{path}", True, chunks(), [name for name, _ in classes])


_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def parse_tfds_spec(arg: str) -> tuple[str, str]:
    """`NAME[:VERSION][:SPLIT]` → (builder name with version, split); split defaults to train.

    The split may hold colons of its own (`train[:80%]`).
    """
    name, _, rest = arg.partition(":")
    version, _, after = rest.partition(":")
    if _VERSION.match(version):
        name, rest = f"{name}:{version}", after
    if not name:
        raise InputError("tfds: expected tfds:NAME[:SPLIT], e.g. tfds:mnist:train")
    return name, rest or "train"


def tfds_stream(arg: str, *, data_dir: str = "", manual_dir: str = "") -> SourceStream:
    """A TFDS split; images stay encoded when the feature is a `tfds.features.Image`."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from siamese_tf.data import tfds_local

    name, split = parse_tfds_spec(arg)
    builder = tfds_local.load_local_builder(
        name, data_dir=data_dir or None, manual_dir=manual_dir or None
    )
    features = builder.info.features
    keys = builder.info.supervised_keys
    image_key, label_key = keys if isinstance(keys, tuple) and len(keys) == 2 else (None, None)
    if not (isinstance(image_key, str) and isinstance(label_key, str)):
        image_key, label_key = "image", "label"
    for key in (image_key, label_key):
        if key not in features:
            raise InputError(
                f"tfds:{name} has no feature {key!r} (features: {', '.join(features)}) and no "
                "(image, label) supervised keys"
            )
    encoded = isinstance(features[image_key], tfds.features.Image)
    decoders = {image_key: tfds.decode.SkipDecoding()} if encoded else None
    try:
        ds = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    except (AssertionError, ValueError, KeyError, FileNotFoundError, tf.errors.OpError) as err:
        detail = " ".join(str(err).split())
        raise InputError(
            f"cannot read tfds:{name} split {split!r} from {builder.data_dir}: {detail}. "
            "Build it first (tfds build, or pass manual_dir / --manual_dir for a local builder)"
        ) from None
    ds = ds.map(lambda ex: (ex[image_key], ex[label_key])).batch(_CHUNK)
    label_feature = features[label_key]
    is_class_label = isinstance(label_feature, tfds.features.ClassLabel)
    names = list(label_feature.names) if is_class_label else None

    def chunks():
        seen = 0
        for images, labels in ds.as_numpy_iterator():
            items = list(images) if encoded else _as_uint8_images(images, f"tfds:{name}")
            yield (
                items,
                labels,
                [f"tfds:{name}:{split} example {seen + i}" for i in range(len(labels))],
            )
            seen += len(labels)

    return SourceStream(f"tfds:{name}:{split}", encoded, chunks(), names)


def open_stream(spec: str, *, data_dir: str = "", manual_dir: str = "") -> SourceStream:
    """Opens a dataset spec as a stream of checked-as-read chunks (all specs but `tfrecord:`).

    Raises:
      InputError: an unknown spec or unreadable data.
    """
    kind, sep, arg = spec.partition(":")
    if spec == "digits":
        return digits_stream()
    if sep and arg:
        if kind == "mnist":
            return mnist_stream(arg)
        if kind == "npz":
            return npz_stream(arg)
        if kind == "folder":
            return folder_stream(arg)
        if kind == "tfds":
            return tfds_stream(arg, data_dir=data_dir, manual_dir=manual_dir)
    raise InputError(
        f"unknown dataset {spec!r}; expected digits, mnist:DIR, npz:PATH, tfds:NAME[:SPLIT], "
        "folder:PATH or tfrecord:DIR_OR_GLOB"
    )


def load_source(
    spec: str,
    *,
    image_size: int = 0,
    manual_dir: str = "",
    data_dir: str = "",
    storage: str = "auto",
) -> Source:
    """Loads a dataset by its spec (see the module docstring). Runs on host.

    Args:
      spec: "digits", "mnist:DIR", "npz:PATH", "tfds:NAME[:SPLIT]", "folder:PATH" or
        "tfrecord:DIR_OR_GLOB".
      image_size: resize images to image_size × image_size (0 keeps their size, which must
        then be the same for all).
      manual_dir: for `tfds:` local builders that read their files from a folder.
      data_dir: where TFDS keeps prepared datasets (TFDS's default when empty).
      storage: "auto" (encoded bytes or uint8, whichever is smaller), "stored" (as the
        dataset stores them) or "decoded" (uint8 at the final size).

    Returns:
      The source.

    Raises:
      InputError: an unknown spec, missing files, an empty dataset, non-integer labels, an
        unsupported or undecodable image (the message names it), or mixed image sizes
        without `image_size`.
    """
    if spec.startswith("tfrecord:"):
        from siamese_tf.data import tfrecords

        source = tfrecords.load_class_shards(spec.partition(":")[2], image_size=image_size)
        return source.with_storage(storage)
    return assemble(
        open_stream(spec, data_dir=data_dir, manual_dir=manual_dir), image_size, storage
    )
