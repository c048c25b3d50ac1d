"""Data sources: everything becomes (images uint8 [N, H, W, C], labels int64 [N])."""

from __future__ import annotations

import dataclasses

import numpy as np

from siamese_tf.errors import InputError


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """An in-memory source: uint8 images [N, H, W, C] and integer labels [N]."""

    images: np.ndarray
    labels: np.ndarray
    name: str = "arrays"

    def __post_init__(self):
        if len(self.images) != len(self.labels):
            raise InputError(
                f"images and labels differ in length: {len(self.images)} vs {len(self.labels)}"
            )
        if len(self.labels) == 0:
            raise InputError(f"source {self.name!r} is empty")

    @property
    def image_shape(self) -> tuple:
        """Shape of one image, (H, W, C)."""
        return tuple(self.images.shape[1:])

    def take(self, rows) -> ArraySource:
        """The sub-source of the given rows."""
        return ArraySource(self.images[rows], self.labels[rows], self.name)


def load_digits() -> ArraySource:
    """scikit-learn's bundled 8×8 digits (1,797 images, 10 classes): the default, no files."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    # Pixel values are 0..16; scale to the uint8 range every other source uses.
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return ArraySource(images, digits.target.astype(np.int64), "digits")


_LOADERS = {"digits": load_digits}


def load_source(spec: str) -> ArraySource:
    """Loads a source by its spec.

    Args:
      spec: "digits" (the embedded default).

    Returns:
      The source.

    Raises:
      InputError: an unknown spec.
    """
    if spec in _LOADERS:
        return _LOADERS[spec]()
    raise InputError(f"unknown dataset {spec!r}; known: {', '.join(sorted(_LOADERS))}")
