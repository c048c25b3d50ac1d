"""Online triplet mining in O(B²) memory and O(B² log B) time.

TensorFlow Addons found the semi-hard negative of every (anchor, positive) pair by tiling the
B×B distance matrix B times (a B³ tensor: 18.5 GB at B = 1024). Here each anchor's positives
are listed in a dense [A, K] table (K + 1 = the largest class size in the batch, from one sort
of the labels), and their distances are the *queries*: for each query x, the closest negative
farther than x.

* Few queries (K <= `LOOP_QUERIES_MAX`, the P×K case): one masked arg-min over the row per
  query — O(B²·K) time with a few cheap passes each.
* Many queries: the queries are sorted per anchor and every negative goes to the bucket between
  two consecutive queries (a `searchsorted` of the B×B matrix into [A, K]); one segment minimum
  of (distance, column) packed in an int64 gives each bucket's closest negative, and a query's
  answer is the first non-empty bucket above it (a cumulative count and a `searchsorted` over
  [A, K+1]) — O(B² log K) time.

Both select *columns* without gradient; the loss then gathers the selected entries of the
distance matrix, so the gradient reaches exactly those entries (on exact ties, one of the tied
negatives; TFA's masked minimum split the gradient among them) and nothing B×B is kept for the
backward pass. Memory is a handful of B×B tensors.

Batch-all mining counts, per (anchor, negative) and per (anchor, positive), the active triplets
`d(a, n) < d(a, p) + margin` the same two ways (loop or sorted buckets with a histogram); given
those counts its loss is linear in the distances, so it needs no B³ tensor either.

Everything works on *rows for a set of anchors*: `pdist` is [A, B] (the A anchors a replica owns,
scored against the whole, possibly all-gathered, batch of B) and `anchor_indices` [A] says which
batch row each anchor is (to exclude it from its own positives). By default A = B and the rows
are the whole batch. The losses build the masks once per batch (`negative_mask`, `positive_slots`)
and mine on them (`masked_semihard_negative_distances`, `masked_row_argmin`, `margin_counts`).

Runs wherever it is called (per replica inside a train step); statistics carry no gradient.
"""

from __future__ import annotations

import tensorflow as tf

from siamese_tf import distances as distances_lib


def _labels_1d(labels) -> tf.Tensor:
    """Labels of shape [B] or [B, 1] as a [B] tensor."""
    return tf.reshape(tf.convert_to_tensor(labels), [-1])


def _anchor_indices(labels, anchor_indices) -> tf.Tensor:
    if anchor_indices is None:
        return tf.range(tf.shape(labels)[0])
    return tf.cast(tf.reshape(anchor_indices, [-1]), tf.int32)


def negative_mask(labels, anchor_indices=None):
    """bool [A, B]: `out[i, j]` when batch row `j` has another label than anchor `i`.

    Args:
      labels: [B] or [B, 1] class labels of the whole batch.
      anchor_indices: optional [A] int anchor rows (default: all).

    Returns:
      bool [A, B] tensor.
    """
    labels = _labels_1d(labels)
    rows = _anchor_indices(labels, anchor_indices)
    return tf.not_equal(tf.gather(labels, rows)[:, None], labels[None, :])


def positive_slots(labels, anchor_indices=None):
    """Each anchor's positives as a dense [A, K] table of batch columns (K = largest class - 1).

    Built from one sort of the labels (O(B log B)), so the positives of a P×K batch cost
    [B, K - 1] work instead of a B×B scan.

    Args:
      labels: [B] or [B, 1] class labels of the whole batch.
      anchor_indices: optional [A] int anchor rows (default: all).

    Returns:
      `(columns, valid)`: int32 [A, K] batch columns and bool [A, K] (K >= 1); slot `(i, k)`
      holds a positive of anchor `i` (never the anchor itself) iff `valid[i, k]`.
    """
    labels = _labels_1d(labels)
    rows = _anchor_indices(labels, anchor_indices)
    batch = tf.shape(labels)[0]
    order = tf.argsort(labels, stable=True)
    sorted_labels = tf.gather(labels, order)
    anchor_labels = tf.gather(labels, rows)
    start = tf.searchsorted(sorted_labels, anchor_labels, side="left", out_type=tf.int32)
    count = tf.searchsorted(sorted_labels, anchor_labels, side="right", out_type=tf.int32) - start
    # Where the anchor itself sits in its class block: its slot is skipped.
    own = tf.gather(tf.math.invert_permutation(order), rows) - start
    width = tf.reduce_max(tf.concat([count - 1, [1]], axis=0))
    slot = tf.range(width)[None, :]
    in_block = slot + tf.cast(slot >= own[:, None], tf.int32)
    columns = tf.gather(order, tf.minimum(start[:, None] + in_block, tf.maximum(batch - 1, 0)))
    return columns, slot < count[:, None] - 1


