"""Inference on a finished run: pair verification, gallery matching and clustering of files.

The logic behind `python -m launch.predict`, callable without flags. Host side.
"""

from __future__ import annotations

import csv
import os
import pathlib

import numpy as np

from siamese_tf.data.images import decode_encoded_images
from siamese_tf.data.sources import folder_stream
from siamese_tf.errors import InputError
from siamese_tf.evaluation import clustering as eval_clustering
from siamese_tf.inference import embed
from siamese_tf.seeds import derive
from siamese_tf.threshold import same
from trainers.finished_run import Run, check_finite, model_distances

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

# ------------------------------------------------------------------------------------------------
# Predictions on image files.


def read_image_files(paths, image_shape) -> np.ndarray:
    """Reads image files (PNG, JPEG, BMP, GIF) as uint8 [n, H, W, C] of the model.

    Images are converted to the model's channels and resized to its size when theirs differs
    (see `decode_encoded_images`).

    Raises:
      InputError: a path that does not exist, is not a file, cannot be read, or is not a
        decodable image.
    """
    items = []
    for path in paths:
        path = str(path)
        if not os.path.exists(path):
            raise InputError(f"image file {path} does not exist")
        if not os.path.isfile(path):
            raise InputError(f"{path} is not a file")
        try:
            with open(path, "rb") as f:
                items.append(f.read())
        except OSError as err:
            raise InputError(f"cannot read image file {path}: {err.strerror}") from None
    if not items:
        return np.zeros((0, *image_shape), np.uint8)
    return decode_encoded_images(items, image_shape, [str(p) for p in paths])


def predict_pair(run: Run, path_a: str, path_b: str, threshold: float | None = None) -> dict:
    """Same / different for two image files.

    Returns:
      {"same": bool, "distance": float, "threshold": float}.

    Raises:
      InputError: bad image files, or an uncalibrated model without `threshold`.
    """
    threshold = run.require_threshold(threshold)
    images = read_image_files([path_a, path_b], run.image_shape)
    emb = embed(run.model, images)
    check_finite(emb, "these images")
    distance = float(model_distances(run.model, emb[:1], emb[1:])[0])
    return {"same": same(distance, threshold), "distance": distance, "threshold": threshold}


def _gallery(run: Run, gallery_dir: str, batch_size: int):
    """(embeddings, labels, class names) of a folder of labelled examples."""
    if not os.path.isdir(gallery_dir):
        raise InputError(f"gallery {gallery_dir} does not exist or is not a folder")
    stream = folder_stream(gallery_dir)  # InputError when there is no class sub-folder.
    items, labels, names = [], [], []
    for chunk_items, chunk_labels, chunk_names in stream.chunks:
        items += list(chunk_items)
        labels.append(np.asarray(chunk_labels))
        names += list(chunk_names)
    images = decode_encoded_images(items, run.image_shape, names)
    emb = embed(run.model, images, batch_size)
    check_finite(emb, f"the gallery {gallery_dir}")
    return emb, np.concatenate(labels), stream.class_names


def match_gallery(
    run: Run, gallery_dir: str, query_paths, threshold: float | None = None, batch_size: int = 0
) -> list[dict]:
    """The best-matching class of a labelled gallery for each query image.

    The gallery is a folder with one sub-folder of images per class (nested class folders are
    named by their relative path). A query's match is the class of its nearest gallery image by
    the model's distance, or None ("unknown") when that distance exceeds the threshold.

    Args:
      run: the run.
      gallery_dir: the gallery folder.
      query_paths: image files.
      threshold: overrides the calibrated threshold.
      batch_size: images per forward pass; 0 uses the run's `eval_batch_size`.

    Returns:
      One dict per query: {"query", "match" (class name or None), "nearest" (class name),
      "distance", "threshold"}.

    Raises:
      InputError: an uncalibrated model without `threshold`, no queries, a missing or empty
        gallery, or bad image files.
    """
    threshold = run.require_threshold(threshold)
    query_paths = [str(p) for p in query_paths]
    if not query_paths:
        raise InputError("no query images given (--query PATH ...)")
    queries = read_image_files(query_paths, run.image_shape)  # Cheap checks first.
    batch = batch_size or run.config.eval_batch_size
    emb_gallery, labels, class_names = _gallery(run, gallery_dir, batch)
    emb_queries = embed(run.model, queries, batch)
    check_finite(emb_queries, "the query images")
    results = []
    for path, query in zip(query_paths, emb_queries, strict=True):
        tiled = np.broadcast_to(query, emb_gallery.shape)
        distances = model_distances(run.model, tiled, emb_gallery)
        best = int(np.argmin(distances))
        nearest = class_names[labels[best]] if class_names else str(labels[best])
        distance = float(distances[best])
        results.append(
            {
                "query": path,
                "match": nearest if same(distance, threshold) else None,
                "nearest": nearest,
                "distance": distance,
                "threshold": threshold,
            }
        )
    return results


def image_files_under(folder: str) -> list[str]:
    """Image files (by suffix: .png .jpg .jpeg .bmp .gif) under a folder, recursively, sorted.

    Hidden files and folders are skipped.

    Raises:
      InputError: not a folder, or no image file under it.
    """
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise InputError(f"{folder} does not exist or is not a folder")
    files = sorted(
        str(p)
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise InputError(f"{folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files


def cluster_folder(
    run: Run, folder: str, k: int, out_csv: str, seed: int | None = None, batch_size: int = 0
) -> list[tuple[str, int]]:
    """Clusters the images under a folder with k-means on their embeddings; writes a CSV.

    Args:
      run: the run.
      folder: the images (recursively).
      k: the number of clusters.
      out_csv: the CSV to write: a header `file,cluster`, then one row per image.
      seed: the seed whose `clustering` sub-seed (`siamese_tf.seeds`) seeds k-means, as
        evaluation's clustering does; None: the run's seed.
      batch_size: images per forward pass; 0 uses the run's `eval_batch_size`.

    Returns:
      The (file, cluster) rows.

    Raises:
      InputError: a bad folder or image, or k outside 1..number of images.
    """
    if seed is not None and seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    files = image_files_under(folder)
    if int(k) != k or not 1 <= k <= len(files):
        raise InputError(f"--k must be in [1, {len(files)}] (the number of images), got {k}")
    images = read_image_files(files, run.image_shape)
    emb = embed(run.model, images, batch_size or run.config.eval_batch_size)
    check_finite(emb, f"the images under {folder}")
    seed = run.config.seed if seed is None else seed
    clusters = eval_clustering.cluster_embeddings(emb, int(k), seed=derive(seed, "clustering"))
    rows = [(f, int(c)) for f, c in zip(files, clusters, strict=True)]
    parent = os.path.dirname(os.path.abspath(out_csv))
    os.makedirs(parent, exist_ok=True)
    tmp = f"{out_csv}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "cluster"])
        writer.writerows(rows)
    os.replace(tmp, out_csv)
    return rows
