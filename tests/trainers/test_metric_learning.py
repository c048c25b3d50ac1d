"""The metric-learning recipe: a one-epoch smoke run writes a complete workdir."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import TINY_RUN

import siamese_tf  # noqa: F401
from siamese_tf.errors import InputError
from trainers import metric_learning
from trainers.config import TrainConfig

TINY = {**TINY_RUN, "steps_per_epoch": 4}


def train(config, workdir):
    strategy = tf.distribute.get_strategy()
    return metric_learning.train_and_evaluate(config, str(workdir), strategy, verbose=0)


def test_one_epoch_smoke_run_writes_the_workdir(tmp_path):
    config = TrainConfig(**TINY)
    report = train(config, tmp_path)
    for name in ("config.json", "metrics.jsonl", "model.keras", "report.json"):
        assert (tmp_path / name).exists(), name
    saved = json.loads((tmp_path / "report.json").read_text())
    for key in ("auc", "eer", "accuracy", "threshold"):
        assert 0.0 <= saved["test"][key] <= 2.0, key
    assert 0.0 <= saved["one_nn_accuracy"] <= 1.0 and saved["train_seconds"] > 0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    epoch = json.loads(lines[0])
    assert len(lines) == 1 and {"loss", "val_auc", "val_eer", "val_threshold"} <= set(epoch)
    # The calibrated threshold travels with the model and is the one the report used.
    model = keras.models.load_model(tmp_path / "model.keras")
    assert float(model.threshold.numpy()) == pytest.approx(saved["test"]["threshold"])
    assert float(model.threshold.numpy()) == pytest.approx(epoch["val_threshold"])
    config_json = json.loads((tmp_path / "config.json").read_text())
    assert config_json["classes_per_batch"] == 10 and config_json["split_sizes"]["test"] > 0
    assert report["test"]["auc"] == saved["test"]["auc"]


@pytest.mark.parametrize("loss", ["contrastive", "bce"])
def test_pair_losses_train_end_to_end_and_learn(tmp_path, loss):
    # Pair batches go through the same recipe (prebuild, fit, calibration, report) as P×K ones.
    config = TrainConfig(
        loss=loss, margin=1.0, epochs=2, steps_per_epoch=40, calibration_pairs=400, test_pairs=400
    )
    report = train(config, tmp_path)
    assert report["test"]["auc"] > 0.9, report["test"]
    epoch = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"loss", "positive_distance", "negative_distance", "val_auc"} <= set(epoch)
    assert "active_triplet_fraction" not in epoch  # A P×K-only statistic.
    model = keras.models.load_model(tmp_path / "model.keras")
    assert (model.head is not None) == (loss == "bce")
    # Called on a pair batch, the model gives what the pair loss scored: distances (or
    # 1 - p(same) through pair_distances for a head model), one per pair.
    images = np.zeros((3, 8, 8, 1), np.float32)
    assert tuple(model((images, images)).shape)[0] == 3


def test_split_is_stratified_and_seeded():
    data = metric_learning.prepare_data(TrainConfig(**TINY))
    again = metric_learning.prepare_data(TrainConfig(**TINY))
    np.testing.assert_array_equal(data.splits.test, again.splits.test)
    assert set(np.unique(data.calibration.labels)) == set(range(10))
    assert not set(data.splits.train) & set(data.splits.test)
    # Evaluation rebuilds the split from the saved config through the same method.
    np.testing.assert_array_equal(
        TrainConfig(**TINY).split(data.source.labels).test, data.splits.test
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(classes_per_batch=11), "classes_per_batch=11 exceeds"),
        (dict(samples_per_class=500), "samples_per_class=500 exceeds"),
        (dict(dataset="imagenet"), "unknown dataset"),
        (dict(loss="proxy_anchor"), "--loss=proxy_anchor is not one of: triplet_semihard"),
    ],
)
def test_prepare_rejects_bad_config(overrides, message):
    with pytest.raises(InputError, match=message):
        metric_learning.prepare_data(TrainConfig(**{**TINY, **overrides}))


NEW_LOSSES = [dict(loss=name) for name in ("multi_similarity", "circle", "supcon")]


@pytest.mark.parametrize(
    "overrides",
    [*NEW_LOSSES, dict(loss="arcface", samples_per_class=1)],
    ids=["multi_similarity", "circle", "supcon", "arcface_k1"],
)
def test_new_losses_train_the_default_job(tmp_path, overrides):
    config = TrainConfig(**{**TINY, "steps_per_epoch": 30, **overrides})
    report = train(config, tmp_path)
    # 30 steps from a random start: the embedding already separates digits.
    assert report["test"]["auc"] > 0.8, report["test"]
    model = keras.models.load_model(tmp_path / "model.keras")
    assert float(model.threshold.numpy()) == pytest.approx(report["test"]["threshold"])
    # The exported model is the embedding, whatever the loss trained with.
    assert tuple(model(np.zeros((2, 8, 8, 1), np.float32)).shape) == (2, config.embedding_dim)


@pytest.mark.parametrize(
    "overrides",
    [dict(loss="arcface"), dict(loss="multi_similarity", cross_batch_memory=200)],
    ids=["arcface_proxies", "xbm_memory"],
)
def test_proxies_and_memory_resume_exactly(tmp_path, overrides):
    base = {**TINY, "epochs": 2, "steps_per_epoch": 3, **overrides}
    whole = train(TrainConfig(**base), tmp_path / "whole")
    first = train(TrainConfig(**base, max_steps=3), tmp_path / "resumed")
    assert first["steps"] == 3
    resumed = train(TrainConfig(**base), tmp_path / "resumed")
    assert resumed["start_step"] == 3 and resumed["steps"] == 6
    # Every weight, the proxies and the memory (queue, labels, counter) included, bit for bit.
    assert resumed["weights_sha256"] == whole["weights_sha256"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(loss="multi_similarity", ms_base=1.5), "--ms_base must be in"),
        (dict(loss="arcface", arcface_variant="sphere"), "--arcface_variant=sphere is not one"),
        (dict(loss="arcface", arcface_variant="cosface", arcface_margin=1.0), "--arcface_margin"),
        (dict(loss="bce", cross_batch_memory=8), "--cross_batch_memory needs"),
        (dict(cross_batch_memory=-1), "--cross_batch_memory must be >= 0"),
        (dict(loss="supcon", supcon_temperature=0.0), "--supcon_temperature must be > 0"),
        (dict(epochs=0), "epochs must be a positive integer"),
    ],
)
def test_config_rejects_bad_loss_settings_and_sizes(overrides, message):
    with pytest.raises(InputError, match=message):
        TrainConfig(**overrides)
