"""An image folder, one sub-folder per class: `folder:PATH`."""

from __future__ import annotations

import os
import pathlib

import numpy as np

from siamese_tf.data.stream import CHUNK, SourceStream
from siamese_tf.errors import InputError


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

    When every class folder sits below a group folder (`GROUP/CLASS/files`, e.g. Omniglot's
    `Alphabet/character01/`), the top-level folders are the examples' groups.

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
        for start in range(0, len(files), CHUNK):
            part = files[start : start + CHUNK]
            items = []
            for file, _ in part:
                try:
                    items.append(file.read_bytes())
                except OSError as err:
                    raise InputError(f"cannot read image file {file}: {err.strerror}") from None
            labels = np.array([label for _, label in part], np.int64)
            if group_of is None:
                yield items, labels, [str(f) for f, _ in part]
            else:
                yield items, labels, [str(f) for f, _ in part], group_of[labels]

    class_names = [name for name, _ in classes]
    group_of, group_names = _top_level_groups(class_names)
    return SourceStream(f"folder:{path}", True, chunks(), class_names, group_names)


def _top_level_groups(class_names: list[str]) -> tuple:
    """Groups from nested class folders: `GROUP/CLASS/image` puts CLASS in GROUP.

    Returns:
      (group of each class, group names), or (None, None) unless every class folder sits
      below a group folder (e.g. `Alphabet/character01/`).
    """
    tops = [name.split("/", 1)[0] for name in class_names]
    if not all("/" in name for name in class_names):
        return None, None
    group_names = sorted(set(tops))
    position = {name: i for i, name in enumerate(group_names)}
    return np.array([position[t] for t in tops], np.int64), group_names
