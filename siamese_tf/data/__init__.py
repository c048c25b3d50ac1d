"""Data: sources, the class index, stateless samplers, splits and fixed evaluation pair sets."""

from siamese_tf.data.class_index import ClassIndex
from siamese_tf.data.pair_sets import PairSet, fixed_pairs
from siamese_tf.data.samplers import (
    balanced_pairs,
    pair_indices,
    pk_batches,
    pk_indices,
    step_seed,
)
from siamese_tf.data.sources import ArraySource, load_digits, load_source
from siamese_tf.data.splits import Splits, split_indices

__all__ = [
    "ArraySource",
    "ClassIndex",
    "PairSet",
    "Splits",
    "balanced_pairs",
    "fixed_pairs",
    "load_digits",
    "load_source",
    "pair_indices",
    "pk_batches",
    "pk_indices",
    "split_indices",
    "step_seed",
]
