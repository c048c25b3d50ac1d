"""Retrieval and few-shot metrics of embeddings: 1-NN, recall@k, precision@k, MAP@R, N-way k-shot.

Embeddings are float arrays [n, D]; labels are any 1-D array whose items compare with `==`
(ints or strings). Distances are Euclidean by default, or cosine (1 - cosine similarity), from
scikit-learn's `pairwise_distances`, computed in chunks of queries so memory stays bounded for
large galleries. Nothing here imports TensorFlow.

Retrieval metrics follow Musgrave et al., "A Metric Learning Reality Check" (ECCV 2020): with
no separate gallery, every query is searched against the other queries (leave-one-out; a query
never retrieves itself, though an exact duplicate of it counts like any other item), and
queries with no same-label item among the references are left out, because no ranking could
answer them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from sklearn.metrics import pairwise_distances

METRICS = ("euclidean", "cosine")
SUPPORT_REDUCTIONS = ("mean", "min", "centroid")

# Query rows per distance chunk: about 2**23 distances (64 MiB of float64) at a time.
_CHUNK_ELEMENTS = 1 << 23


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    return metric


def _check_embeddings(embeddings, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        x = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} embeddings must be numeric: {err}") from None
    if x.ndim != 2:
        raise ValueError(f"{name} embeddings must be 2-D [n, D], got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} embeddings are empty")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} embeddings contain NaN or infinite values")
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"{name} labels must have shape ({x.shape[0]},) to match the embeddings, got {y.shape}"
        )
    return x, y


def _check_ks(ks) -> tuple[int, ...]:
    ks = tuple(int(k) for k in np.atleast_1d(ks))
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    return ks


def _prepare(query_embeddings, query_labels, gallery_embeddings, gallery_labels, metric):
    """Validated (query, query labels, gallery, gallery labels, leave_one_out)."""
    _check_metric(metric)
    q, ql = _check_embeddings(query_embeddings, query_labels, "query")
    if (gallery_embeddings is None) != (gallery_labels is None):
        raise ValueError("give both gallery_embeddings and gallery_labels, or neither")
    if gallery_embeddings is None:
        if q.shape[0] < 2:
            raise ValueError("leave-one-out retrieval needs at least 2 query embeddings")
        return q, ql, q, ql, True
    g, gl = _check_embeddings(gallery_embeddings, gallery_labels, "gallery")
    if g.shape[1] != q.shape[1]:
        raise ValueError(
            f"query and gallery embeddings differ in dimension: {q.shape[1]} vs {g.shape[1]}"
        )
    return q, ql, g, gl, False


def _relevant_counts(ql, gl, leave_one_out: bool) -> np.ndarray:
    """Number of gallery items sharing each query's label (the query itself not counted)."""
    values, counts = np.unique(gl, return_counts=True)
    pos = np.clip(np.searchsorted(values, ql), 0, values.size - 1)
    found = values[pos] == ql
    num = np.where(found, counts[pos], 0)
    return num - 1 if leave_one_out else num


