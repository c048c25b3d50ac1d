"""Datasets read chunk by chunk and checked as they go: the common path of every reader.

A reader (`siamese_tf.data.sources`) turns its files into a `SourceStream` of chunks; `assemble`
reads a stream into an in-memory `Source`, and the prepared store's writer
(`siamese_tf.data.store`) writes one to disk without holding it. Either way `ImageSurvey`
checks each chunk (format, decodable, one shape unless `image_size` resizes) before the next
is read, so an error names its file early.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from siamese_tf.data import images as images_lib
from siamese_tf.data.class_index import as_int_labels
from siamese_tf.data.source import STORAGES, Source
from siamese_tf.errors import InputError

# Examples per chunk a reader yields.
CHUNK = 1024


@dataclasses.dataclass
class SourceStream:
    """A dataset read in chunks, before it is assembled (or written to shards).

    Attributes:
      name: the dataset's name.
      encoded: chunks hold encoded bytes (else uint8 [n, h, w, c]).
      chunks: iterator of `(items, labels, names)` or `(items, labels, names, groups)`;
        `names` (per-item file or example names for error messages) may be None, `groups`
        (int group per item, see `Source.groups`) is given by every chunk or by none.
      class_names: optional name of each label value.
      group_names: optional name of each group value.
    """

    name: str
    encoded: bool
    chunks: Iterator
    class_names: list | None = None
    group_names: list | None = None


def chunk_parts(chunk) -> tuple:
    """`(items, labels, names, groups)` of a chunk; groups None when the chunk has none."""
    items, labels, names, *rest = chunk
    return items, labels, names, (rest[0] if rest else None)


def collect_groups(parts: list, name: str) -> np.ndarray | None:
    """All chunks' groups as one int64 array, None when no chunk has groups.

    Raises:
      InputError: some chunks carry groups and others do not.
    """
    if all(p is None for p in parts):
        return None
    if any(p is None for p in parts):
        raise InputError(f"{name}: some chunks carry group labels and others do not")
    return np.concatenate([np.asarray(p, np.int64) for p in parts])


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
    parts, labels, groups = [], [], []
    for chunk in stream.chunks:
        items, chunk_labels, names, chunk_groups = chunk_parts(chunk)
        labels.append(survey.add(items, chunk_labels, names))
        groups.append(chunk_groups)
        parts.append(np.asarray(items, dtype=object) if stream.encoded else np.asarray(items))
    shape = survey.image_shape()
    if stream.encoded:
        images = np.empty(survey.count, dtype=object)
        images[:] = [item for part in parts for item in part]
    else:
        images = parts[0] if len(parts) == 1 else np.concatenate(parts)
    source = Source(
        images,
        np.concatenate(labels),
        stream.name,
        shape,
        stream.class_names,
        collect_groups(groups, stream.name),
        stream.group_names,
    )
    return source.with_storage(storage)
