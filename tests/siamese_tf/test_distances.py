"""Distances, distance layers and the pair head: values, stability at zero, serialisation."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
import tfa_reference as tfa
from helpers import value_and_grad

from siamese_tf import distances, heads
from siamese_tf.distances import pair_distances, pairwise_distances

METRICS = ("L2", "squared-L2", "angular")


def _np_distances(a, b, metric):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if metric == "angular":
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True)
        return 1.0 - np.sum(a * b, axis=-1)
    squared = np.sum((a - b) ** 2, axis=-1)
    return np.sqrt(squared) if metric == "L2" else squared


@pytest.mark.parametrize("metric", METRICS)
def test_pairwise_and_pair_distances_values(metric):
    x = np.random.default_rng(0).normal(size=(9, 5)).astype(np.float32)
    d = pairwise_distances(x, metric)
    assert d.dtype == tf.float32 and d.shape == (9, 9)
    np.testing.assert_allclose(d, _np_distances(x[:, None], x[None], metric), atol=2e-5)
    np.testing.assert_array_equal(np.diag(d), 0.0)
    rows = pairwise_distances(x, metric, anchor_indices=[7, 2])
    np.testing.assert_allclose(rows, d.numpy()[[7, 2]], atol=1e-6)
    assert rows.numpy()[0, 7] == 0.0 and rows.numpy()[1, 2] == 0.0
    a, b = np.random.default_rng(3).normal(size=(2, 7, 5)).astype(np.float32)
    np.testing.assert_allclose(pair_distances(a, b, metric), _np_distances(a, b, metric), atol=1e-5)


@pytest.mark.parametrize("metric", ["L2", "squared-L2"])
def test_pairwise_distances_equal_tfa(metric):
    x = np.random.default_rng(1).normal(size=(12, 6)).astype(np.float32)
    ref = tfa.pairwise_distance(x, squared=metric == "squared-L2")
    np.testing.assert_allclose(pairwise_distances(x, metric), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_gradients_finite_for_duplicates_identical_inputs_and_zeros(metric):
    base = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    x = tf.constant(np.concatenate([base, base, base[:1]]))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        total = tf.reduce_sum(pairwise_distances(x, metric))
        same = tf.reduce_sum(pair_distances(x, x, metric))
    grad = tape.gradient(total, x).numpy()
    assert np.all(np.isfinite(grad))
    # Angular: the cosine of a vector with itself may round to 1 - 6e-8, hence the tolerance.
    atol = 1e-6 if metric == "angular" else 0.0
    np.testing.assert_allclose(pair_distances(x, x, metric), 0.0, atol=atol)
    np.testing.assert_allclose(tape.gradient(same, x), 0.0, atol=atol)
    # All-zero embeddings too.
    total = lambda x: (
        tf.reduce_sum(pairwise_distances(x, metric))
        + tf.reduce_sum(pair_distances(x, x[::-1], metric))
    )
    assert np.all(np.isfinite(value_and_grad(total, tf.zeros([4, 3]))[1]))


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_computed_in_float32(dtype):
    x = tf.cast(np.random.default_rng(4).normal(size=(6, 8)), dtype)
    for metric in METRICS:
        d = pairwise_distances(x, metric)
        assert d.dtype == tf.float32
        np.testing.assert_allclose(d, pairwise_distances(tf.cast(x, tf.float32), metric))
        p = pair_distances(x, x[::-1], metric)
        assert p.dtype == tf.float32


def test_callable_and_unknown_metric():
    x = np.eye(3, dtype=np.float32)
    d = pairwise_distances(x, lambda e: 2.0 - tf.matmul(e, e, transpose_b=True))
    np.testing.assert_allclose(d, 2.0 - np.eye(3))
    with pytest.raises(ValueError, match="unknown distance metric"):
        pairwise_distances(x, "L1")
    with pytest.raises(ValueError, match="unknown distance metric"):
        pair_distances(x, x, "cosine")


LAYERS = [
    (distances.L2Distance, "L2"),
    (distances.SquaredL2Distance, "squared-L2"),
    (distances.AngularDistance, "angular"),
]


@pytest.mark.parametrize("cls,metric", LAYERS)
def test_distance_layers(cls, metric):
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 4, 3)).astype(np.float32)
    layer = cls(name="d")
    expected = pair_distances(a, b, metric)
    np.testing.assert_allclose(layer(a, b), expected)
    np.testing.assert_allclose(layer([a, b]), expected)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is cls and restored.name == "d"
    np.testing.assert_allclose(restored(a, b), expected)


def test_a_model_saved_with_the_old_normalisation_layer_still_loads(tmp_path):
    from siamese_tf.models import SiameseModel, build_encoder

    model = SiameseModel(build_encoder("conv_small", (8, 8, 1), 4))
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 1)).astype(np.uint8)
    path = os.fspath(tmp_path / "old.keras")
    model.save(path)
    # Rewrite the last layer as the files of earlier versions hold it (siamese_tf's own layer).
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    layers = config["config"]["encoder"]["config"]["layers"]
    [layer] = [layer for layer in layers if layer["name"] == "l2_normalize"]
    name = "L2Normalization"
    layer.update(
        module="siamese_tf.distances", class_name=name, registered_name=f"siamese_tf>{name}"
    )
    layer["config"]["epsilon"] = 1e-12
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    loaded = keras.models.load_model(path)  # safe_mode=True
    assert type(loaded.encoder.get_layer("l2_normalize")) is distances.L2Normalization
    np.testing.assert_allclose(loaded(images), model(images), rtol=1e-6)


def test_pair_head_is_symmetric_probability():
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(2, 5, 4)).astype(np.float32)
    head = heads.PairClassifierHead(hidden_units=(8, 4), dropout_rate=0.1)
    p = head([a, b]).numpy()
    assert p.shape == (5,) and np.all((p > 0) & (p < 1))
    np.testing.assert_allclose(head([b, a]), p, rtol=1e-6)
    config = head.get_config()
    assert config["hidden_units"] == [8, 4] and config["dropout_rate"] == 0.1
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(head))
    assert isinstance(restored, heads.PairClassifierHead) and restored.hidden_units == (8, 4)


def test_pair_head_trains_with_binary_cross_entropy():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(64, 3)).astype(np.float32)
    same = rng.integers(0, 2, 64)
    b = np.where(same[:, None] == 1, a, -a).astype(np.float32)
    in_a, in_b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([in_a, in_b], heads.PairClassifierHead(hidden_units=(16,))([in_a, in_b]))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    history = model.fit([a, b], same, epochs=20, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]


def test_layers_survive_keras_file_round_trip(tmp_path):
    in_a, in_b = keras.Input((4,)), keras.Input((4,))
    emb_a = keras.layers.UnitNormalization()(keras.layers.Dense(3, name="dense")(in_a))
    emb_b = keras.layers.UnitNormalization()(in_b[:, :3])
    outputs = [
        distances.L2Distance()(emb_a, emb_b),
        distances.SquaredL2Distance()(emb_a, emb_b),
        distances.AngularDistance()([emb_a, emb_b]),
        heads.PairClassifierHead(hidden_units=(5,))([emb_a, emb_b]),
    ]
    model = keras.Model([in_a, in_b], outputs)
    x = np.random.default_rng(8).normal(size=(2, 6, 4)).astype(np.float32)
    path = os.fspath(tmp_path / "pair.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True: no Lambda, all registered
    for got, want in zip(loaded([x[0], x[1]]), model([x[0], x[1]]), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_layers_compute_in_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(4)(inputs)
        assert hidden.dtype == "float16"
        assert distances.L2Distance()(hidden, hidden).dtype == "float32"
        assert heads.PairClassifierHead()([hidden, hidden]).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("entries", ["dense", "sparse"])
def test_gradient_matches_autodiff_of_plain_formula(metric, entries):
    # Dense upstream weights take the matmul backward, a few non-zero ones the per-pair one.
    rng = np.random.default_rng(9)
    x = rng.normal(size=(10, 4)).astype(np.float32)
    weights = rng.normal(size=(10, 10)).astype(np.float32)
    if entries == "sparse":  # 6 entries (one on the diagonal): 6 * D <= 10 * 10
        mask = np.zeros((10, 10), bool)
        mask[[0, 2, 7, 9, 3, 8], [3, 5, 1, 9, 8, 2]] = True
        weights *= mask

    def plain(e):  # TF autodiff through TFA's formulas
        if metric == "angular":
            n = tf.math.l2_normalize(e, axis=1)
            return (1.0 - tf.matmul(n, n, transpose_b=True)) * (1.0 - tf.eye(10))
        return tfa.pairwise_distance(e, squared=metric == "squared-L2")

    ours = lambda e: tf.reduce_sum(pairwise_distances(e, metric) * weights)
    grads = [value_and_grad(f, x)[1] for f in (ours, lambda e: tf.reduce_sum(plain(e) * weights))]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    rows = [3, 8]
    ours = lambda e: tf.reduce_sum(
        pairwise_distances(e, metric, anchor_indices=rows) * weights[rows]
    )
    plain_rows = lambda e: tf.reduce_sum(tf.gather(plain(e), rows) * weights[rows])
    grads = [value_and_grad(f, x)[1] for f in (ours, plain_rows)]
    np.testing.assert_allclose(grads[0], grads[1], atol=1e-5)


@pytest.mark.parametrize("metric", ["L2", "squared-L2", "angular", "callable"])
@pytest.mark.parametrize("anchors", [None, [5, 0, 3]])
def test_selected_entries_equal_gathering_the_matrix_value_and_gradient(metric, anchors):
    """`selectable_distances`' per-pair gradient is the matrix's, duplicates (distance 0) and
    repeated selections included; a callable metric gathers from its own matrix. (B=64, D=4:
    few enough selected entries that the matrix's own backward accumulates them per pair too;
    its dense branch loses ~1e-4 to cancellation next to a round-off distance of a duplicate.)"""
    rng = np.random.default_rng(41)
    emb = rng.normal(size=(64, 4)).astype(np.float32)
    emb[6] = emb[2]  # a duplicate: a zero distance off the diagonal
    metric = (lambda e: pairwise_distances(e, "squared-L2")) if metric == "callable" else metric
    rows = 64 if anchors is None else len(anchors)
    columns = rng.integers(0, 64, (rows, 4))
    columns[:, 0] = 6  # anchor 2's duplicate (a zero distance), selected twice per row
    columns[:, 1] = 6
    weights = rng.normal(size=(rows, 4)).astype(np.float32)

    def gathered(e):
        matrix = pairwise_distances(e, metric, anchors)
        return tf.reduce_sum(weights * tf.gather(matrix, columns, batch_dims=1))

    def selected(e):
        matrix, select = distances.selectable_distances(e, metric, anchors)
        assert matrix.shape == (rows, 64)
        return tf.reduce_sum(weights * select(columns))

    value, grad = value_and_grad(gathered, emb)
    sel_value, sel_grad = value_and_grad(selected, emb)
    np.testing.assert_allclose(sel_value, value, rtol=1e-6)
    np.testing.assert_allclose(sel_grad, grad, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(sel_grad))
