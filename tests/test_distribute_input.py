"""Per-replica input on two logical CPUs: whole P×K groups, distinct replicas, exact resume."""

import numpy as np
import pytest

from siamese_tf.data import Source, class_shard_pk_batches, pk_batches, write_class_shards
from siamese_tf.distribute import distribute_pk_dataset
from siamese_tf.errors import InputError

LABELS = np.repeat(np.arange(12), 5)
IMAGES = np.arange(LABELS.size, dtype=np.int64)  # an image is its row number
K = 3


@pytest.fixture
def strategy(two_cpus):
    return two_cpus


def make_arrays(classes_per_replica, stream, start_element):
    return pk_batches(
        IMAGES,
        LABELS,
        classes_per_batch=classes_per_replica,
        samples_per_class=K,
        seed=5,
        stream=stream,
        start_step=start_element,
    )


def global_steps(strategy, dataset, n):
    """[(replica 0 (images, labels), replica 1 (images, labels))] for n global steps."""
    iterator = iter(dataset)
    steps = []
    for _ in range(n):
        images, labels = next(iterator)
        steps.append(
            tuple(
                (x.numpy(), y.numpy())
                for x, y in zip(
                    strategy.experimental_local_results(images),
                    strategy.experimental_local_results(labels),
                    strict=True,
                )
            )
        )
    return steps


def test_each_replica_gets_whole_pk_groups_and_different_batches(strategy):
    p = 4
    steps = global_steps(strategy, distribute_pk_dataset(strategy, make_arrays, p), 6)
    for replicas in steps:
        assert len(replicas) == 2
        for images, labels in replicas:
            assert images.shape == (p // 2 * K,)  # P/2 classes × K per replica
            groups = labels.reshape(p // 2, K)
            assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0])) == p // 2
            np.testing.assert_array_equal(LABELS[images], labels)
        assert not np.array_equal(replicas[0][0], replicas[1][0])


def test_resume_from_step_s_replays_the_same_batches(strategy):
    full = global_steps(strategy, distribute_pk_dataset(strategy, make_arrays, 4), 5)
    resumed = global_steps(
        strategy, distribute_pk_dataset(strategy, make_arrays, 4, start_step=3), 2
    )
    for a, b in zip(full[3:], resumed, strict=True):
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


def test_streaming_reader_distributes_the_same_way(strategy, tmp_path):
    images = np.zeros((LABELS.size, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(LABELS.size)
    write_class_shards(Source(images, LABELS, "rows"), tmp_path / "shards", shard_size=2)

    def make(classes_per_replica, stream, start_element):
        return class_shard_pk_batches(
            tmp_path / "shards",
            classes_per_batch=classes_per_replica,
            samples_per_class=K,
            seed=2,
            stream=stream,
            start_step=start_element,
        )

    full = global_steps(strategy, distribute_pk_dataset(strategy, make, 4), 3)
    resumed = global_steps(strategy, distribute_pk_dataset(strategy, make, 4, start_step=1), 2)
    for a, b in zip(full[1:], resumed, strict=True):
        for (xa, _), (xb, _) in zip(a, b, strict=True):
            np.testing.assert_array_equal(xa, xb)
    for replicas in full:
        for x, y in replicas:
            np.testing.assert_array_equal(LABELS[x[:, 0, 0, 0]], y)
            assert len(set(y)) == 2
        assert not np.array_equal(replicas[0][0], replicas[1][0])


def test_global_p_not_divisible_by_replicas_names_the_numbers(strategy):
    with pytest.raises(InputError, match=r"classes_per_batch=5 .* 2 replicas"):
        distribute_pk_dataset(strategy, make_arrays, 5)
