"""`siamese_tf.inference.embed`: batches, and test-time augmentation by translations."""

import keras
import numpy as np
import pytest

from siamese_tf.inference import embed


def _model(height, width):
    inputs = keras.Input((height, width, 1))
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    x = keras.layers.Dense(8, kernel_initializer=keras.initializers.RandomNormal(seed=1))(x)
    return keras.Model(inputs, keras.layers.UnitNormalization()(x))


def test_tta_embedding_is_the_normalised_mean_of_every_translated_view():
    images = np.random.default_rng(0).integers(0, 256, size=(7, 12, 10, 1)).astype(np.uint8)
    model = _model(12, 10)
    np.testing.assert_allclose(embed(model, images, 3), model(images).numpy(), atol=1e-6)
    # The reference: numpy's mirrored padding (edge included) and an explicit crop per view.
    for shift in (1, 2):
        padded = np.pad(images, [(0, 0), (shift, shift), (shift, shift), (0, 0)], "symmetric")
        views = [
            model(padded[:, dy : dy + 12, dx : dx + 10]).numpy()
            for dy in range(2 * shift + 1)
            for dx in range(2 * shift + 1)
        ]
        expected = np.mean(views, axis=0)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        got = embed(model, images, batch_size=3, tta_shift=shift)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)
    assert not np.allclose(got, embed(model, images, 3))


def test_tta_shift_must_fit_the_image():
    images = np.zeros((2, 12, 10, 1), np.uint8)
    model = _model(12, 10)
    with pytest.raises(ValueError, match="larger than 10 pixels on each side, got 12x10"):
        embed(model, images, tta_shift=5)
    with pytest.raises(ValueError, match="tta_shift must be >= 0"):
        embed(model, images, tta_shift=-1)
