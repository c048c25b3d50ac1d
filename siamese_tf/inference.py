"""Embedding and pair distances on the host, for callbacks, reports and tools.

Every function takes images as an array or as a `Source`; a `Source` is read and decoded a
bounded batch at a time (from memory or a prepared store), so embedding a split of any size
costs the memory of a few batches plus its embeddings.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from siamese_tf.data.source import Source
from siamese_tf.threshold import is_calibrated


def embed(model, images, batch_size: int = 512, tta_shift: int = 0) -> np.ndarray:
    """Embeds images on this host, batch by batch, in inference mode.

    Deliberately not `model.predict`: under MultiWorkerMirroredStrategy `predict` is a collective
    operation every worker must join, while callbacks and reports run wherever they are called.
    A local forward pass reads the (synchronised) weights and needs no other worker.

    Args:
      model: a `SiameseModel` (or any model mapping images to L2-normalised embeddings).
      images: uint8 array [N, H, W, C], or a `Source` (read batch by batch).
      batch_size: images per forward pass.
      tta_shift: test-time augmentation: each embedding is the L2-normalised mean of the
        embeddings of every translation of its image by up to this many pixels along each axis
        ((2 * tta_shift + 1)² views; the edges mirrored into the uncovered border). 0: off.

    Returns:
      float32 embeddings [N, D].

    Raises:
      ValueError: `tta_shift` negative, or not below half the image's height and width.
    """
    forward = _forward_fn(model, tta_shift)
    chunks = [np.asarray(forward(tf.constant(b)), np.float32) for b in _batches(images, batch_size)]
    if not chunks:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    return np.concatenate(chunks)


def _batches(images, batch_size: int):
    """Decoded image batches of an array or a `Source`."""
    if isinstance(images, Source):
        yield from images.decoded_batches(batch_size=batch_size)
        return
    images = np.asarray(images)
    for i in range(0, images.shape[0], batch_size):
        yield images[i : i + batch_size]


def nearest_gallery_labels(model, query_embeddings, gallery, batch_size: int = 512) -> np.ndarray:
    """The label of each query's nearest (Euclidean) gallery example, the gallery streamed.

    The gallery is embedded one batch at a time and only each query's best match is kept, so
    memory is the queries' embeddings plus one batch, whatever the gallery's size. Ties go to
    the first gallery example, as `argmin` over the whole gallery would.

    Args:
      model: a `SiameseModel`.
      query_embeddings: float32 [Q, D].
      gallery: a `Source` (its labels are returned).
      batch_size: gallery images per forward pass.

    Returns:
      int64 [Q] labels.
    """
    queries = np.asarray(query_embeddings, np.float32)
    best = np.full(queries.shape[0], np.inf)
    labels = np.full(queries.shape[0], -1, np.int64)
    forward = _forward_fn(model)
    squared_queries = np.sum(queries * queries, axis=1, keepdims=True)
    start = 0
    for batch in gallery.decoded_batches(batch_size=batch_size):
        emb = np.asarray(forward(tf.constant(batch)), np.float32)
        distances = squared_queries - 2.0 * queries @ emb.T + np.sum(emb * emb, axis=1)[None, :]
        nearest = np.argmin(distances, axis=1)
        closest = distances[np.arange(queries.shape[0]), nearest]
        better = closest < best
        best[better] = closest[better]
        labels[better] = gallery.labels[start + nearest[better]]
        start += emb.shape[0]
    return labels


_FORWARD = weakref.WeakKeyDictionary()


def _forward_fn(model, tta_shift: int = 0):
    """One traced inference function per (model, tta_shift), kept while the model lives."""
    if tta_shift < 0:
        raise ValueError(f"tta_shift must be >= 0, got {tta_shift}")
    functions = _FORWARD.setdefault(model, {})
    if tta_shift not in functions:
        if tta_shift == 0:
            functions[0] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        else:
            functions[tta_shift] = _translation_averaged(model, tta_shift)
    return functions[tta_shift]


def _translation_averaged(model, shift: int):
    """`images -> embeddings`: the normalised mean over every translation by <= `shift` pixels.

    The views are embedded one after another (a graph loop), not stacked into one batch, so
    memory stays that of one batch whatever the number of views. Mirroring the edges (not a
    constant fill) keeps the background of any dataset: dark digits on white or white strokes
    on black alike.
    """
    side = 2 * shift + 1

    @tf.function(reduce_retracing=True)
    def averaged(images):
        shape = tf.shape(images)
        padded = tf.pad(images, [[0, 0], [shift, shift], [shift, shift], [0, 0]], "SYMMETRIC")

        def view(index):
            return tf.slice(padded, [0, index // side, index % side, 0], shape)

        total = model(view(0), training=False)
        for index in tf.range(1, side * side):
            total += model(view(index), training=False)
        return tf.math.l2_normalize(total, axis=1)

    def checked(images):
        height, width = images.shape[1:3]
        if 2 * shift >= min(height, width):
            raise ValueError(
                f"tta_shift={shift} needs images larger than {2 * shift} pixels on each side, "
                f"got {height}x{width}"
            )
        return averaged(images)

    return checked


def pair_set_distances(model, images, pairs, batch_size: int = 512) -> np.ndarray:
    """Distances of a fixed pair set, each image embedded once.

    Args:
      model: a `SiameseModel`.
      images: the split's images, uint8 [N, H, W, C] or a `Source`; `pairs` index into them.
        Only the rows the pairs use are read and embedded.
      pairs: a `siamese_tf.data.PairSet`.
      batch_size: images per forward pass.

    Returns:
      float32 distances [len(pairs)].
    """
    used = np.unique(np.concatenate([pairs.a, pairs.b]))
    used_images = images.take(used) if isinstance(images, Source) else np.asarray(images)[used]
    embeddings = embed(model, used_images, batch_size)
    position = np.searchsorted(used, np.stack([pairs.a, pairs.b]))
    emb_a = tf.constant(embeddings[position[0]])
    emb_b = tf.constant(embeddings[position[1]])
    return np.asarray(model.pair_distances(emb_a, emb_b), np.float32)


def evaluate_verification(
    model, images, labels, num_pairs: int = 4000, seed: int = 0, threshold=None, batch_size=512
) -> dict:
    """The verification report of a model on a labelled set, in one call.

    Draws a balanced pair set from `labels` (`siamese_tf.data.fixed_pairs`), scores it with
    the model's distance and reports it at the model's calibrated threshold
    (`siamese_tf.evaluation.verification_report`). Runs on host.

    Args:
      model: a `SiameseModel` (calibrated, e.g. by `ThresholdCalibration`, unless `threshold`
        is given).
      images: the images [N, H, W, C] as the model takes them (uint8 0..255 for the encoders
        of `siamese_tf.models`).
      labels: their integer labels [N]; 2+ classes, one with 2+ examples.
      num_pairs: pairs to draw, half positive and half negative.
      seed: seed of the pair draw.
      threshold: the distance threshold to report at; None uses `model.threshold`.
      batch_size: images per forward pass.

    Returns:
      The report: "auc", "eer", "accuracy", "threshold", "tar_at_far_0.001", mean positive /
      negative distances, ... (see `verification_report`).

    Raises:
      InputError: an uncalibrated model without `threshold`, or labels that cannot form pairs.
    """
    from siamese_tf.data import fixed_pairs
    from siamese_tf.errors import InputError
    from siamese_tf.evaluation.reports import verification_report

    if threshold is None:
        threshold = float(np.asarray(model.threshold))
        if not is_calibrated(threshold):
            raise InputError(
                "the model is uncalibrated (threshold -1): fit it with a ThresholdCalibration "
                "callback, or pass threshold="
            )
    images = np.asarray(images)
    pairs = fixed_pairs(np.asarray(labels).reshape(-1), num_pairs, seed=seed)
    distances = pair_set_distances(model, images, pairs, batch_size)
    return verification_report(distances, pairs.same, float(threshold))