def _iter_hits(q, ql, g, gl, k: int, metric: str, self_index=None):
    """Yields (rows, hits) over chunks of queries; hits is bool [len(rows), k].

    hits[i, j] says whether the j-th nearest gallery item of query i shares its label.
    `self_index[i]`, when given, is the gallery position of query i itself, never retrieved
    (excluded by position, not by distance 0: an exact duplicate is a legitimate match).
    Distances are computed a chunk of queries at a time to bound memory. Among the k nearest,
    equal distances are ordered by gallery index; which of several items tied exactly at the
    k-th distance make the cut is left to numpy's partition (deterministic for equal input).
    """
    available = g.shape[0] - (0 if self_index is None else 1)
    if k > available:
        raise ValueError(f"k={k} exceeds the {available} gallery items each query can retrieve")
    rows = max(1, _CHUNK_ELEMENTS // max(g.shape[0], k))
    for start in range(0, q.shape[0], rows):
        chunk = slice(start, min(start + rows, q.shape[0]))
        dist = pairwise_distances(q[chunk], g, metric=metric)
        if self_index is not None:
            dist[np.arange(dist.shape[0]), self_index[chunk]] = np.inf
        if k < g.shape[0]:
            part = np.argpartition(dist, k - 1, axis=1)[:, :k]
            part.sort(axis=1)  # by gallery index, so the stable sort below breaks ties by it
        else:
            part = np.broadcast_to(np.arange(g.shape[0]), dist.shape)
        part_dist = np.take_along_axis(dist, part, axis=1)
        nearest = np.take_along_axis(part, np.argsort(part_dist, axis=1, kind="stable"), axis=1)
        yield chunk, gl[nearest[:, :k]] == ql[chunk, None]


def nearest_neighbour_accuracy(
    query_embeddings, query_labels, gallery_embeddings, gallery_labels, metric: str = "euclidean"
) -> float:
    """1-nearest-neighbour classification accuracy of queries against a labelled gallery.

    Every query counts, including those whose label is absent from the gallery (they are
    misclassified), so this is a classification accuracy, unlike `recall_at_k`.

    Args:
      query_embeddings: [Q, D].
      query_labels: [Q].
      gallery_embeddings: [G, D], or None to search each query against the other queries.
      gallery_labels: [G], or None with `gallery_embeddings`.
      metric: "euclidean" or "cosine".

    Returns:
      The fraction of queries whose nearest gallery item has the query's label.

    Raises:
      ValueError: empty or non-finite embeddings, mismatched shapes, or an unknown metric.
    """
    q, ql, g, gl, loo = _prepare(
        query_embeddings, query_labels, gallery_embeddings, gallery_labels, metric
    )
    self_index = np.arange(q.shape[0]) if loo else None
    hits = _iter_hits(q, ql, g, gl, 1, metric, self_index)
    correct = sum(int(h.sum()) for _, h in hits)
    return correct / q.shape[0]


def _answerable(q, ql, gl, leave_one_out):
    """The queries with a same-label reference: (queries, labels, self_index, num_relevant)."""
    relevant = _relevant_counts(ql, gl, leave_one_out)
    keep = np.flatnonzero(relevant > 0)
    if keep.size == 0:
        raise ValueError(
            "no query has a same-label item among the references; retrieval metrics are undefined"
        )
    # In leave-one-out the gallery is the query set, so query i sits at gallery position i.
    self_index = keep if leave_one_out else None
    return q[keep], ql[keep], self_index, relevant[keep]


def recall_at_k(
    query_embeddings,
    query_labels,
    gallery_embeddings=None,
    gallery_labels=None,
    ks=(1, 2, 4, 8),
    metric: str = "euclidean",
) -> dict[int, float]:
    """Recall@k: the fraction of queries with at least one same-label item among the k nearest.

    Args:
      query_embeddings: [Q, D].
      query_labels: [Q].
      gallery_embeddings: [G, D], or None to search each query against the other queries.
      gallery_labels: [G], or None with `gallery_embeddings`.
      ks: the k values.
      metric: "euclidean" or "cosine".

    Returns:
      {k: recall@k}, over the queries that have at least one same-label reference.

    Raises:
      ValueError: bad embeddings or labels, a k larger than the gallery, no answerable query,
        or an unknown metric.
    """
    q, ql, g, gl, loo = _prepare(
        query_embeddings, query_labels, gallery_embeddings, gallery_labels, metric
    )
    ks = _check_ks(ks)
    q, ql, self_index, _ = _answerable(q, ql, gl, loo)
    idx = np.asarray(ks) - 1
    found = np.zeros(len(ks))
    for _, hits in _iter_hits(q, ql, g, gl, max(ks), metric, self_index):
        found += np.sum(np.cumsum(hits, axis=1)[:, idx] > 0, axis=0)
    return {k: float(f / q.shape[0]) for k, f in zip(ks, found, strict=True)}


def precision_at_k(
    query_embeddings,
    query_labels,
    gallery_embeddings=None,
    gallery_labels=None,
    ks=(1, 2, 4, 8),
    metric: str = "euclidean",
) -> dict[int, float]:
    """Precision@k: the mean fraction of same-label items among each query's k nearest.

    Args and Raises: as `recall_at_k`.

    Returns:
      {k: precision@k}, over the queries that have at least one same-label reference.
    """
    q, ql, g, gl, loo = _prepare(
        query_embeddings, query_labels, gallery_embeddings, gallery_labels, metric
    )
    ks = _check_ks(ks)
    q, ql, self_index, _ = _answerable(q, ql, gl, loo)
    idx = np.asarray(ks) - 1
    total = np.zeros(len(ks))
    for _, hits in _iter_hits(q, ql, g, gl, max(ks), metric, self_index):
        total += np.sum(np.cumsum(hits, axis=1)[:, idx], axis=0)
    return {k: float(tot / (k * q.shape[0])) for k, tot in zip(ks, total, strict=True)}


def map_at_r(
    query_embeddings,
    query_labels,
    gallery_embeddings=None,
    gallery_labels=None,
    metric: str = "euclidean",
) -> float:
    """MAP@R (Musgrave et al. 2020): mean average precision over each query's R nearest items.

    R is the number of same-label references of the query. For one query,
    AP@R = (1 / R) * sum_{i <= R} P(i) * rel(i), where rel(i) is 1 when the i-th nearest item
    shares the query's label and P(i) is the precision among the i nearest. It rewards ranking
    all same-label items first, which recall@1 alone does not see.

    Args:
      query_embeddings: [Q, D].
      query_labels: [Q].
      gallery_embeddings: [G, D], or None to search each query against the other queries.
      gallery_labels: [G], or None with `gallery_embeddings`.
      metric: "euclidean" or "cosine".

    Returns:
      MAP@R over the queries that have at least one same-label reference.

    Raises:
      ValueError: bad embeddings or labels, no answerable query, or an unknown metric.
    """
    q, ql, g, gl, loo = _prepare(
        query_embeddings, query_labels, gallery_embeddings, gallery_labels, metric
    )
    q, ql, self_index, relevant = _answerable(q, ql, gl, loo)
    r_max = int(relevant.max())
    ranks = np.arange(1, r_max + 1)
    ap_sum = 0.0
    for chunk, hits in _iter_hits(q, ql, g, gl, r_max, metric, self_index):
        r = relevant[chunk, None]
        precision = np.cumsum(hits, axis=1) / ranks
        ap_sum += float(np.sum(np.sum(precision * (hits & (ranks <= r)), axis=1) / r[:, 0]))
    return ap_sum / q.shape[0]


# --------------------------------------------------------------------------------------------
# N-way k-shot episodes.


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
    _check_metric(metric)
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


def one_shot_accuracy(
    support_embeddings, query_embeddings, query_targets, metric: str = "euclidean"
) -> float:
    """N-way one-shot accuracy: `n_way_k_shot_accuracy` with support_embeddings [E, N, 1, D]."""
    support = np.asarray(support_embeddings)
    if support.ndim != 4 or support.shape[2] != 1:
        raise ValueError(
            f"one-shot support_embeddings must be [E, N, 1, D], got shape {support.shape}"
        )
    return n_way_k_shot_accuracy(support, query_embeddings, query_targets, metric)
