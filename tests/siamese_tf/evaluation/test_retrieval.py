"""Tests of siamese_tf.evaluation.retrieval, .oneshot and .clustering: by hand and brute force."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from siamese_tf.evaluation import clustering, oneshot, retrieval
from siamese_tf.evaluation import retrieval as r


def random_embeddings(n=90, dim=6, classes=7, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim)) * 1.5
    return centres[labels] + rng.normal(size=(n, dim)), labels


def brute_force_neighbours(q, g, metric, leave_one_out):
    if metric == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        gn = g / np.linalg.norm(g, axis=1, keepdims=True)
        dist = 1 - qn @ gn.T
    else:
        dist = np.sqrt(((q[:, None, :] - g[None, :, :]) ** 2).sum(-1))
    if leave_one_out:
        np.fill_diagonal(dist, np.inf)
    return np.argsort(dist, axis=1, kind="stable")


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("leave_one_out", [True, False])
def test_recall_and_precision_at_k_match_brute_force(metric, leave_one_out, monkeypatch):
    monkeypatch.setattr(r, "_CHUNK_ELEMENTS", 500)  # several chunks, including a ragged one
    q, ql = random_embeddings(seed=1)
    if leave_one_out:
        g, gl, args = q, ql, ()
    else:
        g, gl = random_embeddings(n=70, seed=2)
        args = (g, gl)
    ks = (1, 2, 4, 8)
    recall = r.recall_at_k(q, ql, *args, ks=ks, metric=metric)
    precision = r.precision_at_k(q, ql, *args, ks=ks, metric=metric)

    order = brute_force_neighbours(q, g, metric, leave_one_out)
    same = gl[order] == ql[:, None]
    if leave_one_out:
        same = same[:, :-1]  # the query itself, sorted last at distance inf
    relevant = same.sum(axis=1) > 0
    for k in ks:
        assert recall[k] == pytest.approx(same[relevant, :k].any(axis=1).mean())
        assert precision[k] == pytest.approx(same[relevant, :k].mean())
    assert list(recall) == list(ks)
    assert all(recall[a] <= recall[b] for a, b in zip(ks, ks[1:], strict=False))


def test_nearest_neighbour_accuracy_hand_example_and_recall_at_1():
    gallery = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    gallery_labels = np.array(["a", "b", "c"])
    queries = np.array([[1.0, 0.0], [9.0, 1.0], [6.0, 0.0], [0.0, 4.0]])
    query_labels = np.array(["a", "b", "a", "c"])
    # Nearest: a, b, b (wrong), a (wrong).
    assert r.nearest_neighbour_accuracy(queries, query_labels, gallery, gallery_labels) == 0.5
    # Cosine: [6, 0] points along b (right-angle to c); [0, 4] points along c.
    cos = r.nearest_neighbour_accuracy(
        queries[1:], query_labels[1:], gallery[1:], gallery_labels[1:], metric="cosine"
    )
    assert cos == pytest.approx(2 / 3)
    # Equal to recall@1 when every query label is in the gallery.
    q, ql = random_embeddings(seed=3)
    g, gl = random_embeddings(n=200, seed=4)
    assert set(ql) <= set(gl)
    expected = r.recall_at_k(q, ql, g, gl, ks=(1,))[1]
    assert r.nearest_neighbour_accuracy(q, ql, g, gl) == pytest.approx(expected)


def test_leave_one_out_keeps_exact_duplicates():
    # Two identical points of one class: each retrieves the other (not itself) at distance 0.
    x = np.array([[0.0], [0.0], [5.0], [5.1]])
    labels = np.array([0, 0, 1, 1])
    assert r.recall_at_k(x, labels, ks=(1,)) == {1: 1.0}
    assert r.map_at_r(x, labels) == 1.0


def test_map_at_r_hand_example():
    gallery = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
    gallery_labels = np.array(["A", "B", "A", "B", "B"])
    queries = np.array([[0.0], [10.0]])
    query_labels = np.array(["A", "B"])
    # Query A: R = 2, ranking A B -> AP = (1/1) / 2 = 1/2.
    # Query B: R = 3, ranking B B A -> AP = (1/1 + 2/2) / 3 = 2/3.
    assert r.map_at_r(queries, query_labels, gallery, gallery_labels) == pytest.approx(7 / 12)
    # A perfect ranking scores 1 while recall@1 could not tell the two apart.
    perfect = ([[0.0]], ["A"], [[1.0], [2.0], [3.0]], ["A", "A", "B"])
    assert r.map_at_r(*map(np.array, perfect)) == 1.0


def test_map_at_r_matches_brute_force(monkeypatch):
    monkeypatch.setattr(r, "_CHUNK_ELEMENTS", 300)
    q, ql = random_embeddings(n=60, seed=5)
    order = brute_force_neighbours(q, q, "euclidean", True)[:, :-1]
    same = ql[order] == ql[:, None]
    aps = []
    for row in same:
        big_r = row.sum()
        if big_r:
            hits = row[:big_r]
            aps.append(np.sum(np.cumsum(hits) / np.arange(1, big_r + 1) * hits) / big_r)
    assert r.map_at_r(q, ql) == pytest.approx(np.mean(aps))


def test_queries_without_a_same_label_reference_are_left_out():
    gallery, gallery_labels = np.array([[0.0], [1.0]]), np.array([0, 1])
    queries, query_labels = np.array([[0.1], [5.0]]), np.array([0, 7])
    assert r.recall_at_k(queries, query_labels, gallery, gallery_labels, ks=(1,)) == {1: 1.0}
    # 1-NN accuracy counts every query as a classification.
    assert r.nearest_neighbour_accuracy(queries, query_labels, gallery, gallery_labels) == 0.5
    with pytest.raises(ValueError, match="no query has a same-label item"):
        r.map_at_r(queries[1:], query_labels[1:], gallery, gallery_labels)


def test_retrieval_bad_input():
    x, y = random_embeddings(n=10)
    with pytest.raises(ValueError, match="unknown metric"):
        r.recall_at_k(x, y, metric="manhattan")
    with pytest.raises(ValueError, match="k=10 exceeds the 9 gallery items"):
        r.recall_at_k(x, y, ks=(10,))
    with pytest.raises(ValueError, match="labels must have shape"):
        r.recall_at_k(x, y[:-1])
    with pytest.raises(ValueError, match="empty"):
        r.nearest_neighbour_accuracy(x[:0], y[:0], x, y)
    with pytest.raises(ValueError, match="differ in dimension"):
        r.nearest_neighbour_accuracy(x, y, x[:, :3], y)
    with pytest.raises(ValueError, match="NaN"):
        r.map_at_r(np.where(x > 1, np.nan, x), y)
    with pytest.raises(ValueError, match="both gallery_embeddings and gallery_labels"):
        r.recall_at_k(x, y, x)
    with pytest.raises(ValueError, match="ks must be positive"):
        r.precision_at_k(x, y, ks=(0,))


def test_sample_episodes_structure_determinism_and_errors():
    labels = np.repeat(np.arange(8), 4)
    labels = np.r_[labels, [8, 9]]  # two classes too small to serve
    episodes = oneshot.sample_episodes(labels, 5, k_shot=2, num_queries=2, num_episodes=30, seed=3)
    assert episodes.support.shape == (30, 5, 2)
    assert episodes.query.shape == episodes.query_targets.shape == (30, 10)
    assert len(episodes) == 30
    for e in range(30):
        used = np.r_[episodes.support[e].ravel(), episodes.query[e]]
        assert np.unique(used).size == used.size  # no example used twice in an episode
        assert np.unique(episodes.classes[e]).size == 5
        assert not set(episodes.classes[e]) & {8, 9}
        for j in range(5):
            assert np.all(labels[episodes.support[e, j]] == episodes.classes[e, j])
        np.testing.assert_array_equal(
            labels[episodes.query[e]], episodes.classes[e][episodes.query_targets[e]]
        )
    again = oneshot.sample_episodes(labels, 5, 2, 2, 30, seed=3)
    np.testing.assert_array_equal(again.support, episodes.support)
    np.testing.assert_array_equal(again.query, episodes.query)
    other = oneshot.sample_episodes(labels, 5, 2, 2, 30, seed=4)
    assert not np.array_equal(other.support, episodes.support)
    labels = np.array([0, 0, 1, 1, 2])
    with pytest.raises(ValueError, match="need 3 classes with at least 2 examples; only 2 of 3"):
        oneshot.sample_episodes(labels, n_way=3, k_shot=1)
    with pytest.raises(ValueError, match="n_way must be a positive integer"):
        oneshot.sample_episodes(labels, n_way=0)


def test_one_shot_and_k_shot_reductions_hand_examples():
    # One episode, 2-way 1-shot: classes at 0 and 10; queries at 1 (class 0), 9 (class 1)
    # and 4 (labelled class 1, but nearer class 0).
    support = np.array([[[[0.0]], [[10.0]]]])
    queries = np.array([[[1.0], [9.0], [4.0]]])
    targets = np.array([[0, 1, 1]])
    assert oneshot.n_way_k_shot_accuracy(support, queries, targets) == pytest.approx(2 / 3)
    np.testing.assert_allclose(oneshot.episode_accuracies(support, queries, targets), [2 / 3])
    # k-shot reductions: class 0 support at 0 and 10, class 1 at 4 and 4; query at 1 is class 0.
    support = np.array([[[[0.0], [10.0]], [[4.0], [4.0]]]])
    query = np.array([[[1.0]]])
    target = np.array([[0]])
    # mean: class 0 (1 + 9) / 2 = 5 vs class 1 3 -> wrong; min: 1 vs 3 -> right;
    # centroid: |1 - 5| = 4 vs 3 -> wrong.
    assert oneshot.n_way_k_shot_accuracy(support, query, target, reduction="mean") == 0.0
    assert oneshot.n_way_k_shot_accuracy(support, query, target, reduction="min") == 1.0
    assert oneshot.n_way_k_shot_accuracy(support, query, target, reduction="centroid") == 0.0


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
@pytest.mark.parametrize("reduction", ["mean", "min", "centroid"])
def test_n_way_k_shot_matches_brute_force(metric, reduction):
    x, labels = random_embeddings(n=200, dim=5, classes=10, seed=6)
    episodes = oneshot.sample_episodes(labels, 5, k_shot=3, num_queries=2, num_episodes=20, seed=1)
    inputs = (x[episodes.support], x[episodes.query], episodes.query_targets)
    accuracies = oneshot.episode_accuracies(*inputs, metric=metric, reduction=reduction)

    def dist(a, b):
        if metric == "cosine":
            return 1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        return np.linalg.norm(a - b)

    expected = []
    for e in range(len(episodes)):
        correct = 0
        for qi, target in zip(episodes.query[e], episodes.query_targets[e], strict=True):
            scores = []
            for support in episodes.support[e]:
                if reduction == "centroid":
                    members = x[support]
                    if metric == "cosine":  # the mean direction of the support examples
                        members = members / np.linalg.norm(members, axis=1, keepdims=True)
                    scores.append(dist(x[qi], members.mean(axis=0)))
                else:
                    ds = [dist(x[qi], x[si]) for si in support]
                    scores.append(min(ds) if reduction == "min" else np.mean(ds))
            correct += int(np.argmin(scores) == target)
        expected.append(correct / episodes.query.shape[1])
    np.testing.assert_allclose(accuracies, expected)
    assert 0.3 < np.mean(expected) <= 1.0  # clustered data: far above 1/5 chance


def test_n_way_k_shot_bad_input():
    support = np.zeros((2, 3, 1, 4))
    queries = np.zeros((2, 5, 4))
    targets = np.zeros((2, 5), np.int64)
    with pytest.raises(ValueError, match="do not match"):
        oneshot.n_way_k_shot_accuracy(support, queries[:1], targets[:1])
    with pytest.raises(ValueError, match=r"integers in \[0, 2\]"):
        oneshot.n_way_k_shot_accuracy(support, queries, targets + 3)
    with pytest.raises(ValueError, match="query_targets must have shape"):
        oneshot.n_way_k_shot_accuracy(support, queries, targets[:, :2])
    with pytest.raises(ValueError, match="unknown reduction"):
        oneshot.n_way_k_shot_accuracy(support, queries, targets, reduction="max")


def test_clustering_perfect_on_separated_blobs_and_near_zero_on_random_labels():
    x, y = make_blobs(
        n_samples=120, centers=4, cluster_std=0.3, center_box=(-20, 20), random_state=0
    )
    scores = clustering.clustering_scores(x, y, seed=0)
    assert scores["n_clusters"] == 4
    assert scores["nmi"] == pytest.approx(1.0)
    assert scores["ami"] == pytest.approx(1.0)
    clusters = clustering.cluster_embeddings(x, 4, seed=0)
    np.testing.assert_array_equal(clusters, clustering.cluster_embeddings(x, 4, seed=0))
    assert set(clusters) == {0, 1, 2, 3}
    # Random labels: scores near zero.
    x, _ = make_blobs(n_samples=200, centers=4, cluster_std=0.3, random_state=1)
    random_labels = np.random.default_rng(0).integers(0, 4, 200)
    scores = clustering.clustering_scores(x, random_labels, n_clusters=4)
    assert abs(scores["ami"]) < 0.05


def test_clustering_bad_input():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match=r"n_clusters must be an integer in \[1, 5\]"):
        clustering.cluster_embeddings(x, 6)
    with pytest.raises(ValueError, match="labels must have shape"):
        clustering.clustering_scores(x, np.zeros(4))
    with pytest.raises(ValueError, match="non-empty 2-D"):
        clustering.cluster_embeddings(np.zeros(5), 2)


def test_package_reexports():
    import siamese_tf.evaluation as ev

    for name in ev.__all__:
        assert hasattr(ev, name)
    assert ev.recall_at_k is retrieval.recall_at_k