def _sorted_keys(queries, valid):
    """Queries without gradient, invalid ones as +inf, sorted ascending per anchor."""
    keys = tf.stop_gradient(queries)
    if valid is not None:
        keys = tf.where(valid, keys, tf.constant(float("inf"), keys.dtype))
    return keys, tf.sort(keys, axis=1)


def _sortable_keys(values):
    """int64 keys ordered as the float `values` (total order; -0.0 just below +0.0).

    float64 values are ordered through float32 (the 32 high bits of the key), which only
    matters for values equal in float32.
    """
    bits = tf.bitcast(tf.cast(values, tf.float32), tf.int32)
    # IEEE floats compare like sign-magnitude integers: flip the magnitude bits of negatives.
    bits = tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, 0x7FFFFFFF), bits)
    return tf.cast(bits, tf.int64)


def gather_rows(matrix, columns):
    """`out[i, k] = matrix[i, columns[i, k]]`; the gradient is a scatter into the selected entries.

    Args:
      matrix: [A, B] tensor.
      columns: [A, K] int tensor.

    Returns:
      [A, K] tensor.
    """
    return tf.gather(matrix, columns, batch_dims=1)


def _arg_extreme(values, largest=False):
    """Row-wise argmin (argmax) as int32 [A]; zeros for a batch without columns."""
    pick = tf.argmax if largest else tf.argmin
    # argmin over an empty axis is an error; an empty batch (e.g. a replica's share of a short
    # last batch) has no rows to index anyway.
    return tf.cond(
        tf.shape(values)[1] > 0,
        lambda: pick(values, axis=1, output_type=tf.int32),
        lambda: tf.zeros([tf.shape(values)[0]], tf.int32),
    )


def masked_row_argmin(values, mask, largest=False):
    """Column of each row's minimum (or maximum) over the entries a mask allows, no gradient.

    Args:
      values: [A, B] float tensor, e.g. the distances of A anchors to a batch of B.
      mask: bool [A, B]; only entries where it is True are candidates.
      largest: pick the masked row maximum instead of the minimum.

    Returns:
      int32 [A, 1] columns; an arbitrary column for a row whose mask is empty.
    """
    fill = tf.constant(float("-inf") if largest else float("inf"), values.dtype)
    masked = tf.where(mask, tf.stop_gradient(values), fill)
    return _arg_extreme(masked, largest)[:, None]


def _transpose_int(x):
    """The transpose of an integer matrix [Q, A] -> [A, Q], as a gather.

    TensorFlow 2.21's oneDNN transpose of an integer tensor logs an "E0000 ... oneDNN supports
    DT_INT32 only on platforms with AVX-512" line on CPUs it does not support them on (once per
    process): a gather computes the same values without it.
    """
    rows, cols = tf.shape(x)[0], tf.shape(x)[1]
    flat = tf.range(rows)[None, :] * cols + tf.range(cols)[:, None]
    return tf.gather(tf.reshape(x, [-1]), flat)


def _column(matrix, j):
    """Column `j` of a matrix as [A, 1], `j` a tensor (a loop counter).

    A gather, not `matrix[:, j : j + 1]`: XLA gives a strided slice with a run-time start the
    shape of the whole matrix, and `--jit_compile` failed on it.
    """
    return tf.gather(matrix, j, axis=1)[:, None]


# Up to this many queries per anchor, a masked arg-min per query (O(B²·K), a few cheap passes
# each) beats bucketing (O(B² log K), but a B² searchsorted and a 64-bit segment minimum).
# Measured (CPU time, 2-core CPU, B = 4096): the loop costs ~0.06 s per query, the buckets
# 0.7-1.0 s for 3 to 31 queries; they cross near 14 queries.
LOOP_QUERIES_MAX = 12


def _closest_farther_by_loop(plain, negative, keys):
    """Per query: column of the closest negative farther than it, and whether there is one."""
    inf = tf.constant(float("inf"), plain.dtype)
    negative_d = tf.where(negative, plain, inf)
    num_queries = tf.shape(keys)[1]

    def body(j, columns):
        farther = tf.where(negative_d > _column(keys, j), negative_d, inf)
        return j + 1, columns.write(j, _arg_extreme(farther))

    _, columns = tf.while_loop(
        lambda j, _: j < num_queries,
        body,
        (tf.constant(0), tf.TensorArray(tf.int32, size=num_queries, element_shape=[None])),
    )
    columns = tf.reshape(_transpose_int(columns.stack()), tf.shape(keys))
    # argmin of an all-inf row is column 0: check that the pick is a negative farther than x.
    picked = gather_rows(negative_d, columns)
    return columns, tf.logical_and(picked > keys, picked < inf)


