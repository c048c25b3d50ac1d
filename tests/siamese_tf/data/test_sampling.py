"""The stateless samplers: balance, determinism, exact resume, stream independence, bad input."""

import numpy as np
import pytest
from helpers import take_batches as take

from siamese_tf.data import ClassIndex, balanced_pairs, pair_indices, pk_batches, pk_indices
from siamese_tf.data.sampling import rows as samplers
from siamese_tf.errors import InputError

# Class sizes 1..12 plus a large class: small classes exercise sampling with replacement and the
# single-example exclusion; the large one exercises Floyd's without-replacement draw.
LABELS = np.repeat(np.arange(8), [1, 2, 3, 4, 5, 8, 12, 40])
IMAGES = np.arange(LABELS.size)  # an image is its row number, so batches are checkable


def test_class_index_groups_rows_by_class():
    index = ClassIndex.from_labels(LABELS[::-1])
    assert index.num_classes == 8
    np.testing.assert_array_equal(index.counts, [1, 2, 3, 4, 5, 8, 12, 40])
    for c in range(8):
        rows = index.order[index.starts[c] : index.starts[c] + index.counts[c]]
        assert np.all(LABELS[::-1][rows] == index.class_labels[c])


@pytest.mark.parametrize("weighting", ["uniform", "proportional"])
def test_pk_batches_have_p_distinct_classes_times_k(weighting):
    p, k = 4, 5
    ds = pk_batches(
        IMAGES, LABELS, classes_per_batch=p, samples_per_class=k, seed=3, class_weighting=weighting
    )
    for images, labels in take(ds, 30):
        assert images.shape == (p * k,)
        np.testing.assert_array_equal(LABELS[images], labels)  # labels match the gathered rows
        groups = labels.reshape(p, k)
        assert np.all(groups == groups[:, :1])  # whole K-groups, class by class
        assert len(set(groups[:, 0])) == p  # P distinct classes
        assert 0 not in groups[:, 0]  # the single-example class never appears
        for group in images.reshape(p, k):
            if np.sum(LABELS == LABELS[group[0]]) >= k:
                assert len(set(group)) == k  # without replacement when the class has >= K


def test_pk_batches_draw_without_replacement_uniformly_in_large_class():
    ds = pk_indices(LABELS, classes_per_batch=2, samples_per_class=6, seed=0)
    hits = np.zeros(LABELS.size)
    for rows, labels in take(ds, 400):
        hits[rows[labels == 7]] += 1
    big = hits[LABELS == 7]
    assert big.min() > 0.5 * big.mean()  # every example of the big class gets drawn, evenly


def test_pk_same_seed_same_batches_resume_from_step_and_streams_differ():
    kwargs = dict(classes_per_batch=3, samples_per_class=4, seed=11)
    first = take(pk_indices(LABELS, **kwargs), 12)
    again = take(pk_indices(LABELS, **kwargs), 12)
    resumed = take(pk_indices(LABELS, start_step=7, **kwargs), 5)
    other_seed = take(pk_indices(LABELS, **{**kwargs, "seed": 12}), 12)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    for a, b in zip(first[7:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other_seed, strict=True))
    # Another stream of the same seed draws different batches.
    s1 = take(pk_indices(LABELS, stream=1, **kwargs), 10)
    assert sum(np.array_equal(a[0], b[0]) for a, b in zip(first[:10], s1, strict=True)) == 0


