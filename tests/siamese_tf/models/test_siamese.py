"""SiameseModel: the custom train_step under MirroredStrategy, pair batches, .keras round trip."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import fit_on_two_replicas

import siamese_tf  # noqa: F401  (registers the serializable classes)
from siamese_tf import losses
from siamese_tf.heads import ClassProxies, PairClassifierHead
from siamese_tf.models import UNCALIBRATED, SiameseModel, build_encoder

SHAPE = (8, 8, 1)


def make_model(seed=0, head=None, loss=None, **kwargs):
    keras.utils.set_random_seed(seed)
    model = SiameseModel(
        build_encoder("conv_small", SHAPE, 16), head=head, stats_margin=0.5, **kwargs
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1), loss=loss or losses.TripletSemiHardLoss(margin=0.5)
    )
    model.build((None, *SHAPE))
    return model


def pk_batch(seed, p=4, k=4):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (p * k, *SHAPE)).astype(np.float32)
    labels = np.repeat(np.arange(p), k).astype(np.int64)
    return images, labels


def test_train_step_on_two_replicas_matches_hand_computed_loss_and_update(two_cpus):
    strategy = two_cpus
    halves = [pk_batch(1), pk_batch(2)]
    reference = make_model(seed=7)
    weights_before = [w.numpy() for w in reference.trainable_weights]
    # By hand, on one device: the global loss is the mean of each replica's loss on its half.
    loss_fn = losses.TripletSemiHardLoss(margin=0.5)
    with tf.GradientTape() as tape:
        per_half = [loss_fn(y, reference(x, training=True)) for x, y in halves]
        expected_loss = (per_half[0] + per_half[1]) / 2.0
    grads = tape.gradient(expected_loss, reference.trainable_weights)
    expected_weights = [w - 0.1 * g.numpy() for w, g in zip(weights_before, grads)]

    with strategy.scope():
        model = make_model(seed=7)
    for w, w0 in zip(model.trainable_weights, weights_before):
        np.testing.assert_array_equal(w.numpy(), w0)
    global_batch = tuple(np.concatenate(part) for part in zip(*halves))
    history = fit_on_two_replicas(strategy, model, [global_batch])
    np.testing.assert_allclose(history.history["loss"][0], expected_loss.numpy(), rtol=1e-5)
    for w, expected in zip(model.trainable_weights, expected_weights):
        replicas = [v.numpy() for v in w.values] if hasattr(w, "values") else [w.numpy()]
        np.testing.assert_array_equal(replicas[0], replicas[-1])  # replicas stay in sync
        np.testing.assert_allclose(replicas[0], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("head", [None, "bce"])
def test_pair_batches_train_and_report_distances(head):
    loss = losses.ContrastiveLoss(margin=1.0) if head is None else keras.losses.BinaryCrossentropy()
    model = make_model(head=PairClassifierHead() if head else None, loss=loss)
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (8, *SHAPE)).astype(np.float32) for _ in range(2))
    same = np.array([1, 1, 1, 1, 0, 0, 0, 0], np.float32)
    logs = model.train_on_batch((a, b), same, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert logs["positive_distance"] >= 0 and logs["negative_distance"] >= 0
    distances, decisions = model.verify(a, b)
    assert distances.shape == (8,) and decisions.dtype == tf.bool


def test_new_model_is_uncalibrated_and_keras_round_trip_in_safe_mode(tmp_path):
    model = make_model(head=PairClassifierHead())
    assert float(model.threshold.numpy()) == UNCALIBRATED  # a new model
    model.threshold.assign(0.42)
    images, _ = pk_batch(3)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True by default
    assert isinstance(loaded, SiameseModel)
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
    assert float(loaded.threshold.numpy()) == pytest.approx(0.42)
    emb = model(images)
    np.testing.assert_allclose(
        loaded.pair_distances(emb, emb[::-1]), model.pair_distances(emb, emb[::-1]), atol=1e-6
    )


def _bare_model(loss, **kwargs):
    model = SiameseModel(build_encoder("conv_small", SHAPE, 16), **kwargs)
    model.compile(optimizer="sgd", loss=loss)
    model.build((None, *SHAPE))
    return model


def test_distance_metric_and_margin_come_from_the_compiled_loss(tmp_path):
    loss = losses.TripletSemiHardLoss(margin=0.3, distance_metric="angular")
    model = _bare_model(loss)
    assert (model.distance_metric, model.stats_margin) == ("angular", 0.3)
    images, _ = pk_batch(4)
    emb = model(images)
    expected = 1.0 - np.sum(emb[:4] * emb[4:8], axis=1)  # angular: unit embeddings
    np.testing.assert_allclose(model.pair_distances(emb[:4], emb[4:8]), expected, atol=1e-5)
    path = str(tmp_path / "model.keras")
    model.save(path)
    for compiled in (True, False):  # finished runs load uncompiled: saved as resolved
        loaded = keras.models.load_model(path, compile=compiled)
        assert (loaded.distance_metric, loaded.stats_margin) == ("angular", 0.3), compiled
    # A loss without them: the model's own, else the defaults.
    assert (_bare_model(losses.ContrastiveLoss(margin=0.7)).stats_margin) == 0.7
    plain = _bare_model(losses.MultiSimilarityLoss())
    assert (plain.distance_metric, plain.stats_margin) == ("L2", 1.0)
    given = _bare_model(losses.SupConLoss(), distance_metric="squared-L2", stats_margin=0.2)
    assert (given.distance_metric, given.stats_margin) == ("squared-L2", 0.2)


def test_a_model_saved_with_a_metric_other_than_its_loss_loads_and_warns(tmp_path, caplog):
    # Models saved before the metric was read from the loss carry both: they keep loading, and
    # keep verifying with the metric their threshold was calibrated with.
    loss = losses.TripletSemiHardLoss(margin=0.5)
    model = _bare_model(loss, distance_metric="angular", stats_margin=1.0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Keras' "compile() was not called" on load
        loaded = keras.models.load_model(path)
    assert isinstance(loaded.loss, losses.TripletSemiHardLoss)  # compiled as saved
    assert (loaded.distance_metric, loaded.stats_margin) == ("angular", 1.0)
    assert "differs from its loss" not in caplog.text  # loading is not training
    images, labels = pk_batch(5)
    loaded.train_on_batch(images, labels)
    assert "differs from its loss's 'L2'" in caplog.text


@pytest.mark.parametrize(
    "loss",
    [
        losses.TripletSemiHardLoss(margin=0.5),
        losses.TripletHardLoss(margin=0.5),
        losses.TripletBatchAllLoss(margin=0.5),
        losses.MultiSimilarityLoss(),
        losses.CircleLoss(),
        losses.SupConLoss(),
        losses.ArcFaceLoss(scale=16.0),
    ],
    ids=["semihard", "hard", "batch_all", "multi_similarity", "circle", "supcon", "arcface"],
)
def test_cross_replica_mining_equals_one_replica_on_the_global_batch(loss, two_cpus):
    images, labels = pk_batch(5, p=6, k=4)
    proxies = (lambda: ClassProxies(6)) if isinstance(loss, losses.ArcFaceLoss) else (lambda: None)
    # One replica, the whole batch.
    single = make_model(seed=3, loss=loss, proxies=proxies())
    single_logs = single.train_on_batch(images, labels, return_dict=True)
    # Two replicas, each with half the classes, mining over the gathered global batch.
    with two_cpus.scope():
        model = make_model(seed=3, loss=loss, proxies=proxies())
        model.cross_replica_mining = True
    history = fit_on_two_replicas(two_cpus, model, [(images, labels)])
    np.testing.assert_allclose(history.history["loss"][0], single_logs["loss"], rtol=1e-5)
    for w, expected in zip(model.trainable_weights, single.trainable_weights):
        np.testing.assert_allclose(w.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_per_replica_mining_differs_from_global_mining(two_cpus):
    # Without the option each replica mines only within its half: a different (documented) loss.
    images, labels = pk_batch(5, p=6, k=4)
    single = make_model(seed=3)
    single_loss = single.train_on_batch(images, labels, return_dict=True)["loss"]
    with two_cpus.scope():
        model = make_model(seed=3)
    history = fit_on_two_replicas(two_cpus, model, [(images, labels)])
    fn = losses.TripletSemiHardLoss(margin=0.5)
    halves = [
        fn(labels[i * 12 : (i + 1) * 12], single_embeddings)
        for i, single_embeddings in enumerate(np.split(make_model(seed=3)(images).numpy(), 2))
    ]
    np.testing.assert_allclose(history.history["loss"][0], np.mean(halves), rtol=1e-5)
    assert abs(history.history["loss"][0] - single_loss) > 1e-4
