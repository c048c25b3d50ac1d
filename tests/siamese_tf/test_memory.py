"""Cross-batch memory (XBM): the ring buffer, the loss against it, replicas, saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import fit_on_two_replicas

import siamese_tf  # noqa: F401  (registers the serializable classes)
from siamese_tf import losses
from siamese_tf.heads import ClassProxies
from siamese_tf.memory import CrossBatchMemory
from siamese_tf.models import SiameseModel, build_encoder

SHAPE = (8, 8, 1)


def pk_batch(seed, p=4, k=3):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (p * k, *SHAPE)).astype(np.float32)
    labels = np.repeat(rng.choice(20, p, replace=False), k).astype(np.int64)
    return images, labels


def make_model(seed=0, loss=None, **kwargs):
    keras.utils.set_random_seed(seed)
    model = SiameseModel(build_encoder("conv_small", SHAPE, 16), stats_margin=0.5, **kwargs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss or losses.MultiSimilarityLoss())
    model.build((None, *SHAPE))
    return model


def test_memory_keeps_the_last_n_examples():
    memory = CrossBatchMemory(5)
    memory.build((None, 2))
    assert memory.read()[0].shape == (0, 2)

    def rows(labels):
        return np.stack([labels, -np.asarray(labels)], axis=1).astype(np.float32)

    memory.enqueue(rows([0, 1, 2]), np.array([0, 1, 2]))
    memory.enqueue(rows([3, 4, 5, 6]), np.array([3, 4, 5, 6]))
    embeddings, labels = (t.numpy() for t in memory.read())
    assert sorted(labels) == [2, 3, 4, 5, 6]
    np.testing.assert_array_equal(embeddings, rows(labels))
    memory.enqueue(rows(list(range(10, 17))), np.arange(10, 17))  # larger than the memory
    assert sorted(memory.read()[1].numpy()) == [12, 13, 14, 15, 16]
    assert int(memory.count.numpy()) == 14
    with pytest.raises(ValueError, match="size"):
        CrossBatchMemory(0)


def test_a_step_scores_the_batch_against_the_memory_then_enqueues_it():
    first, second = pk_batch(1), pk_batch(2)
    model = make_model(cross_batch_memory=64)
    plain = make_model()
    # Empty memory: the plain loss.
    emb_first = model(first[0]).numpy()
    logs = model.train_on_batch(*first, return_dict=True)
    plain_logs = plain.train_on_batch(*first, return_dict=True)
    np.testing.assert_allclose(logs["loss"], plain_logs["loss"], rtol=1e-6)
    stored, stored_labels = (t.numpy() for t in model.memory.read())
    np.testing.assert_allclose(stored, emb_first, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(stored_labels, first[1])
    # Second step: anchors of the batch against [batch; memory] (no gradient into the memory).
    emb_second = model(second[0])
    labels, embeddings = np.concatenate([second[1], first[1]]), tf.concat([emb_second, stored], 0)
    expected = losses.multi_similarity_loss(labels, embeddings, anchor_indices=tf.range(12))
    logs = model.train_on_batch(*second, return_dict=True)
    np.testing.assert_allclose(logs["loss"], expected.numpy(), rtol=1e-5)
    assert int(model.memory.count.numpy()) == 24


def _replica_values(variable):
    """Each replica's copy of a (Keras) variable as numpy arrays."""
    backing = getattr(variable, "value", variable)
    copies = getattr(backing, "values", None) or [backing]
    assert len(copies) == 2
    return [np.asarray(copy.numpy()) for copy in copies]


@pytest.mark.parametrize("loss", [losses.MultiSimilarityLoss(), losses.TripletSemiHardLoss(0.5)])
def test_two_replicas_with_memory_equal_one_replica_on_the_global_batch(loss, two_cpus):
    batches = [pk_batch(3), pk_batch(4), pk_batch(5)]
    single = make_model(seed=3, loss=loss, cross_batch_memory=30)
    single_losses = [single.train_on_batch(*b, return_dict=True)["loss"] for b in batches]
    with two_cpus.scope():
        model = make_model(seed=3, loss=loss, cross_batch_memory=30, cross_replica_mining=True)
    history = fit_on_two_replicas(two_cpus, model, batches)
    np.testing.assert_allclose(history.history["loss"][0], np.mean(single_losses), rtol=1e-5)
    for w, expected in zip(model.trainable_weights, single.trainable_weights):
        np.testing.assert_allclose(w.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    # Each replica enqueued the gathered global batch once; the copies are identical.
    for variable, expected in zip(model.memory.weights, single.memory.weights):
        copies = _replica_values(variable)
        for copy in copies[1:]:
            np.testing.assert_array_equal(copy, copies[0])
        np.testing.assert_allclose(copies[0], expected.numpy(), rtol=1e-5, atol=1e-6)
    assert int(_replica_values(model.memory.count)[0]) == 36


def test_per_replica_mining_with_memory_shares_one_memory(two_cpus):
    batches = [pk_batch(6), pk_batch(7)]
    with two_cpus.scope():
        model = make_model(seed=4, cross_batch_memory=100)
    fit_on_two_replicas(two_cpus, model, batches)
    labels = _replica_values(model.memory.labels)
    np.testing.assert_array_equal(labels[0], labels[-1])
    np.testing.assert_array_equal(labels[0][:24], np.concatenate([b[1] for b in batches]))


def test_saved_model_keeps_memory_and_proxies_in_safe_mode(tmp_path):
    model = make_model(cross_batch_memory=16)
    model.train_on_batch(*pk_batch(8), return_dict=True)
    arcface = make_model(loss=losses.ArcFaceLoss(), proxies=ClassProxies(20))
    arcface.train_on_batch(*pk_batch(9), return_dict=True)
    for original in (model, arcface):
        path = str(tmp_path / f"{id(original)}.keras")
        original.save(path)
        loaded = keras.models.load_model(path)
        assert len(loaded.weights) == len(original.weights)
        for a, b in zip(loaded.weights, original.weights):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        images = pk_batch(10)[0]
        np.testing.assert_allclose(loaded(images), original(images), atol=1e-6)


def test_memory_needs_a_batch_loss_and_batch_losses_need_labelled_batches():
    model = make_model(loss=losses.ArcFaceLoss(), proxies=ClassProxies(20), cross_batch_memory=8)
    with pytest.raises(ValueError, match="cross_batch_memory needs a batch loss"):
        model.train_on_batch(*pk_batch(11))
    model = make_model(loss=losses.SupConLoss())
    images = pk_batch(12)[0]
    with pytest.raises(ValueError, match="needs labelled batches"):
        model.train_on_batch((images, images), np.ones(12, np.float32))


def test_export_of_a_model_with_proxies_and_memory_serves_the_embedding(tmp_path):
    from siamese_tf.export import export_saved_model

    model = make_model(loss=losses.ArcFaceLoss(), proxies=ClassProxies(20), cross_batch_memory=8)
    model.threshold.assign(0.7)
    export_saved_model(model, str(tmp_path / "export"))
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    images = pk_batch(13)[0].astype(np.uint8)
    served = loaded.signatures["embed"](images=tf.constant(images))["embeddings"]
    np.testing.assert_allclose(served, model(images.astype(np.float32)), atol=1e-5)
    assert float(loaded.threshold.numpy()) == pytest.approx(0.7)
