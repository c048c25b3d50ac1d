"""scikit-learn's bundled 8×8 digits: the default dataset, no files."""

from __future__ import annotations

import numpy as np

from siamese_tf.data.source import Source
from siamese_tf.data.stream import SourceStream, assemble


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
