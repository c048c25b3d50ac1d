"""The row-id draws of the samplers, shared by in-memory data and the prepared store.

Every batch is a pure function of `(seed, stream, step)`. Steps are drawn a block at a time
(block b holds steps b·S .. b·S + S - 1, with S a constant fixed by the data's size, see
`block_size`) so the per-call cost of `tf.data` is paid once per S batches; the block's seed is
`fold_in(fold_in([seed, 0], stream), b)` and all draws use stateless random ops. Hence

* the same seed gives the same batches, on any machine;
* different streams (replicas, workers) draw different batches without coordination;
* a dataset started at `start_step=s` yields exactly the batches a run from step 0 yields from
  step s on, so resuming a job needs no iterator state in the checkpoint.

Nothing pair-shaped is ever materialised: a batch is drawn from the class index as row ids;
`siamese_tf.data.sampling.batches` then reads only those rows (from memory or a store).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from siamese_tf.data.class_index import ClassIndex
from siamese_tf.errors import InputError

CLASS_WEIGHTINGS = ("uniform", "proportional")

log = logging.getLogger(__name__)

# Single-example class sets already reported: a sampler built once per replica pipeline (or
# once per epoch by a caller) reports the same data once per process.
_REPORTED: set = set()


def warn_single_example_classes(single_labels, name: str = "", class_names=None) -> None:
    """Logs once per process and data set that some classes hold a single example.

    Such classes can form no positive pair: P×K samplers never draw them, pair samplers draw
    them only in negatives.

    Args:
      single_labels: labels of the single-example classes (nothing is logged when empty).
      name: the data set's name, for the message.
      class_names: optional name of each label value (e.g. folder names): the message names
        the classes by them instead of by label.
    """
    single_labels = np.asarray(single_labels, np.int64)
    if single_labels.size == 0:
        return
    key = (name, single_labels.size, single_labels.tobytes())
    if key in _REPORTED:
        return
    _REPORTED.add(key)
    if class_names is not None:
        shown = ", ".join(
            repr(class_names[v]) if v < len(class_names) else f"label {v}"
            for v in single_labels[:10]
        )
    else:
        shown = "labels " + ", ".join(str(v) for v in single_labels[:10])
    more = ", ..." if single_labels.size > 10 else ""
    log.warning(
        "%s%d classes have a single example (%s%s): they form no positive pair and are "
        "excluded from positive draws",
        f"{name}: " if name else "",
        single_labels.size,
        shown,
        more,
    )


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


# Largest per-block intermediate (random keys over classes, for instance), in elements.
_BLOCK_ELEMENTS = 1 << 20
_MAX_BLOCK = 64
BLOCKS_IN_FLIGHT = 2


def block_size(elements_per_step: int) -> int:
    """Steps drawn per call: up to 64, fewer when one step's draws are large.

    Args:
      elements_per_step: the largest intermediate of one step (e.g. one key per class).

    Returns:
      S; part of the sampling algorithm (a function of the data only), so batches stay a pure
      function of (seed, stream, step).
    """
    return int(max(1, min(_MAX_BLOCK, _BLOCK_ELEMENTS // max(1, int(elements_per_step)))))


class Blocks:
    """Blocks of S steps: `dataset` yields block b (steps b·S ..) stacked, from the block of
    `start_step` on; `skip` steps of the first block precede `start_step`."""

    def __init__(self, start_step: int, block: int, sample_block: Callable):
        first = int(start_step) // block
        self.block = block
        self.skip = int(start_step) - first * block
        self.dataset = tf.data.Dataset.counter(first, dtype=tf.int64).map(
            sample_block, num_parallel_calls=BLOCKS_IN_FLIGHT, deterministic=True
        )

    def steps(self, dataset: tf.data.Dataset | None = None) -> tf.data.Dataset:
        """One element per step (of `dataset`, a map of the blocks, when given)."""
        # Resuming inside a block draws the whole block and drops its first steps: same batches.
        # flat_map over slices: several times faster than `unbatch` for large image blocks.
        ds = (self.dataset if dataset is None else dataset).flat_map(
            lambda *block: tf.data.Dataset.from_tensor_slices(block)
        )
        return ds.skip(self.skip) if self.skip else ds


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


def class_keys(shape, seed, log_weights):
    """Gumbel keys over classes: their top-k is a draw of k classes without replacement.

    Args:
      shape: [C], the number of classes.
      seed: stateless seed [2].
      log_weights: None (uniform) or float32 [C] log class weights (proportional draws).

    Returns:
      float32 keys [C].
    """
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
    with a single example cannot form a positive pair and are never drawn (reported once).

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
    return pk_blocks(
        labels,
        classes_per_batch=classes_per_batch,
        samples_per_class=samples_per_class,
        seed=seed,
        start_step=start_step,
        stream=stream,
        class_weighting=class_weighting,
        index=index,
    ).steps()


def pk_blocks(
    labels,
    *,
    classes_per_batch: int,
    samples_per_class: int,
    seed: int,
    start_step: int = 0,
    stream: int = 0,
    class_weighting: str = "uniform",
    index: ClassIndex | None = None,
    class_names=None,
) -> Blocks:
    """`pk_indices` as blocks of S steps (see `Blocks`)."""
    p, k = int(classes_per_batch), int(samples_per_class)
    if p < 1 or k < 1:
        raise InputError(f"classes_per_batch and samples_per_class must be >= 1, got {p} and {k}")
    index = index or ClassIndex.from_labels(labels)
    tensors = _IndexTensors(index, min_count=2, class_weighting=class_weighting)
    warn_single_example_classes(index.single_example_classes(), class_names=class_names)
    if tensors.num_eligible < p:
        raise InputError(
            f"classes_per_batch={p} but only {tensors.num_eligible} classes have 2 or more "
            f"examples (of {index.num_classes}); lower classes_per_batch"
        )

    block = block_size(tensors.num_eligible)

    def sample_block(b):  # Runs in the input pipeline, once per S batches.
        class_seed, offset_seed = tf.unstack(
            tf.random.experimental.stateless_split(step_seed(seed, stream, b), 2)
        )
        keys = class_keys([block, tensors.num_eligible], class_seed, tensors.log_weights)
        classes = tf.reshape(tf.cast(tf.math.top_k(keys, k=p).indices, tf.int64), [-1])
        offsets = _draw_k_offsets(tf.gather(tensors.counts, classes), k, offset_seed)
        rows = tensors.rows(tf.repeat(classes[:, None], k, axis=1), offsets)
        batch_labels = tf.repeat(tf.gather(tensors.labels, classes), k)
        return tf.reshape(rows, [block, p * k]), tf.reshape(batch_labels, [block, p * k])

    return Blocks(start_step, block, sample_block)


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
    examples; single-example classes appear only in negatives (reported once).

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
    return pair_blocks(
        labels,
        batch_size=batch_size,
        seed=seed,
        start_step=start_step,
        stream=stream,
        class_weighting=class_weighting,
        index=index,
    ).steps()


def pair_blocks(
    labels,
    *,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    stream: int = 0,
    class_weighting: str = "uniform",
    index: ClassIndex | None = None,
    class_names=None,
) -> Blocks:
    """`pair_indices` as blocks of S steps (see `Blocks`)."""
    b = int(batch_size)
    if b < 2:
        raise InputError(f"batch_size must be >= 2 for balanced pairs, got {b}")
    index = index or ClassIndex.from_labels(labels)
    positives = _IndexTensors(index, min_count=2, class_weighting=class_weighting)
    warn_single_example_classes(index.single_example_classes(), class_names=class_names)
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

    # Proportional draws hold [pairs, classes] logits; uniform ones only [pairs].
    per_step = b * (negatives.num_eligible if class_weighting == "proportional" else 1)
    block = block_size(per_step)
    n_p, n_n = block * n_pos, block * n_neg  # draws per block

    def sample_block(step_block):  # Runs in the input pipeline, once per S batches.
        seeds = tf.unstack(
            tf.random.experimental.stateless_split(step_seed(seed, stream, step_block), 5)
        )
        u = tf.random.stateless_uniform([4, max(n_p, n_n)], seed=seeds[0], dtype=tf.float64)
        # Positives: one class, two distinct offsets.
        pos_class = draw_classes(positives, n_p, seeds[1])
        count = tf.gather(positives.counts, pos_class)
        off_a = tf.cast(tf.floor(u[0, :n_p] * tf.cast(count, tf.float64)), tf.int64)
        off_b = draw_other(off_a, count, u[1, :n_p])
        # Negatives: two distinct classes, one offset each.
        neg_a = draw_classes(negatives, n_n, seeds[2])
        if negatives.log_weights is None:
            neg_b = draw_other(neg_a, negatives.num_eligible, u[2, :n_n])
        else:
            # Proportional: the second class is drawn by size among the others.
            logits = tf.repeat(negatives.log_weights[None, :], n_n, axis=0)
            logits = tf.where(
                tf.one_hot(neg_a, negatives.num_eligible, on_value=True, off_value=False),
                -np.inf,
                logits,
            )
            neg_b = tf.random.stateless_categorical(logits, 1, seed=seeds[3], dtype=tf.int64)[:, 0]
        uniforms = tf.random.stateless_uniform([2, n_n], seed=seeds[4], dtype=tf.float64)

        def any_offset(classes, u_):
            counts = tf.cast(tf.gather(negatives.counts, classes), tf.float64)
            return tf.cast(tf.floor(u_ * counts), tf.int64)

        def per_step(pos, neg):  # [S * n_pos], [S * n_neg] -> [S, B]
            return tf.concat(
                [tf.reshape(pos, [block, n_pos]), tf.reshape(neg, [block, n_neg])], axis=1
            )

        rows_a = per_step(
            positives.rows(pos_class, off_a), negatives.rows(neg_a, any_offset(neg_a, uniforms[0]))
        )
        rows_b = per_step(
            positives.rows(pos_class, off_b), negatives.rows(neg_b, any_offset(neg_b, uniforms[1]))
        )
        same = tf.tile(tf.concat([tf.ones([1, n_pos]), tf.zeros([1, n_neg])], axis=1), [block, 1])
        return rows_a, rows_b, same

    return Blocks(start_step, block, sample_block)
