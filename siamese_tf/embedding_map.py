"""2-D maps of embeddings (t-SNE or PCA) and files for TensorBoard's embedding projector.

Runs on host: numpy and scikit-learn, TensorBoard's projector config, and TensorFlow's PNG
encoder for the optional sprite image.
"""

from __future__ import annotations

import os

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from tensorboard.plugins import projector
from threadpoolctl import threadpool_limits

PROJECTIONS = ("auto", "tsne", "pca")

# t-SNE costs O(n log n) per iteration with a large constant (seconds per thousand points on
# two cores); beyond this many points "auto" uses PCA, which is linear and instant.
MAX_TSNE_POINTS = 3000

# TensorBoard's projector refuses sprite images larger than this on either side.
_MAX_SPRITE_PIXELS = 8192

PROJECTOR_CONFIG = "projector_config.pbtxt"
TENSORS_FILE = "embeddings.tsv"
METADATA_FILE = "metadata.tsv"
SPRITE_FILE = "sprite.png"


def _check_embeddings(embeddings) -> np.ndarray:
    x = np.asarray(embeddings, np.float64)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"embeddings must be a non-empty [n, D] array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return x


def project_2d(
    embeddings, method: str = "auto", seed: int = 0, max_tsne_points: int = MAX_TSNE_POINTS
) -> tuple[np.ndarray, str]:
    """Projects embeddings to 2-D for a map.

    Args:
      embeddings: [n, D].
      method: "tsne" (scikit-learn's t-SNE, PCA-initialised), "pca", or "auto": t-SNE up to
        `max_tsne_points` points, PCA beyond (t-SNE's run time grows too fast).
      seed: random state of t-SNE; the same seed gives the same map.
      max_tsne_points: the "auto" switch point.

    Returns:
      `(points, method_used)`: float64 [n, 2] and "tsne" or "pca". Fewer than 4 points, or
      embeddings of one dimension, are laid out without t-SNE (its perplexity needs neighbours).

    Raises:
      ValueError: an unknown method, or empty / non-finite embeddings.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"unknown projection {method!r}; choose one of {PROJECTIONS}")
    x = _check_embeddings(embeddings)
    n = x.shape[0]
    if method == "auto":
        method = "tsne" if n <= max_tsne_points else "pca"
    if n < 4 or x.shape[1] < 2:
        method = "pca"
    if method == "pca":
        if n == 1:
            return np.zeros((1, 2)), "pca"
        points = PCA(n_components=min(2, n, x.shape[1]), random_state=seed).fit_transform(x)
        if points.shape[1] < 2:  # 1-D embeddings or a single point: pad a zero axis.
            points = np.pad(points, ((0, 0), (0, 2 - points.shape[1])))
        return points, "pca"
    # Perplexity must stay below n; 30 is scikit-learn's default for larger sets.
    perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, learning_rate="auto"
    )
    # One OpenMP thread: the same map whatever the machine, and no spin-waiting threads on a
    # busy host (measured: 360 points took 2.3 s on one thread, 30 s on two of two busy cores).
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(x), "tsne"


def _tsv_field(text: str) -> str:
    # Tabs and newlines would split the projector's TSV rows and columns.
    return str(text).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def _sprite(images: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    """A square grid of thumbnails (TensorBoard's sprite), as PNG bytes and the cell size."""
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    n, height, width, channels = images.shape
    columns = int(np.ceil(np.sqrt(n)))
    scale = min(1.0, _MAX_SPRITE_PIXELS / (columns * max(height, width)))
    cell_h, cell_w = max(1, int(height * scale)), max(1, int(width * scale))
    if (cell_h, cell_w) != (height, width):
        images = tf.cast(
            tf.round(tf.image.resize(images, (cell_h, cell_w), antialias=True)), tf.uint8
        ).numpy()
    if channels == 1:
        images = np.repeat(images, 3, axis=-1)
    grid = np.full((columns * columns, cell_h, cell_w, 3), 255, np.uint8)
    grid[:n] = images[..., :3]
    grid = grid.reshape(columns, columns, cell_h, cell_w, 3).transpose(0, 2, 1, 3, 4)
    grid = grid.reshape(columns * cell_h, columns * cell_w, 3)
    return tf.io.encode_png(grid).numpy(), (cell_h, cell_w)


def write_projector(
    log_dir: str,
    embeddings,
    labels,
    class_names=None,
    images=None,
    tensor_name: str = "embeddings",
) -> dict:
    """Writes embeddings, labels and a config for TensorBoard's embedding projector.

    The files follow the projector's plain-file format (no checkpoint): `embeddings.tsv` (one
    row of D tab-separated values per point), `metadata.tsv` (a header `label<TAB>class`, then
    one row per point), optionally `sprite.png` (a grid of thumbnails, when `images` are given)
    and `projector_config.pbtxt` (TensorBoard's `ProjectorConfig`), whose paths are relative to
    it.
    `embeddings.npy` and `labels.npy` hold the same data for programs. Point TensorBoard at the
    folder's parent (`tensorboard --logdir DIR/logs`) and open the Projector tab.

    Args:
      log_dir: the folder to write (created if missing).
      embeddings: [n, D].
      labels: [n] integer labels.
      class_names: optional name of each label value (index = label).
      images: optional uint8 [n, H, W, C] thumbnails for the sprite.
      tensor_name: the name the projector shows for the tensor.

    Returns:
      {name: path} of every file written.

    Raises:
      ValueError: empty or non-finite embeddings, or labels / images that do not match them.
    """
    x = _check_embeddings(embeddings).astype(np.float32)
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(f"labels must have {x.shape[0]} entries, got {labels.shape[0]}")
    if images is not None and len(images) != x.shape[0]:
        raise ValueError(f"images must have {x.shape[0]} entries, got {len(images)}")
    os.makedirs(log_dir, exist_ok=True)
    written = {}

    def path(name):
        written[name] = os.path.join(log_dir, name)
        return written[name]

    np.save(path("embeddings.npy"), x)
    np.save(path("labels.npy"), labels)
    np.savetxt(path(TENSORS_FILE), x, delimiter="\t", fmt="%.6g")
    with open(path(METADATA_FILE), "w", encoding="utf-8") as f:
        f.write("label\tclass\n")
        for label in labels:
            name = label
            if class_names is not None and 0 <= int(label) < len(class_names):
                name = class_names[int(label)]
            f.write(f"{_tsv_field(label)}\t{_tsv_field(name)}\n")
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add(
        tensor_name=tensor_name,
        tensor_shape=list(x.shape),
        tensor_path=TENSORS_FILE,
        metadata_path=METADATA_FILE,
    )
    if images is not None:
        png, (cell_h, cell_w) = _sprite(images)
        with open(path(SPRITE_FILE), "wb") as f:
            f.write(png)
        embedding.sprite.image_path = SPRITE_FILE
        embedding.sprite.single_image_dim.extend([cell_w, cell_h])
    projector.visualize_embeddings(log_dir, config)  # Writes projector_config.pbtxt.
    path(PROJECTOR_CONFIG)
    return written
