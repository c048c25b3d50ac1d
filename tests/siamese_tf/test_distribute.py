"""Per-replica input on two logical CPUs: whole P×K groups, distinct replicas, exact resume."""

import numpy as np
import pytest

from siamese_tf.data import open_stream, pk_batches, write_store
from siamese_tf.data.sources import load_source
from siamese_tf.distribute import distribute_pk_dataset
from siamese_tf.errors import InputError

LABELS = np.repeat(np.arange(12), 5)
IMAGES = np.arange(LABELS.size, dtype=np.int64)  # an image is its row number
K = 3


def make_from(*data, seed=5):
    """The per-replica P×K pipeline `distribute_pk_dataset` takes, over arrays or a source."""

    def make(classes_per_replica, stream, start_element):
        kwargs = dict(samples_per_class=K, seed=seed, stream=stream, start_step=start_element)
        return pk_batches(*data, classes_per_batch=classes_per_replica, **kwargs)

    return make


make_arrays = make_from(IMAGES, LABELS)


def global_steps(strategy, dataset, n):
    """[(replica 0 (images, labels), replica 1 (images, labels))] for n global steps."""
    iterator, steps = iter(dataset), []
    for _ in range(n):
        images, labels = (strategy.experimental_local_results(t) for t in next(iterator))
        steps.append(tuple((x.numpy(), y.numpy()) for x, y in zip(images, labels, strict=True)))
    return steps


def assert_same_steps(steps_a, steps_b, labels=True):
    for a, b in zip(steps_a, steps_b, strict=True):
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            np.testing.assert_array_equal(xa, xb)
            if labels:
                np.testing.assert_array_equal(ya, yb)


def test_each_replica_gets_whole_pk_groups_and_different_batches(two_cpus):
    p = 4
    steps = global_steps(two_cpus, distribute_pk_dataset(two_cpus, make_arrays, p), 6)
    for replicas in steps:
        assert len(replicas) == 2
        for images, labels in replicas:
            assert images.shape == (p // 2 * K,)  # P/2 classes × K per replica
            groups = labels.reshape(p // 2, K)
            assert np.all(groups == groups[:, :1]) and len(set(groups[:, 0])) == p // 2
            np.testing.assert_array_equal(LABELS[images], labels)
        assert not np.array_equal(replicas[0][0], replicas[1][0])


def test_resume_from_step_s_replays_the_same_batches(two_cpus):
    full = global_steps(two_cpus, distribute_pk_dataset(two_cpus, make_arrays, 4), 5)
    resumed = global_steps(
        two_cpus, distribute_pk_dataset(two_cpus, make_arrays, 4, start_step=3), 2
    )
    assert_same_steps(full[3:], resumed)


def test_prepared_store_distributes_the_same_way(two_cpus, tmp_path):
    """Per-replica pipelines read from a prepared store give the in-memory batches exactly."""
    images = np.zeros((LABELS.size, 2, 2, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(LABELS.size)
    np.savez(tmp_path / "rows.npz", images=images, labels=LABELS)
    write_store(open_stream(f"npz:{tmp_path / 'rows.npz'}"), str(tmp_path / "store"))
    store = load_source(f"prepared:{tmp_path / 'store'}")
    assert not store.in_memory

    def steps(source, n, start_step=0):
        dataset = distribute_pk_dataset(two_cpus, make_from(source, seed=2), 4, start_step)
        return global_steps(two_cpus, dataset, n)

    from_store = steps(store, 3)
    assert_same_steps(from_store, steps(load_source(f"npz:{tmp_path / 'rows.npz'}"), 3))
    assert_same_steps(from_store[1:], steps(store, 2, start_step=1), labels=False)
    for replicas in from_store:
        for x, y in replicas:
            np.testing.assert_array_equal(LABELS[x[:, 0, 0, 0]], y)
            assert len(set(y)) == 2
        assert not np.array_equal(replicas[0][0], replicas[1][0])


def test_global_p_not_divisible_by_replicas_names_the_numbers(two_cpus):
    with pytest.raises(InputError, match=r"classes_per_batch=5 .* 2 replicas"):
        distribute_pk_dataset(two_cpus, make_arrays, 5)
