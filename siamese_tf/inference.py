"""Embedding and pair distances on the host, for callbacks, reports and tools."""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf


def embed(model, images, batch_size: int = 512) -> np.ndarray:
    """Embeds images on this host, batch by batch, in inference mode.

    Deliberately not `model.predict`: under MultiWorkerMirroredStrategy `predict` is a collective
    operation every worker must join, while callbacks and reports run wherever they are called.
    A local forward pass reads the (synchronised) weights and needs no other worker.

    Args:
      model: a `SiameseModel` (or any model mapping images to embeddings).
      images: array [N, H, W, C].
      batch_size: images per predict batch.

    Returns:
      float32 embeddings [N, D].
    """
    images = np.asarray(images)
    if images.shape[0] == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    forward = _forward_fn(model)
    chunks = [
        forward(tf.constant(images[i : i + batch_size]))
        for i in range(0, images.shape[0], batch_size)
    ]
    return np.concatenate([np.asarray(c, np.float32) for c in chunks])


_FORWARD = weakref.WeakKeyDictionary()


def _forward_fn(model):
    """One traced inference function per model, kept while the model lives (no retracing)."""
    if model not in _FORWARD:
        _FORWARD[model] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return _FORWARD[model]


def pair_set_distances(model, images, pairs, batch_size: int = 512) -> np.ndarray:
    """Distances of a fixed pair set, each image embedded once.

    Args:
      model: a `SiameseModel`.
      images: the split's images [N, ...]; `pairs` index into them.
      pairs: a `siamese_tf.data.PairSet`.
      batch_size: images per predict batch.

    Returns:
      float32 distances [len(pairs)].
    """
    used = np.unique(np.concatenate([pairs.a, pairs.b]))
    embeddings = embed(model, images[used], batch_size)
    position = np.searchsorted(used, np.stack([pairs.a, pairs.b]))
    emb_a = tf.constant(embeddings[position[0]])
    emb_b = tf.constant(embeddings[position[1]])
    return np.asarray(model.pair_distances(emb_a, emb_b), np.float32)
