"""The resume check of a workdir: what counts as a run to resume, what may change on resume."""

import json

import pytest
import tensorflow as tf

from siamese_tf.errors import InputError
from trainers import workdir as wd
from trainers.config import TrainConfig


def saved_run(path, checkpoint=True, **fields):
    config = json.loads(TrainConfig(**fields).to_json())
    path.mkdir(exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    if checkpoint:
        checkpoint = tf.train.Checkpoint(step=tf.Variable(1))
        tf.train.CheckpointManager(checkpoint, str(path / "backup"), max_to_keep=1).save()
    return config


def test_config_without_checkpoint_is_a_new_run(tmp_path):
    saved_run(tmp_path, checkpoint=False, classes_per_batch=4)
    new = json.loads(TrainConfig(classes_per_batch=6).to_json())
    assert not wd.has_checkpoint(str(tmp_path))
    assert wd.check_resume_config(str(tmp_path), new, allow_change=False) is False


def test_resume_may_raise_the_length_and_nothing_else(tmp_path):
    saved = saved_run(tmp_path, epochs=2, max_steps=0)
    check = lambda **changes: wd.check_resume_config(  # noqa: E731
        str(tmp_path), {**saved, **changes}, allow_change=False
    )
    assert check() is True
    assert check(epochs=5) is True  # Extends the run.
    assert check(max_steps=500) is True  # 300 steps in all: still no shorter.
    assert check(eval_batch_size=64, data_dir="/elsewhere") is True  # Runtime fields.
    with pytest.raises(InputError, match="shorten it to 150.*may only raise"):
        check(epochs=1)
    with pytest.raises(InputError, match="shorten it to 100"):
        check(max_steps=100)
    with pytest.raises(InputError, match="margin: 0.5 -> 0.2"):
        check(margin=0.2, epochs=5)
    assert wd.check_resume_config(str(tmp_path), {**saved, "epochs": 1}, allow_change=True)
