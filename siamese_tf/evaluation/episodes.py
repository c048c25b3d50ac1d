"""N-way k-shot episodes of a source, for one-shot evaluation (host side, numpy).

The sampler itself is `siamese_tf.evaluation.oneshot.sample_episodes` (seeded, classes with
too few examples never drawn); this module lets it take a `Source`, reports bad sizes as
`InputError`, and lists the rows an evaluation must embed, so each image is embedded once.
It is the one evaluation module that imports `siamese_tf.data` (and so TensorFlow); the
package `siamese_tf.evaluation` does not re-export it, so its numpy metrics load without it.
"""

from __future__ import annotations

import numpy as np

from siamese_tf.data.class_index import as_int_labels
from siamese_tf.data.source import Source
from siamese_tf.errors import InputError
from siamese_tf.evaluation.oneshot import Episodes
from siamese_tf.evaluation.oneshot import sample_episodes as _sample_episodes


def source_episodes(
    source_or_labels,
    n_way: int,
    k_shot: int = 1,
    num_queries: int = 1,
    num_episodes: int = 100,
    seed: int = 0,
) -> Episodes:
    """Seeded N-way k-shot episodes over the rows of a source (or of a label array).

    Args:
      source_or_labels: a `Source`, or integer labels [N].
      n_way: classes per episode.
      k_shot: support examples per class.
      num_queries: queries per class.
      num_episodes: number of episodes.
      seed: integer seed; the same seed gives the same episodes.

    Returns:
      `Episodes` of row indices (see `sample_episodes`).

    Raises:
      InputError: non-positive sizes, bad labels, or fewer than `n_way` classes with
        `k_shot + num_queries` examples.
    """
    if isinstance(source_or_labels, Source):
        labels = source_or_labels.labels
    else:
        labels = as_int_labels(source_or_labels)
    try:
        return _sample_episodes(labels, n_way, k_shot, num_queries, num_episodes, seed)
    except ValueError as err:
        raise InputError(str(err)) from None


def episode_rows(episodes: Episodes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct rows of a set of episodes, and where each support / query row sits in them.

    Embed `rows` once, then gather: `emb[support]` is [E, N, K, D], `emb[query]` [E, Q, D].

    Args:
      episodes: from `source_episodes` or `sample_episodes`.

    Returns:
      `(rows, support, query)`: sorted unique rows [U], and positions into `rows` with the
      shapes of `episodes.support` and `episodes.query`.
    """
    rows, inverse = np.unique(
        np.concatenate([episodes.support.ravel(), episodes.query.ravel()]), return_inverse=True
    )
    split = episodes.support.size
    support = inverse[:split].reshape(episodes.support.shape)
    query = inverse[split:].reshape(episodes.query.shape)
    return rows, support, query