@pytest.mark.parametrize("start", [63, 64, 130])
def test_resume_across_sampling_blocks(start):
    # Steps are drawn in blocks of S (64 here): resuming anywhere, at a block edge or inside
    # a later block, replays the batches exactly, for P×K and for pairs.
    kwargs = dict(classes_per_batch=2, samples_per_class=3, seed=4)
    assert samplers.block_size(7) == 64
    full = take(pk_indices(LABELS, **kwargs), start + 3)
    resumed = take(pk_indices(LABELS, start_step=start, **kwargs), 3)
    for a, b in zip(full[start:], resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    pairs = take(pair_indices(LABELS, batch_size=4, seed=4), start + 2)
    pairs_resumed = take(pair_indices(LABELS, batch_size=4, seed=4, start_step=start), 2)
    for a, b in zip(pairs[start:], pairs_resumed, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    batches = take(pk_batches(IMAGES, LABELS, start_step=start, **kwargs), 3)
    for a, b in zip(full[start:], batches, strict=True):
        np.testing.assert_array_equal(a[0], b[0])  # gathered rows are the sampled rows


@pytest.mark.parametrize("batch_size", [8, 9])
@pytest.mark.parametrize("weighting", ["uniform", "proportional"])
def test_balanced_pairs_are_exactly_half_positive(batch_size, weighting):
    ds = balanced_pairs(IMAGES, LABELS, batch_size=batch_size, seed=5, class_weighting=weighting)
    for a, b, same in take(ds, 40):
        n_pos = batch_size // 2
        np.testing.assert_array_equal(same, [1.0] * n_pos + [0.0] * (batch_size - n_pos))
        pos, neg = slice(0, n_pos), slice(n_pos, None)
        assert np.all(LABELS[a[pos]] == LABELS[b[pos]]) and np.all(a[pos] != b[pos])
        assert np.all(LABELS[a[neg]] != LABELS[b[neg]])
        assert not np.any(LABELS[a[pos]] == 0)  # the single-example class has no positive


def test_pair_indices_deterministic_and_resumable():
    first = take(pair_indices(LABELS, batch_size=6, seed=2), 9)
    resumed = take(pair_indices(LABELS, batch_size=6, seed=2, start_step=4), 5)
    for x, y in zip(first[4:], resumed, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize(
    "labels, kwargs, message",
    [
        (LABELS, dict(classes_per_batch=8, samples_per_class=2), "only 7 classes"),
        (LABELS, dict(classes_per_batch=0, samples_per_class=2), ">= 1"),
        (np.array([], np.int64), dict(classes_per_batch=2, samples_per_class=2), "empty"),
        (
            LABELS.astype(np.float32) + 0.5,
            dict(classes_per_batch=2, samples_per_class=2),
            "integers",
        ),
    ],
)
def test_pk_bad_input_is_a_clear_error(labels, kwargs, message):
    with pytest.raises(InputError, match=message):
        pk_indices(labels, seed=0, **kwargs)


def test_pairs_bad_input_is_a_clear_error():
    with pytest.raises(InputError, match="no positive pair"):
        pair_indices(np.arange(5), batch_size=4, seed=0)
    with pytest.raises(InputError, match="no negative pair"):
        pair_indices(np.zeros(5, np.int64), batch_size=4, seed=0)
    with pytest.raises(InputError, match="differ in length"):
        balanced_pairs(IMAGES[:3], LABELS, batch_size=4, seed=0)


# --- sources, reporting, class weighting -------------------------------------------------------


def test_samplers_take_a_source_and_apply_its_map_fn():
    from siamese_tf.data import Source

    images = np.zeros((LABELS.size, 4, 4, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(LABELS.size)
    source = Source(images, LABELS, image_shape=(8, 8, 1))  # resized after sampling
    batch, labels = next(iter(pk_batches(source, classes_per_batch=2, samples_per_class=3, seed=0)))
    assert batch.shape == (6, 8, 8, 1) and batch.dtype == np.uint8
    (a, b), same = next(iter(balanced_pairs(source, batch_size=4, seed=0)))
    assert a.shape == b.shape == (4, 8, 8, 1)
    with pytest.raises(InputError, match="not both"):
        pk_batches(source, LABELS, classes_per_batch=2, samples_per_class=2, seed=0)
    with pytest.raises(InputError, match="labels are required"):
        balanced_pairs(IMAGES, batch_size=4, seed=0)


def test_single_example_classes_are_reported_once(caplog):
    import logging

    labels = np.array([5, 5, 6, 6, 7, 8, 8, 9])  # 7 and 9 have one example
    with caplog.at_level(logging.WARNING):
        pk_indices(labels, classes_per_batch=2, samples_per_class=2, seed=0)
        pk_indices(labels, classes_per_batch=2, samples_per_class=2, seed=1, stream=1)
        pair_indices(labels, batch_size=4, seed=0)
    reports = [r.getMessage() for r in caplog.records if "single example" in r.getMessage()]
    assert len(reports) == 1 and "2 classes" in reports[0] and "labels 7, 9" in reports[0]


def test_proportional_weighting_draws_classes_by_size():
    labels = np.repeat([0, 1], [4, 36])

    def share_of_big(weighting):
        ds = pair_indices(labels, batch_size=20, seed=0, class_weighting=weighting)
        picks = np.concatenate([labels[a[:10]] for a, _, _ in take(ds, 30)])
        return np.mean(picks == 1)

    assert abs(share_of_big("uniform") - 0.5) < 0.1
    assert abs(share_of_big("proportional") - 0.9) < 0.06


# --- fixed evaluation sets and splits ----------------------------------------------------------


def test_source_episodes_and_their_rows():
    from siamese_tf.evaluation.episodes import episode_rows, source_episodes

    episodes = source_episodes(LABELS, n_way=3, k_shot=2, num_queries=1, num_episodes=4, seed=0)
    assert episodes.support.shape == (4, 3, 2) and episodes.query.shape == (4, 3)
    rows, support, query = episode_rows(episodes)
    np.testing.assert_array_equal(rows[support], episodes.support)
    np.testing.assert_array_equal(rows[query], episodes.query)
    with pytest.raises(InputError, match="5-way"):
        source_episodes(LABELS, n_way=5, k_shot=4, num_queries=1)


def test_class_split_is_disjoint_and_example_split_is_stratified():
    from siamese_tf.data import split_indices

    labels = np.repeat(np.arange(20), 6)
    fractions = dict(calibration_fraction=0.2, test_fraction=0.2, seed=0)
    by_class = split_indices(labels, split_by="class", **fractions)
    parts = [set(labels[rows]) for rows in (by_class.train, by_class.calibration, by_class.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(by_class.sizes().values()) == labels.size
    again = split_indices(labels, split_by="class", **fractions)
    np.testing.assert_array_equal(by_class.test, again.test)
    by_example = split_indices(labels, **fractions)
    assert set(labels[by_example.test]) == set(labels[by_example.train]) == set(range(20))
