"""Arrays in a `.npz` file: `npz:PATH` with `images` and `labels`."""

from __future__ import annotations

import numpy as np

from siamese_tf.data.sources.arrays import as_uint8_images
from siamese_tf.data.stream import SourceStream
from siamese_tf.errors import InputError


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
    images = as_uint8_images(images, f"npz file {path}")
    return SourceStream(f"npz:{path}", False, iter([(images, labels, None)]))
