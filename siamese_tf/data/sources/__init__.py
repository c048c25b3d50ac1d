"""Dataset specs: every dataset becomes one `Source` of (stored images, int64 labels).

`load_source(spec)` reads a dataset named by a spec string, one small module per format:

* `digits`: scikit-learn's bundled 8×8 digits (no files);
* `mnist:DIR[:train|test|all]`: MNIST IDX files (`train-images-idx3-ubyte[.gz]`, ...), default
  `train`;
* `npz:PATH`: a `.npz` file with arrays `images` [N, H, W(, C)] and integer `labels` [N];
* `tfds:NAME[:SPLIT]`: a TFDS split (default `train`), from a local builder folder first, else
  the TFDS catalogue; its supervised keys, else `image` / `label`;
* `folder:PATH`: an image folder, one sub-folder per class (PNG / JPEG / BMP / GIF);
* `prepared:DIR` (alias `tfrecord:DIR`): a prepared store written by `python -m launch.prepare`,
  local or in a bucket; nothing is loaded, rows are read as they are sampled.

The first five are read in checked chunks (`siamese_tf.data.stream`) and assembled in memory;
`launch.prepare` streams the same chunks into a store instead.
"""

from __future__ import annotations

from siamese_tf.data.source import Source
from siamese_tf.data.sources.digits import digits_stream, load_digits
from siamese_tf.data.sources.folder import folder_stream
from siamese_tf.data.sources.mnist import mnist_stream, read_idx
from siamese_tf.data.sources.npz import npz_stream
from siamese_tf.data.sources.tfds import parse_tfds_spec, tfds_stream
from siamese_tf.data.store import open_store
from siamese_tf.data.stream import SourceStream, assemble
from siamese_tf.errors import InputError

# `tfrecord:` named the class-shard folders of earlier versions; it now opens a prepared store.
PREPARED_PREFIXES = ("prepared:", "tfrecord:")

__all__ = [
    "PREPARED_PREFIXES",
    "digits_stream",
    "folder_stream",
    "load_digits",
    "load_source",
    "mnist_stream",
    "npz_stream",
    "open_stream",
    "parse_tfds_spec",
    "read_idx",
    "tfds_stream",
]


def prepared_path(spec: str) -> str | None:
    """The store path of a `prepared:DIR` (or `tfrecord:DIR`) spec, else None."""
    for prefix in PREPARED_PREFIXES:
        if spec.startswith(prefix):
            return spec[len(prefix) :]
    return None


def open_stream(spec: str, *, data_dir: str = "", manual_dir: str = "") -> SourceStream:
    """Opens a dataset spec as a stream of checked-as-read chunks (all specs but `prepared:`).

    Raises:
      InputError: an unknown spec or unreadable data.
    """
    kind, sep, arg = spec.partition(":")
    if spec == "digits":
        return digits_stream()
    if prepared_path(spec) is not None:
        raise InputError(f"{spec} is already prepared; train on it with --dataset={spec}")
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
        "folder:PATH or prepared:DIR"
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
        "prepared:DIR".
      image_size: resize images to image_size × image_size (0 keeps their size, which must
        then be the same for all; a store keeps the size it was prepared with unless this is
        set).
      manual_dir: for `tfds:` local builders that read their files from a folder.
      data_dir: where TFDS keeps prepared datasets (TFDS's default when empty).
      storage: "auto" (in memory: encoded bytes or uint8, whichever is smaller; a store stays
        on disk), "stored" (as the dataset stores them) or "decoded" (uint8 at the final size,
        in memory).

    Returns:
      The source.

    Raises:
      InputError: an unknown spec, missing files, an empty dataset, non-integer labels, an
        unsupported or undecodable image (the message names it), mixed image sizes without
        `image_size`, or a path that is not a readable store.
    """
    store_path = prepared_path(spec)
    if store_path is not None:
        return open_store(store_path, image_size=image_size).with_storage(storage)
    return assemble(
        open_stream(spec, data_dir=data_dir, manual_dir=manual_dir), image_size, storage
    )
