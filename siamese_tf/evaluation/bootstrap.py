"""Percentile bootstrap confidence intervals of the AUC and the EER of pair distances.

Resampling is stratified (positives from the positives, negatives from the negatives) and
vectorised over replicates in chunks of bounded memory. Numpy only; no TensorFlow.
"""

from __future__ import annotations

import numpy as np

from siamese_tf.evaluation.sweep import check_pairs, eer_crossing

BOOTSTRAP_STATISTICS = ("auc", "eer")


# Upper bound on the number of elements of one bootstrap work matrix (replicates × pairs), so
# memory stays bounded (~32 MiB per float64 matrix) however many pairs or resamples are asked for.
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 22


def _resample_counts(rng: np.random.Generator, size: int, replicates: int) -> np.ndarray:
    """[replicates, size] int64: how often each item is drawn in `size` draws with replacement.

    Multinomial counts via uniform indices and one offset `bincount`, several times faster than
    `Generator.multinomial` with thousands of equal categories.
    """
    idx = rng.integers(0, size, size=(replicates, size))
    idx += np.arange(replicates)[:, None] * size
    return np.bincount(idx.ravel(), minlength=replicates * size).reshape(replicates, size)


def _bootstrap_auc(pos, neg, n_resamples, rng) -> np.ndarray:
    """AUC of stratified resamples, vectorised over replicates.

    A resample is a pair of count vectors (how often each positive / negative is
    drawn). With negatives sorted, the weighted number of negatives farther than a positive is
    read off the per-replicate cumulative counts at that positive's `searchsorted` positions.
    """
    neg = np.sort(neg)
    lo = np.searchsorted(neg, pos, side="left")
    hi = np.searchsorted(neg, pos, side="right")
    num_pos, num_neg = pos.size, neg.size
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // (num_pos + num_neg))
    out = []
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        w_neg = _resample_counts(rng, num_neg, b)
        w_pos = _resample_counts(rng, num_pos, b)
        cum = np.concatenate([np.zeros((b, 1), np.int64), np.cumsum(w_neg, axis=1)], axis=1)
        farther = num_neg - cum[:, hi]  # negatives with a larger distance than the positive
        tied = cum[:, hi] - cum[:, lo]
        out.append(np.sum(w_pos * (farther + 0.5 * tied), axis=1) / (num_pos * num_neg))
    return np.concatenate(out)


def _bootstrap_eer(d, s, n_resamples, rng) -> np.ndarray:
    """EER of stratified resamples: weighted sweeps, vectorised over replicates.

    The weighted TP (FP) count at a sweep point is the cumulative count of the positives
    (negatives) sorted at or before that point's last distance, read off per-replicate
    cumulative sums of the multinomial counts.
    """
    order = np.argsort(d, kind="stable")
    d_sorted, s_sorted = d[order], s[order]
    last = np.flatnonzero(np.r_[d_sorted[1:] != d_sorted[:-1], True])
    pos_upto = np.cumsum(s_sorted)[last]  # positives at or before each sweep point
    neg_upto = np.cumsum(~s_sorted)[last]
    num_pos, num_neg = int(s.sum()), int((~s).sum())
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // (num_pos + num_neg + last.size))
    out = []
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        w_pos = _resample_counts(rng, num_pos, b)
        w_neg = _resample_counts(rng, num_neg, b)
        zero = np.zeros((b, 1), np.int64)
        cum_pos = np.concatenate([zero, np.cumsum(w_pos, axis=1)], axis=1)
        cum_neg = np.concatenate([zero, np.cumsum(w_neg, axis=1)], axis=1)
        tp = np.concatenate([zero, cum_pos[:, pos_upto]], axis=1)
        fp = np.concatenate([zero, cum_neg[:, neg_upto]], axis=1)
        out.append(eer_crossing(tp, fp, num_pos, num_neg)[0])
    return np.concatenate(out)


def bootstrap_ci(
    distances,
    same,
    statistic: str = "auc",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the AUC or the EER.

    Resampling is stratified: each replicate draws the positive pairs with replacement from the
    positives and the negatives from the negatives, so both classes keep their sizes (and are
    always present). Replicates are computed in vectorised chunks of bounded memory.

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n].
      statistic: "auc" or "eer".
      n_resamples: number of bootstrap replicates.
      confidence: the interval's coverage, in (0, 1).
      seed: seed of the `numpy.random.Generator`; the same seed gives the same interval.

    Returns:
      (low, high): the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the
      replicates.

    Raises:
      ValueError: see `check_pairs`, an unknown statistic, n_resamples < 1 or a confidence
        outside (0, 1).
    """
    if statistic not in BOOTSTRAP_STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; choose one of {BOOTSTRAP_STATISTICS}")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    d, s = check_pairs(distances, same)
    rng = np.random.default_rng(seed)
    if statistic == "auc":
        values = _bootstrap_auc(d[s], d[~s], int(n_resamples), rng)
    else:
        values = _bootstrap_eer(d, s, int(n_resamples), rng)
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)
