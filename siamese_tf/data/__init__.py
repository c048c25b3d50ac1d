"""Data: sources, the prepared store, stateless samplers, splits and fixed pair sets.

Imports flow one way: `images`, `class_index` → `source` (what a dataset is) → `stream`
(checked chunks) → `store` (the prepared store) → `sources` (one reader per format);
`sampling` (row-id draws, then batches) needs only `source`.
"""

from siamese_tf.data.class_index import ClassIndex
from siamese_tf.data.pair_sets import PairSet, fixed_pairs
from siamese_tf.data.sampling import (
    balanced_pairs,
    pair_indices,
    pk_batches,
    pk_indices,
    step_seed,
)
from siamese_tf.data.source import Source
from siamese_tf.data.sources import load_digits, load_source, open_stream
from siamese_tf.data.splits import Splits, split_indices
from siamese_tf.data.store import StoreError, open_store, write_store

__all__ = [
    "ClassIndex",
    "PairSet",
    "Source",
    "Splits",
    "StoreError",
    "balanced_pairs",
    "fixed_pairs",
    "load_digits",
    "load_source",
    "open_store",
    "open_stream",
    "pair_indices",
    "pk_batches",
    "pk_indices",
    "split_indices",
    "step_seed",
    "write_store",
]