def _closest_farther_by_buckets(plain, negative, keys, sorted_keys):
    """Same as `_closest_farther_by_loop` in O(B² log K) time (K = number of queries)."""
    num_anchors = tf.shape(plain)[0]
    num_buckets = tf.shape(keys)[1] + 1
    # Bucket of a negative = number of queries strictly below it: the negatives farther than a
    # query x are exactly those in buckets >= (number of queries <= x).
    bucket = tf.searchsorted(sorted_keys, plain, side="left", out_type=tf.int32)
    segment = tf.where(negative, bucket + num_buckets * tf.range(num_anchors)[:, None], -1)
    # One segment minimum of (distance, column) packed in an int64 gives each bucket's closest
    # negative together with its column.
    column = tf.cast(tf.range(tf.shape(plain)[1]), tf.int64)[None, :]
    packed = _sortable_keys(plain) * (2**32) + column
    bucket_min = tf.math.unsorted_segment_min(
        tf.reshape(packed, [-1]), tf.reshape(segment, [-1]), num_anchors * num_buckets
    )
    bucket_min = tf.reshape(bucket_min, [num_anchors, num_buckets])
    nonempty = tf.cast(bucket_min < tf.int64.max, tf.int32)  # empty segments hold int64.max
    first_allowed = tf.searchsorted(sorted_keys, keys, side="right", out_type=tf.int32)
    rank = tf.cumsum(nonempty, axis=1)
    before = gather_rows(rank - nonempty, first_allowed)
    # First non-empty bucket at or after `first_allowed` (num_buckets when there is none).
    chosen = tf.searchsorted(rank, before + 1, side="left", out_type=tf.int32)
    chosen_packed = gather_rows(bucket_min, tf.minimum(chosen, num_buckets - 1))
    columns = tf.cast(tf.math.floormod(chosen_packed, 2**32), tf.int32)
    return columns, chosen < num_buckets


def masked_semihard_negative_distances(pdist, negative, queries, valid=None, loop_queries_max=None):
    """`semihard_negative_distances` (the same selection) for a negative mask already built.

    The distances gathered at `masked_semihard_negative_columns`: see it for the arguments.

    Returns:
      [A, Q] distances of the selected negatives, gathered from `pdist` (the gradient flows
      to exactly the selected entries).
    """
    columns = masked_semihard_negative_columns(pdist, negative, queries, valid, loop_queries_max)
    return gather_rows(pdist, columns)


def masked_semihard_negative_columns(pdist, negative, queries, valid=None, loop_queries_max=None):
    """The columns of the semi-hard negatives that `masked_semihard_negative_distances` gathers.

    Args:
      pdist: [A, B] float distances of the anchors to the whole batch.
      negative: bool [A, B] negative mask (`negative_mask`).
      queries: [A, Q] query distances, normally `d(a, p)` of each anchor's positive slots.
      valid: optional bool [A, Q]; the results of invalid slots are meaningless (mask them).
      loop_queries_max: one masked arg-min per query up to this many queries, else sorted
        buckets (default `LOOP_QUERIES_MAX`); both select the same negatives.

    Returns:
      [A, Q] int32 columns of the selected negatives (no gradient: gather the distances, e.g.
      with `gather_rows` or `distances.selectable_distances`, so that the gradient reaches
      exactly the selected entries and nothing B×B is kept for the backward pass).
    """
    if loop_queries_max is None:
        loop_queries_max = LOOP_QUERIES_MAX
    keys, sorted_keys = _sorted_keys(queries, valid)
    plain = tf.stop_gradient(pdist)
    outside, found = tf.cond(
        tf.shape(keys)[1] <= loop_queries_max,
        lambda: _closest_farther_by_loop(plain, negative, keys),
        lambda: _closest_farther_by_buckets(plain, negative, keys, sorted_keys),
    )
    # No negative farther than the query: the farthest negative (TFA's "negatives_inside");
    # no negative at all: the row minimum, as TFA's masked maximum of an empty mask gives.
    has_negative = tf.reduce_any(negative, axis=1, keepdims=True)
    farthest = masked_row_argmin(plain, negative, largest=True)
    fallback = tf.cond(  # the row minimum is only needed in a single-class batch
        tf.reduce_all(has_negative),
        lambda: farthest,
        lambda: tf.where(has_negative, farthest, masked_row_argmin(plain, tf.ones_like(negative))),
    )
    return tf.where(found, outside, fallback)


