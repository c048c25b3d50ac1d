"""Checkpoint hygiene in-process: the NaN guard keeps the last good checkpoint; mixed precision."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import siamese_tf  # noqa: F401
from siamese_tf.checkpointing import NonFiniteLossError, TrainingState
from siamese_tf.losses import TripletSemiHardLoss
from siamese_tf.models import SiameseModel, build_encoder
from trainers.training_loop import fit_resumable

SHAPE = (8, 8, 1)


def make_model():
    keras.utils.set_random_seed(0)
    model = SiameseModel(build_encoder("conv_small", SHAPE, 8))
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss=TripletSemiHardLoss(margin=0.5))
    model.prebuild((tf.TensorSpec([None, *SHAPE], tf.float32), tf.TensorSpec([None], tf.int64)))
    return model


def dataset_with_nan_at(bad_step):
    def batch(step):
        images = tf.random.stateless_uniform([8, *SHAPE], seed=[step, 0], maxval=255.0)
        images = tf.where(step == bad_step, images * np.nan, images)
        return images, tf.repeat(tf.range(4, dtype=tf.int64), 2)

    def make(start_step):
        return tf.data.Dataset.counter(start_step).map(batch)

    return make


def test_nan_loss_stops_before_a_bad_checkpoint(tmp_path):
    model = make_model()
    state = TrainingState(model, str(tmp_path))
    kwargs = dict(steps_per_epoch=5, total_steps=20, callbacks=[], save_every_steps=2, verbose=0)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 7"):
        fit_resumable(model, state, dataset_with_nan_at(6), **kwargs)
    # Backups at steps 2, 4, 5 (epoch end) and 6; the NaN batch is the 7th: nothing after it.
    assert state.backup.latest_checkpoint.endswith("step-6")
    fresh = make_model()
    restored = TrainingState(fresh, str(tmp_path)).restore()
    assert restored == 6
    assert all(np.all(np.isfinite(w.numpy())) for w in fresh.weights)


def test_mixed_precision_step_is_finite():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = make_model()
        images = np.random.default_rng(0).uniform(0, 255, (8, *SHAPE)).astype(np.float32)
        labels = np.repeat(np.arange(4), 2)
        logs = model.train_on_batch(images, labels, return_dict=True)
        assert np.isfinite(logs["loss"])
        assert model(images).dtype == tf.float32  # embeddings and distances stay float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_a_resumed_progress_bar_numbers_epochs_over_the_whole_run(tmp_path, capsys):
    # Stopped at step 7 of 3 × 5: the resumed run finishes epoch 2 in a `fit` of its own, which
    # Keras alone would show as "Epoch 2/2".
    kwargs = dict(steps_per_epoch=5, callbacks=[], save_every_steps=1)
    for total_steps, verbose in ((7, 0), (15, 1)):  # stopped, then resumed with a progress bar
        capsys.readouterr()
        model = make_model()
        state, data = TrainingState(model, str(tmp_path)), dataset_with_nan_at(-1)
        fit_resumable(model, state, data, total_steps=total_steps, verbose=verbose, **kwargs)
    out = capsys.readouterr().out
    assert re.findall(r"Epoch (\d+)/(\d+)", out) == [("2", "3"), ("3", "3")]
    assert "2/2" not in out and "5/5" in out  # the resumed epoch's bar ends at 5 of 5 steps
