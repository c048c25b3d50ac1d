"""Model selection on held-out classes: per-epoch N-way 1-shot validation, stalled learning."""

import json
import logging

import numpy as np
import pytest
from helpers import one_error_line, run_cli

from siamese_tf.callbacks import OneShotValidation, StalledLearning
from siamese_tf.errors import InputError

OPEN_SET = (
    "--split_by=class --calibration_fraction=0.3 --test_fraction=0.2 --classes_per_batch=5 "
    "--epochs=2 --steps_per_epoch=3 --calibration_pairs=100 --test_pairs=100"
).split()


def run_train(*args):
    return run_cli("train", *args, timeout=300)


def test_cli_logs_the_oneshot_accuracy_every_epoch(tmp_path):
    result = run_train(
        f"--workdir={tmp_path}", *OPEN_SET, "--oneshot_ways=3", "--oneshot_episodes=40"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2
    for line in lines:
        assert 0.0 <= line["val_oneshot_3way"] <= 1.0 and "val_auc" in line


def test_cli_too_many_ways_is_one_line_naming_the_flags(tmp_path):
    result = run_train(
        f"--workdir={tmp_path / 'run'}", *OPEN_SET, "--oneshot_ways=9", "--oneshot_episodes=40"
    )
    line = one_error_line(result)
    assert "--oneshot_ways=9 needs" in line and "--calibration_fraction" in line


class _Nearest:
    """A stand-in model whose embedding of an image is its first pixel: episodes it can solve."""

    output_shape = (None, 1)

    def __call__(self, images, training=False):
        import tensorflow as tf

        return tf.cast(tf.reshape(images, [tf.shape(images)[0], -1])[:, :1], tf.float32)


def test_oneshot_validation_scores_the_episodes():
    labels = np.repeat(np.arange(6), 3)
    images = (labels * 40)[:, None, None, None].astype(np.uint8) + np.zeros((18, 2, 2, 1), np.uint8)
    callback = OneShotValidation(images, labels, ways=4, episodes=30, seed=1)
    callback.set_model(_Nearest())
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs == {"val_oneshot_4way": 1.0}  # same-class images are identical here
    with pytest.raises(InputError):
        OneShotValidation(images, labels, ways=7, episodes=5)


def test_stalled_learning_says_so_once_per_idle_epoch(caplog):
    callback = StalledLearning()
    with caplog.at_level(logging.WARNING):
        callback.on_epoch_end(2, {"active_triplet_fraction": 0.0, "loss": 0.0})
        callback.on_epoch_end(3, {"active_triplet_fraction": 0.05, "loss": 0.1})
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("epoch 3: no triplet was active")
