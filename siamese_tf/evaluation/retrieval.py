"""Retrieval metrics of embeddings: 1-NN, recall@k, precision@k, MAP@R.

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

import numpy as np
from sklearn.metrics import pairwise_distances

METRICS = ("euclidean", "cosine")

# Query rows per distance chunk: about 2**23 distances (64 MiB of float64) at a time.
_CHUNK_ELEMENTS = 1 << 23


def check_metric(metric: str) -> str:
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
    check_metric(metric)
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
