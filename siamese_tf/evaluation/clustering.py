"""Clustering of embeddings: scikit-learn k-means, scored against labels by NMI and AMI.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score


def _check_embeddings(embeddings) -> np.ndarray:
    try:
        x = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"embeddings must be numeric: {err}") from None
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty 2-D array [n, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return x


def cluster_embeddings(embeddings, n_clusters: int, seed: int = 0, n_init: int = 10) -> np.ndarray:
    """Clusters embeddings with k-means.

    Args:
      embeddings: [n, D].
      n_clusters: number of clusters, 1..n.
      seed: k-means' random state; the same seed gives the same clustering.
      n_init: k-means restarts (the best inertia wins); explicit because scikit-learn's default
        changed between versions.

    Returns:
      int [n] cluster ids in 0..n_clusters-1.

    Raises:
      ValueError: empty or non-finite embeddings, or n_clusters outside 1..n.
    """
    x = _check_embeddings(embeddings)
    if int(n_clusters) != n_clusters or not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(
            f"n_clusters must be an integer in [1, {x.shape[0]}] (the number of embeddings), "
            f"got {n_clusters!r}"
        )
    kmeans = KMeans(n_clusters=int(n_clusters), n_init=n_init, random_state=seed)
    return kmeans.fit_predict(x).astype(np.int64)


def clustering_scores(embeddings, labels, n_clusters: int | None = None, seed: int = 0) -> dict:
    """K-means clusters of embeddings scored against their labels.

    Args:
      embeddings: [n, D].
      labels: [n] true labels.
      n_clusters: number of clusters; None uses the number of distinct labels.
      seed: k-means' random state.

    Returns:
      {"nmi": normalized mutual information, "ami": adjusted mutual information (0 for chance
      agreement), "n_clusters": the number of clusters used}.

    Raises:
      ValueError: see `cluster_embeddings`, or labels that do not match the embeddings.
    """
    x = _check_embeddings(embeddings)
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
    if n_clusters is None:
        n_clusters = int(np.unique(y).size)
    clusters = cluster_embeddings(x, n_clusters, seed=seed)
    return {
        "nmi": float(normalized_mutual_info_score(y, clusters)),
        "ami": float(adjusted_mutual_info_score(y, clusters)),
        "n_clusters": int(n_clusters),
    }
