"""Numeric image arrays to the uint8 [N, H, W, C] every source stores."""

from __future__ import annotations

import numpy as np

from siamese_tf.errors import InputError


def as_uint8_images(images: np.ndarray, where: str) -> np.ndarray:
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
