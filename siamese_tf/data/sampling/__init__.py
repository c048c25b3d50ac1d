"""Stateless samplers: the row-id draws (`rows`) and the batches of images they read (`batches`)."""

from siamese_tf.data.sampling.batches import balanced_pairs, pk_batches
from siamese_tf.data.sampling.rows import (
    CLASS_WEIGHTINGS,
    pair_indices,
    pk_indices,
    step_seed,
    warn_single_example_classes,
)

__all__ = [
    "CLASS_WEIGHTINGS",
    "balanced_pairs",
    "pair_indices",
    "pk_batches",
    "pk_indices",
    "step_seed",
    "warn_single_example_classes",
]