def semihard_negative_distances(pdist, labels, queries=None, anchor_indices=None):
    """FaceNet semi-hard negative distance for every (anchor, query distance).

    For anchor `a` and a distance `x` (normally `d(a, p)` of a positive `p`): the smallest
    `d(a, n)` over negatives `n` with `d(a, n) > x`; if there is none, the largest `d(a, n)`;
    if `a` has no negative at all, the smallest entry of the row (TFA's convention).

    Args:
      pdist: [A, B] float distances of the anchors to the whole batch (self-distances 0).
      labels: [B] or [B, 1] labels of the whole batch.
      queries: optional [A, Q] query distances; default `pdist` itself, which gives TFA's B×B
        `semi_hard_negatives` matrix.
      anchor_indices: optional [A] int batch rows of the anchors (default: all, A = B).

    Returns:
      [A, Q] distances of the selected negatives; the gradient flows to the selected entries of
      `pdist`. Memory O(A·B), time O(A·B·log Q).
    """
    pdist = tf.convert_to_tensor(pdist)
    negative = negative_mask(labels, anchor_indices)
    return masked_semihard_negative_distances(
        pdist, negative, pdist if queries is None else queries
    )


def _margin_counts_by_loop(plain, negative, keys):
    num_queries = tf.shape(keys)[1]
    # Invalid slots (+inf) must match no negative.
    keys = tf.where(keys < float("inf"), keys, tf.constant(-float("inf"), keys.dtype))

    def body(j, active, counts):
        hit = tf.logical_and(negative, plain < _column(keys, j))
        hit = tf.cast(hit, tf.int32)
        return j + 1, active + hit, counts.write(j, tf.reduce_sum(hit, axis=1))

    _, active, counts = tf.while_loop(
        lambda j, *_: j < num_queries,
        body,
        (
            tf.constant(0),
            tf.zeros(tf.shape(plain), tf.int32),
            tf.TensorArray(tf.int32, size=num_queries, element_shape=[None]),
        ),
    )
    return active, tf.reshape(_transpose_int(counts.stack()), tf.shape(keys))


def _margin_counts_by_buckets(plain, negative, keys):
    num_anchors = tf.shape(plain)[0]
    num_buckets = tf.shape(keys)[1] + 1
    order = tf.argsort(keys, axis=1)
    sorted_keys = gather_rows(keys, order)
    # below = number of keys <= d: the keys above d (the active ones) are the sorted suffix.
    below = tf.searchsorted(sorted_keys, plain, side="right", out_type=tf.int32)
    num_finite = tf.reduce_sum(tf.cast(keys < float("inf"), tf.int32), axis=1)
    active = tf.where(negative, num_finite[:, None] - below, 0)
    # Sorted query j is active with the negatives whose `below` <= j: a histogram of `below`
    # per anchor and a cumulative sum; the extra last bin collects the non-negatives.
    bins = num_anchors * num_buckets
    segment = tf.where(negative, below + num_buckets * tf.range(num_anchors)[:, None], bins)
    # The raw op rather than `tf.math.bincount`, whose output size is computed from the data
    # (max(segment) + 1), which XLA cannot compile; here the size comes from the shapes. (A
    # segment sum also compiles but is 1.5x slower without XLA.)
    histogram = tf.raw_ops.DenseBincount(
        input=tf.reshape(segment, [-1]), size=bins + 1, weights=tf.constant([], tf.int32)
    )
    histogram = tf.reshape(histogram[:bins], [num_anchors, num_buckets])
    sorted_counts = tf.cumsum(histogram, axis=1)[:, :-1]
    counts = gather_rows(sorted_counts, tf.argsort(order, axis=1))
    return active, counts


def margin_counts(distances, negative, keys, loop_queries_max=None):
    """Active-triplet counts of batch-all mining.

    Triplet (a, p, n) is active when `d(a, n) < d(a, p) + margin`, i.e. `d(a, n) < key`.
    Given these counts the batch-all loss is linear in the distances, so it needs no B³ tensor.

    Args:
      distances: [A, B] distances of the anchors to the batch (no gradient: stop it first).
      negative: bool [A, B] negative mask.
      keys: [A, Q] `d(a, p) + margin` per positive slot, +inf for invalid slots (no gradient).
      loop_queries_max: use the per-query loop up to this many queries (default
        `LOOP_QUERIES_MAX`), else sorted buckets (O(B² log Q)).

    Returns:
      `(active, counts)`: int32 [A, B] number of active triplets of each (anchor, negative)
      and int32 [A, Q] number of active triplets of each (anchor, positive slot) (only
      meaningful for valid slots).
    """
    if loop_queries_max is None:
        loop_queries_max = LOOP_QUERIES_MAX
    return tf.cond(
        tf.shape(keys)[1] <= loop_queries_max,
        lambda: _margin_counts_by_loop(distances, negative, keys),
        lambda: _margin_counts_by_buckets(distances, negative, keys),
    )


