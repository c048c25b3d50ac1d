"""N-way k-shot evaluation of embeddings: seeded episodes and their accuracy (no TensorFlow).

An episode draws N classes, k support examples and some queries of each; a query gets the
class of its nearest support (by mean, min or centroid distance over the k shots). Distances
are Euclidean or cosine, as in `siamese_tf.evaluation.retrieval`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from siamese_tf.evaluation.retrieval import check_metric

SUPPORT_REDUCTIONS = ("mean", "min", "centroid")


@dataclasses.dataclass(frozen=True)
class Episodes:
    """Indices of N-way k-shot episodes into a labelled set.

    Attributes:
      support: [E, N, K] indices of the support examples of each episode's N classes.
      query: [E, N * num_queries] indices of the queries, class by class.
      query_targets: [E, N * num_queries] the position (0..N-1) of each query's class.
      classes: [E, N] the label of each episode class.
    """

    support: np.ndarray
    query: np.ndarray
    query_targets: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return int(self.support.shape[0])


def sample_episodes(
    labels,
    n_way: int,
    k_shot: int = 1,
    num_queries: int = 1,
    num_episodes: int = 100,
    seed: int = 0,
) -> Episodes:
    """Samples N-way k-shot episodes (for `n_way_k_shot_accuracy`).

    Each episode draws `n_way` distinct classes, then for each class `k_shot` support examples
    and `num_queries` queries, all distinct. Classes with fewer than `k_shot + num_queries`
    examples cannot fill an episode and are never drawn.

    Args:
      labels: [n] labels of the set the indices point into.
      n_way: classes per episode.
      k_shot: support examples per class.
      num_queries: queries per class.
      num_episodes: number of episodes.
      seed: seed of the `numpy.random.Generator`; the same seed gives the same episodes.

    Returns:
      `Episodes`; gather embeddings with `embeddings[episodes.support]` ([E, N, K, D]) and
      `embeddings[episodes.query]` ([E, N * num_queries, D]).

    Raises:
      ValueError: non-positive sizes, or fewer than `n_way` classes with enough examples.
    """
    for name, value in (
        ("n_way", n_way),
        ("k_shot", k_shot),
        ("num_queries", num_queries),
        ("num_episodes", num_episodes),
    ):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    values, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    need = k_shot + num_queries
    eligible = np.flatnonzero(counts >= need)
    if eligible.size < n_way:
        raise ValueError(
            f"{n_way}-way {k_shot}-shot episodes with {num_queries} queries per class need "
            f"{n_way} classes with at least {need} examples; only {eligible.size} of "
            f"{values.size} classes have that many"
        )
    members = {int(c): np.flatnonzero(inverse == c) for c in eligible}
    rng = np.random.default_rng(seed)
    support = np.empty((num_episodes, n_way, k_shot), np.int64)
    query = np.empty((num_episodes, n_way, num_queries), np.int64)
    classes = np.empty((num_episodes, n_way), np.int64)
    for e in range(num_episodes):
        classes[e] = rng.choice(eligible, size=n_way, replace=False)
        for j, c in enumerate(classes[e]):
            picked = rng.choice(members[int(c)], size=need, replace=False)
            support[e, j], query[e, j] = picked[:k_shot], picked[k_shot:]
    targets = np.broadcast_to(np.arange(n_way)[None, :, None], query.shape)
    return Episodes(
        support=support,
        query=query.reshape(num_episodes, -1),
        query_targets=targets.reshape(num_episodes, -1).copy(),
        classes=values[classes],
    )


def _episode_distances(support, query, metric: str, reduction: str) -> np.ndarray:
    """[E, Q, N] distance from each query to each class of its episode."""
    if metric == "cosine":
        # Cosine distance of unit vectors; zero vectors stay zero (distance 1 to everything).
        def unit(x):
            norm = np.linalg.norm(x, axis=-1, keepdims=True)
            return x / np.where(norm > 0, norm, 1.0)

        support, query = unit(support), unit(query)
    if reduction == "centroid":
        support = support.mean(axis=2, keepdims=True)  # prototypes [E, N, 1, D]
        if metric == "cosine":
            norm = np.linalg.norm(support, axis=-1, keepdims=True)
            support = support / np.where(norm > 0, norm, 1.0)
    dot = np.einsum("eqd,enkd->eqnk", query, support)
    if metric == "cosine":
        dist = 1.0 - dot
    else:
        # |q - s|^2 = |q|^2 + |s|^2 - 2 q.s: [E, Q, N, K] without an [E, Q, N, K, D] tensor.
        sq = (
            np.sum(query**2, axis=-1)[:, :, None, None]
            + np.sum(support**2, axis=-1)[:, None, :, :]
            - 2.0 * dot
        )
        dist = np.sqrt(np.maximum(sq, 0.0))
    return dist.min(axis=3) if reduction == "min" else dist.mean(axis=3)


def episode_accuracies(
    support_embeddings,
    query_embeddings,
    query_targets,
    metric: str = "euclidean",
    reduction: str = "mean",
) -> np.ndarray:
    """Per-episode accuracy of N-way k-shot classification by distance to the support set.

    A query is assigned the class whose support examples are closest: by the mean distance to
    them ("mean"), the distance to the nearest one ("min"), or the distance to their mean
    embedding ("centroid", the prototype of prototypical networks; with the cosine metric the
    mean of the unit-normalised embeddings, i.e. their mean direction). With k = 1 all three
    are the same. Ties go to the lower class position.

    Args:
      support_embeddings: [E, N, K, D].
      query_embeddings: [E, Q, D].
      query_targets: [E, Q] ints, each the position (0..N-1) of the query's class.
      metric: "euclidean" or "cosine".
      reduction: "mean", "min" or "centroid".

    Returns:
      float64 [E] accuracies.

    Raises:
      ValueError: inconsistent shapes, targets outside 0..N-1, non-finite embeddings, an
        unknown metric or reduction.
    """
    check_metric(metric)
    if reduction not in SUPPORT_REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; choose one of {SUPPORT_REDUCTIONS}")
    support = np.asarray(support_embeddings, dtype=np.float64)
    query = np.asarray(query_embeddings, dtype=np.float64)
    targets = np.asarray(query_targets)
    if support.ndim != 4 or 0 in support.shape:
        raise ValueError(f"support_embeddings must be non-empty [E, N, K, D], got {support.shape}")
    if query.ndim != 3 or 0 in query.shape:
        raise ValueError(f"query_embeddings must be non-empty [E, Q, D], got {query.shape}")
    e, n, _, dim = support.shape
    if query.shape[0] != e or query.shape[2] != dim:
        raise ValueError(
            f"query_embeddings {query.shape} do not match support_embeddings {support.shape} "
            "(episodes and dimension must agree)"
        )
    if targets.shape != query.shape[:2]:
        raise ValueError(f"query_targets must have shape {query.shape[:2]}, got {targets.shape}")
    if not np.issubdtype(targets.dtype, np.integer) or targets.min() < 0 or targets.max() >= n:
        raise ValueError(f"query_targets must be integers in [0, {n - 1}]")
    if not (np.isfinite(support).all() and np.isfinite(query).all()):
        raise ValueError("embeddings contain NaN or infinite values")
    predicted = np.argmin(_episode_distances(support, query, metric, reduction), axis=2)
    return np.mean(predicted == targets, axis=1)


def n_way_k_shot_accuracy(
    support_embeddings,
    query_embeddings,
    query_targets,
    metric: str = "euclidean",
    reduction: str = "mean",
) -> float:
    """Mean N-way k-shot accuracy over episodes (all episodes have the same number of queries).

    See `episode_accuracies` for the arguments, the decision rule and the errors. Build the
    inputs with `sample_episodes`, or from a fixed protocol such as the 20 Omniglot one-shot
    runs of Lake et al. 2015 (E = 20, N = 20, K = 1, Q = 20).

    Returns:
      The accuracy over all queries of all episodes.
    """
    return float(
        episode_accuracies(
            support_embeddings, query_embeddings, query_targets, metric, reduction
        ).mean()
    )
