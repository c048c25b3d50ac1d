"""Data: sources, the class index, stateless samplers, class shards, splits and evaluation sets."""

from siamese_tf.data.class_index import ClassIndex
from siamese_tf.data.episodes import episode_rows, source_episodes
from siamese_tf.data.pair_sets import PairSet, cached_fixed_pairs, fixed_pairs
from siamese_tf.data.samplers import (
    balanced_pairs,
    pair_indices,
    pk_batches,
    pk_indices,
    step_seed,
)
from siamese_tf.data.sources import ArraySource, Source, load_digits, load_source
from siamese_tf.data.splits import Splits, split_indices
from siamese_tf.data.tfrecords import (
    ClassShards,
    class_shard_pk_batches,
    load_class_shards,
    open_class_shards,
    prepare_class_shards,
    write_class_shards,
)

__all__ = [
    "ArraySource",
    "ClassIndex",
    "ClassShards",
    "PairSet",
    "Source",
    "Splits",
    "balanced_pairs",
    "cached_fixed_pairs",
    "class_shard_pk_batches",
    "episode_rows",
    "fixed_pairs",
    "load_class_shards",
    "load_digits",
    "load_source",
    "open_class_shards",
    "pair_indices",
    "pk_batches",
    "pk_indices",
    "prepare_class_shards",
    "source_episodes",
    "split_indices",
    "step_seed",
    "write_class_shards",
]