def margin_keys(positive_distances, valid, margin):
    """`d(a, p) + margin` per positive slot without gradient, +inf for invalid slots."""
    shifted = tf.stop_gradient(positive_distances) + margin
    return tf.where(valid, shifted, tf.constant(float("inf"), shifted.dtype))


def batch_statistics_terms(labels, pdist, margin=1.0, anchor_indices=None):
    """Sums and counts behind `batch_statistics`, to be added up across replicas.

    Args:
      labels: [B] or [B, 1] labels of the whole batch.
      pdist: [A, B] distances of the anchors to the batch.
      margin: margin of the active-triplet test `d(a, p) - d(a, n) + margin > 0`.
      anchor_indices: optional [A] int anchor rows (default: all).

    Returns:
      dict of float32 scalars without gradient: `positive_distance_sum`, `positive_pairs`,
      `negative_distance_sum`, `negative_pairs`, `active_triplets`, `valid_triplets`.
    """
    pdist = tf.stop_gradient(tf.cast(pdist, tf.float32))
    negative = negative_mask(labels, anchor_indices)
    columns, valid = positive_slots(labels, anchor_indices)
    positive_d = gather_rows(pdist, columns)
    active, _ = margin_counts(pdist, negative, margin_keys(positive_d, valid, float(margin)))
    num_valid = tf.reduce_sum(tf.cast(valid, tf.float32), axis=1)
    num_negative = tf.reduce_sum(tf.cast(negative, tf.float32), axis=1)
    return {
        "positive_distance_sum": tf.reduce_sum(tf.where(valid, positive_d, 0.0)),
        "positive_pairs": tf.reduce_sum(num_valid),
        "negative_distance_sum": tf.reduce_sum(tf.where(negative, pdist, 0.0)),
        "negative_pairs": tf.reduce_sum(num_negative),
        "active_triplets": tf.cast(tf.reduce_sum(tf.cast(active, tf.int64)), tf.float32),
        "valid_triplets": tf.reduce_sum(num_valid * num_negative),
    }


def statistics_from_terms(terms):
    """Turns (possibly cross-replica summed) `batch_statistics_terms` into the three means.

    Args:
      terms: dict as returned by `batch_statistics_terms`.

    Returns:
      dict of float32 scalars `active_triplet_fraction`, `mean_positive_distance`,
      `mean_negative_distance` (0 where nothing was counted).
    """
    return {
        "active_triplet_fraction": tf.math.divide_no_nan(
            terms["active_triplets"], terms["valid_triplets"]
        ),
        "mean_positive_distance": tf.math.divide_no_nan(
            terms["positive_distance_sum"], terms["positive_pairs"]
        ),
        "mean_negative_distance": tf.math.divide_no_nan(
            terms["negative_distance_sum"], terms["negative_pairs"]
        ),
    }


def batch_statistics(
    labels, embeddings=None, margin=1.0, distance_metric="L2", *, pdist=None, anchor_indices=None
):
    """Mining statistics of a labelled batch, for metrics (no gradient).

    Args:
      labels: [B] or [B, 1] labels.
      embeddings: [B, D] embeddings (ignored when `pdist` is given).
      margin: margin of the active-triplet test.
      distance_metric: "L2", "squared-L2", "angular" or a callable (see `distances`).
      pdist: optional precomputed [A, B] distances of the anchors to the batch.
      anchor_indices: optional [A] int anchor rows (default: all).

    Returns:
      dict of float32 scalars: `active_triplet_fraction` (valid triplets (a, p, n) with
      `d(a, p) - d(a, n) + margin > 0`, over all valid triplets), `mean_positive_distance`,
      `mean_negative_distance`; each 0 when there is nothing to average. O(B²) memory,
      O(B² log K) time.

    Raises:
      ValueError: neither `embeddings` nor `pdist` given, or an unknown metric.
    """
    if pdist is None:
        if embeddings is None:
            raise ValueError("batch_statistics needs `embeddings` or `pdist`")
        pdist = distances_lib.pairwise_distances(
            tf.stop_gradient(embeddings), distance_metric, anchor_indices
        )
    return statistics_from_terms(batch_statistics_terms(labels, pdist, margin, anchor_indices))
