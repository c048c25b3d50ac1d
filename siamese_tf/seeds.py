"""Every random stream of a run, derived by name from its one seed.

A run has one `--seed`; each thing it draws at random (the split, the batches, the pair sets,
the episodes, ...) gets its own sub-seed, `derive(seed, name)`, and nothing else decides a
seed. Streams are therefore independent of each other (no two share a sub-seed by accident, as
hand-written offsets of the run seed did), and code that rebuilds a draw — evaluation redrawing
the test pairs training reported on — asks for the same name instead of copying a number.

The derivation is numpy's `SeedSequence` with the name's UTF-8 bytes as the spawn key: pure,
the same in every process and on every machine (no Python `hash`), and NumPy keeps its output
stable across versions. A sub-seed lies in [0, 2**31): every consumer takes it (numpy,
scikit-learn's `random_state`, TensorFlow's stateless seeds, `keras.utils.set_random_seed`).

Runs on host; no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import functools
import operator

import numpy as np


@dataclasses.dataclass(frozen=True)
class RunSeeds:
    """The sub-seeds of one run seed, one per named stream (`RunSeeds.of(seed)`).

    Never rename a field: its name is its derivation, so a renamed stream draws differently.

    Attributes:
      split: train / calibration / test rows (`siamese_tf.data.split_indices`).
      sampling: the training batches, P×K or pairs, a pure function of (seed, replica, step).
      augmentation: the per-batch affine distortions, the same stateless design.
      initialisation: the initial weights (`keras.utils.set_random_seed`).
      calibration_pairs: the pair set the threshold is calibrated on every epoch.
      test_pairs: the pair set of the final report (and of evaluation on the test split).
      oneshot_validation: the per-epoch N-way 1-shot validation episodes.
      eval_pairs: a pair set evaluation draws itself (`launch.evaluate --num_pairs`).
      eval_episodes: evaluation's N-way k-shot episodes.
      bootstrap: the resamples of evaluation's bootstrap intervals.
      clustering: k-means (evaluation's clustering, `launch.predict --cluster`).
      projection: the t-SNE / PCA of the embedding map.
    """

    split: int
    sampling: int
    augmentation: int
    initialisation: int
    calibration_pairs: int
    test_pairs: int
    oneshot_validation: int
    eval_pairs: int
    eval_episodes: int
    bootstrap: int
    clustering: int
    projection: int

    @classmethod
    def of(cls, seed: int) -> RunSeeds:
        """Every sub-seed of `seed` (see `derive`)."""
        return _run_seeds(_checked(seed))


STREAMS = tuple(field.name for field in dataclasses.fields(RunSeeds))


def derive(seed: int, name: str) -> int:
    """The sub-seed of the stream `name` of a run seeded `seed`.

    Args:
      seed: the run's seed, an integer >= 0.
      name: one of `STREAMS`.

    Returns:
      An integer in [0, 2**31), the same for the same (seed, name) everywhere.

    Raises:
      ValueError: an unknown name (a typo would silently start a new stream) or a negative or
        non-integer seed.
    """
    if name not in STREAMS:
        raise ValueError(f"unknown random stream {name!r}; the streams are: {', '.join(STREAMS)}")
    return _derive(_checked(seed), name)


def _checked(seed) -> int:
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ValueError(f"a seed is an integer, got {seed!r}") from None
    if seed < 0:
        raise ValueError(f"a seed is >= 0, got {seed}")
    return seed


def _derive(seed: int, name: str) -> int:
    sequence = np.random.SeedSequence(seed, spawn_key=tuple(name.encode("utf-8")))
    return int(sequence.generate_state(1, np.uint32)[0] >> 1)  # 31 bits: fits an int32


@functools.lru_cache(maxsize=64)
def _run_seeds(seed: int) -> RunSeeds:
    return RunSeeds(**{name: _derive(seed, name) for name in STREAMS})
