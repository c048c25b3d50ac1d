"""In-graph, stateless batch samplers: P×K batches and balanced pair batches.

Every batch is a pure function of `(seed, stream, step)`: the per-step random seed is
`fold_in(fold_in([seed, 0], stream), step)` and all draws use stateless random ops. Hence

* the same seed gives the same batches, on any machine;
* different streams (replicas, workers) draw different batches without coordination;
* a dataset started at `start_step=s` yields exactly the batches a run from step 0 yields from
  step s on, so resuming a job needs no iterator state in the checkpoint.

Nothing pair-shaped is ever materialised: a batch is drawn from the class index as row indices,
and only then are the rows gathered (and decoded, if a `map_fn` is given) in a parallel map.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from siamese_tf.data.class_index import ClassIndex
from siamese_tf.errors import InputError

CLASS_WEIGHTINGS = ("uniform", "proportional")


def step_seed(seed: int, stream, step) -> tf.Tensor:
    """Returns the stateless seed of one batch. Runs in the input pipeline.

    Args:
      seed: the run's integer seed.
      stream: replica / worker / pipeline id (scalar int tensor or int).
      step: the batch's step number (scalar int64 tensor or int).

    Returns:
      An int64 tensor of shape [2] for `tf.random.stateless_*` ops.
    """
    base = tf.constant([seed, 0], dtype=tf.int64)
    with_stream = tf.random.experimental.stateless_fold_in(base, tf.cast(stream, tf.int64))
    return tf.random.experimental.stateless_fold_in(with_stream, tf.cast(step, tf.int64))


def _draw_k_offsets(counts: tf.Tensor, k: int, seed: tf.Tensor) -> tf.Tensor:
    """K example offsets per class: without replacement when a class has >= K examples.

    Robert Floyd's algorithm, vectorised over classes: O(P·K²) work and memory whatever the class
    sizes (random keys over every example of a class would cost O(P·max class size) per step).

    Args:
      counts: int64 [P], examples in each chosen class.
      k: examples to draw per class.
      seed: stateless seed [2].

    Returns:
      int64 [P, K] offsets in [0, count).
    """
    uniforms = tf.random.stateless_uniform(
        tf.stack([tf.size(counts), 2 * k]), seed=seed, dtype=tf.float64
    )
    counts_f = tf.cast(counts, tf.float64)[:, None]
    chosen = []
    for i in range(k):
        # Floyd: for j = n-K+i, draw t in [0, j]; if t was already taken, take j instead.
        j = counts[:, None] - k + i
        t = tf.cast(tf.floor(uniforms[:, i : i + 1] * tf.cast(j + 1, tf.float64)), tf.int64)
        if chosen:
            taken = tf.reduce_any(tf.equal(tf.concat(chosen, axis=1), t), axis=1, keepdims=True)
            t = tf.where(taken, j, t)
        chosen.append(t)
    without_replacement = tf.concat(chosen, axis=1)
    with_replacement = tf.cast(tf.floor(uniforms[:, k:] * counts_f), tf.int64)
    return tf.where(counts[:, None] >= k, without_replacement, with_replacement)


def _class_keys(shape, seed, log_weights):
    """Gumbel keys: top-k of them is sampling without replacement, uniform or weighted."""
    uniforms = tf.random.stateless_uniform(shape, seed=seed, minval=1e-12, maxval=1.0)
    gumbel = -tf.math.log(-tf.math.log(uniforms))
    return gumbel if log_weights is None else gumbel + log_weights


class _IndexTensors:
    """The class index as constant tensors, restricted to classes a sampler may draw."""

    def __init__(self, index: ClassIndex, min_count: int, class_weighting: str):
        if class_weighting not in CLASS_WEIGHTINGS:
            raise InputError(
                f"class_weighting must be one of {CLASS_WEIGHTINGS}, got {class_weighting!r}"
            )
        eligible = np.flatnonzero(index.counts >= min_count)
        self.num_eligible = int(eligible.size)
        self.order = tf.constant(index.order, tf.int64)
        self.starts = tf.constant(index.starts[eligible], tf.int64)
        self.counts = tf.constant(index.counts[eligible], tf.int64)
        self.labels = tf.constant(index.class_labels[eligible].astype(np.int64), tf.int64)
        self.log_weights = (
            None
            if class_weighting == "uniform"
            else tf.constant(np.log(index.counts[eligible]), tf.float32)
        )

    def rows(self, classes, offsets):
        """Source rows of example `offsets` of eligible class `classes` (same shapes)."""
        return tf.gather(self.order, tf.gather(self.starts, classes) + offsets)


def _as_index(images, labels) -> ClassIndex:
    if images is not None and len(images) != len(labels):
        raise InputError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
    return ClassIndex.from_labels(labels)


def pk_indices(
    labels,
    *,
    classes_per_batch: int,
    samples_per_class: int,
    seed: int,
    start_step: int = 0,
    stream: int = 0,
    class_weighting: str = "uniform",
    index: ClassIndex | None = None,
) -> tf.data.Dataset:
    """Dataset of P×K batches as (row indices [P·K], labels [P·K]).

    Each batch holds P distinct classes and K examples of each, grouped class by class; examples
    are drawn without replacement when the class has K or more (else with replacement). Classes
    with a single example cannot form a positive pair and are never drawn.

    Args:
      labels: integer labels [N].
      classes_per_batch: P.
      samples_per_class: K.
      seed: integer seed; batches are a pure function of (seed, stream, step).
      start_step: first step to yield (resume).
      stream: replica / worker id; different streams give different batches.
      class_weighting: "uniform" over classes, or "proportional" to class size.
      index: a prebuilt class index of `labels` (saves a pass).

    Returns:
      An infinite `tf.data.Dataset` of `(rows, labels)`, both int64 [P·K].

    Raises:
      InputError: non-positive P or K, or fewer eligible classes than P.
    """
    p, k = int(classes_per_batch), int(samples_per_class)
    if p < 1 or k < 1:
        raise InputError(f"classes_per_batch and samples_per_class must be >= 1, got {p} and {k}")
    index = index or ClassIndex.from_labels(labels)
    tensors = _IndexTensors(index, min_count=2, class_weighting=class_weighting)
    if tensors.num_eligible < p:
        raise InputError(
            f"classes_per_batch={p} but only {tensors.num_eligible} classes have 2 or more "
            f"examples (of {index.num_classes}); lower classes_per_batch"
        )

    def sample(step):  # Runs in the input pipeline, once per batch.
        class_seed, offset_seed = tf.unstack(
            tf.random.experimental.stateless_split(step_seed(seed, stream, step), 2)
        )
        keys = _class_keys([tensors.num_eligible], class_seed, tensors.log_weights)
        classes = tf.cast(tf.math.top_k(keys, k=p).indices, tf.int64)
        offsets = _draw_k_offsets(tf.gather(tensors.counts, classes), k, offset_seed)
        rows = tensors.rows(tf.repeat(classes[:, None], k, axis=1), offsets)
        batch_labels = tf.repeat(tf.gather(tensors.labels, classes), k)
        return tf.reshape(rows, [p * k]), batch_labels

    return tf.data.Dataset.counter(start_step, dtype=tf.int64).map(sample)


def pair_indices(
    labels,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    stream: int = 0,
    class_weighting: str = "uniform",
    index: ClassIndex | None = None,
) -> tf.data.Dataset:
    """Dataset of balanced pair batches as (rows_a [B], rows_b [B], same [B]).

    The first `batch_size // 2` pairs are positive (two different examples of one class), the
    remaining `batch_size - batch_size // 2` negative (two different classes): an odd batch has
    one negative more than positives. Positive classes are drawn among classes with at least two
    examples; single-example classes appear only in negatives.

    Args:
      labels: integer labels [N].
      batch_size: pairs per batch (B >= 2).
      seed: integer seed; batches are a pure function of (seed, stream, step).
      start_step: first step to yield (resume).
      stream: replica / worker id.
      class_weighting: "uniform" over classes, or "proportional" to class size.
      index: a prebuilt class index of `labels`.

    Returns:
      An infinite dataset of `(rows_a, rows_b, same)`: int64, int64, float32, each [B].

    Raises:
      InputError: B < 2, no class with two examples, or fewer than two classes.
    """
    b = int(batch_size)
    if b < 2:
        raise InputError(f"batch_size must be >= 2 for balanced pairs, got {b}")
    index = index or ClassIndex.from_labels(labels)
    positives = _IndexTensors(index, min_count=2, class_weighting=class_weighting)
    negatives = _IndexTensors(index, min_count=1, class_weighting=class_weighting)
    if positives.num_eligible < 1:
        raise InputError("no class has two or more examples: no positive pair can be drawn")
    if negatives.num_eligible < 2:
        raise InputError("only one class in the source: no negative pair can be drawn")
    n_pos, n_neg = b // 2, b - b // 2

    def draw_classes(tensors, n, seed_):
        if tensors.log_weights is None:
            u = tf.random.stateless_uniform([n], seed=seed_, dtype=tf.float64)
            return tf.cast(tf.floor(u * tensors.num_eligible), tf.int64)
        logits = tf.repeat(tensors.log_weights[None, :], n, axis=0)
        return tf.random.stateless_categorical(logits, 1, seed=seed_, dtype=tf.int64)[:, 0]

    def draw_other(first, n_values, u):
        """A value in [0, n) different from `first`: shift by 1 + uniform in [0, n-1)."""
        shift = 1 + tf.cast(tf.floor(u * tf.cast(n_values - 1, tf.float64)), tf.int64)
        return (first + shift) % n_values

    def sample(step):  # Runs in the input pipeline, once per batch.
        seeds = tf.unstack(
            tf.random.experimental.stateless_split(step_seed(seed, stream, step), 4)
        )
        u = tf.random.stateless_uniform([4, max(n_pos, n_neg)], seed=seeds[0], dtype=tf.float64)
        # Positives: one class, two distinct offsets.
        pos_class = draw_classes(positives, n_pos, seeds[1])
        count = tf.gather(positives.counts, pos_class)
        off_a = tf.cast(tf.floor(u[0, :n_pos] * tf.cast(count, tf.float64)), tf.int64)
        off_b = draw_other(off_a, count, u[1, :n_pos])
        # Negatives: two distinct classes, one offset each.
        neg_a = draw_classes(negatives, n_neg, seeds[2])
        if negatives.log_weights is None:
            neg_b = draw_other(neg_a, negatives.num_eligible, u[2, :n_neg])
        else:
            # Proportional: the second class is drawn by size among the others.
            logits = tf.repeat(negatives.log_weights[None, :], n_neg, axis=0)
            logits = tf.where(
                tf.one_hot(neg_a, negatives.num_eligible, on_value=True, off_value=False),
                -np.inf,
                logits,
            )
            neg_b = tf.random.stateless_categorical(logits, 1, seed=seeds[3], dtype=tf.int64)[:, 0]
        uniforms = tf.random.stateless_uniform([2, n_neg], seed=seeds[3], dtype=tf.float64)

        def any_offset(classes, u_):
            counts = tf.cast(tf.gather(negatives.counts, classes), tf.float64)
            return tf.cast(tf.floor(u_ * counts), tf.int64)

        rows_a = tf.concat(
            [positives.rows(pos_class, off_a), negatives.rows(neg_a, any_offset(neg_a, uniforms[0]))],
            axis=0,
        )
        rows_b = tf.concat(
            [positives.rows(pos_class, off_b), negatives.rows(neg_b, any_offset(neg_b, uniforms[1]))],
            axis=0,
        )
        same = tf.concat([tf.ones([n_pos]), tf.zeros([n_neg])], axis=0)
        return rows_a, rows_b, same

    return tf.data.Dataset.counter(start_step, dtype=tf.int64).map(sample)


def _gather_fn(images, map_fn: Callable | None):
    images = tf.convert_to_tensor(images)

    def gather(rows):  # Runs in the input pipeline.
        batch = tf.gather(images, rows)
        return batch if map_fn is None else map_fn(batch)

    return gather


def pk_batches(
    images,
    labels,
    *,
    classes_per_batch: int,
    samples_per_class: int,
    seed: int,
    start_step: int = 0,
    stream: int = 0,
    class_weighting: str = "uniform",
    map_fn: Callable | None = None,
    prefetch: bool = True,
) -> tf.data.Dataset:
    """Dataset of P×K batches `(images [P·K, ...], labels [P·K])` drawn from in-memory arrays.

    See `pk_indices` for the sampling guarantees; rows are gathered (and passed through `map_fn`,
    e.g. decoding or augmentation) in a parallel map after sampling.

    Args:
      images: array [N, ...] (kept as is; uint8 recommended).
      labels: integer labels [N].
      classes_per_batch: P.
      samples_per_class: K.
      seed: integer seed.
      start_step: first step to yield.
      stream: replica / worker id.
      class_weighting: "uniform" or "proportional".
      map_fn: optional function applied to each batch of images.
      prefetch: add `prefetch(AUTOTUNE)` at the end.

    Returns:
      An infinite `tf.data.Dataset`.
    """
    _as_index(images, labels)
    gather = _gather_fn(images, map_fn)
    ds = pk_indices(
        labels,
        classes_per_batch=classes_per_batch,
        samples_per_class=samples_per_class,
        seed=seed,
        start_step=start_step,
        stream=stream,
        class_weighting=class_weighting,
    ).map(lambda rows, y: (gather(rows), y), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


def balanced_pairs(
    images,
    labels,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    stream: int = 0,
    class_weighting: str = "uniform",
    map_fn: Callable | None = None,
    prefetch: bool = True,
) -> tf.data.Dataset:
    """Dataset of balanced pair batches `((images_a, images_b), same)` from in-memory arrays.

    See `pair_indices` for the balance rule and the sampling guarantees.

    Args:
      images: array [N, ...].
      labels: integer labels [N].
      batch_size: pairs per batch.
      seed: integer seed.
      start_step: first step to yield.
      stream: replica / worker id.
      class_weighting: "uniform" or "proportional".
      map_fn: optional function applied to each batch of images.
      prefetch: add `prefetch(AUTOTUNE)` at the end.

    Returns:
      An infinite `tf.data.Dataset`; `same` is float32 1.0 / 0.0.
    """
    _as_index(images, labels)
    gather = _gather_fn(images, map_fn)
    ds = pair_indices(
        labels,
        batch_size=batch_size,
        seed=seed,
        start_step=start_step,
        stream=stream,
        class_weighting=class_weighting,
    ).map(
        lambda a, b, same: ((gather(a), gather(b)), same),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds
