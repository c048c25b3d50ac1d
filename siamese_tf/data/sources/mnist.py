"""MNIST from its IDX files: `mnist:DIR[:train|test|all]`."""

from __future__ import annotations

import gzip
import os
import pathlib
import struct

import numpy as np

from siamese_tf.data.stream import SourceStream
from siamese_tf.errors import InputError


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
