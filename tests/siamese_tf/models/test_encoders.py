"""Encoders: shapes, unit-norm embeddings, what the conv4 variants pool, bad sizes."""

import keras
import numpy as np
import pytest

from siamese_tf.errors import InputError
from siamese_tf.models import build_encoder
from siamese_tf.models.encoders import ENCODERS


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_embeds_uint8_images_on_the_unit_sphere(name):
    encoder = build_encoder(name, (32, 32, 1), 24)
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 1)).astype(np.uint8)
    out = keras.ops.convert_to_numpy(encoder(images, training=False))
    assert out.shape == (5, 24)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_embeddings_are_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        encoder = build_encoder("conv_small", (8, 8, 1), 4)
        assert encoder.get_layer("embedding").output.dtype == "float16"
        assert encoder.output.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_conv4_flat_keeps_the_layout_conv4_averages_away():
    flat = build_encoder("conv4_flat", (48, 48, 1), 16)
    pooled = build_encoder("conv4", (48, 48, 1), 16)
    # 48 / 16 = 3: the embedding layer sees a 3x3x64 map flattened, or 64 averaged features.
    assert flat.get_layer("embedding").kernel.shape == (3 * 3 * 64, 16)
    assert pooled.get_layer("embedding").kernel.shape == (64, 16)
    # Swapping the 3x3 cells of the last feature map changes nothing after average pooling
    # and changes the flattened embedding.
    features = np.random.default_rng(1).normal(size=(1, 3, 3, 64)).astype(np.float32)
    swapped = features[:, ::-1, ::-1]
    for encoder, changes in ((flat, True), (pooled, False)):
        last = encoder.get_layer("block4_pool").output
        head = keras.Model(last, encoder.output)
        a, b = (keras.ops.convert_to_numpy(head(x)) for x in (features, swapped))
        assert (not np.allclose(a, b, atol=1e-6)) == changes, encoder.name


def test_conv4_refuses_images_it_would_pool_to_nothing():
    with pytest.raises(InputError, match="at least 16x16"):
        build_encoder("conv4", (8, 8, 1), 16)
    with pytest.raises(InputError, match="unknown encoder"):
        build_encoder("resnet", (32, 32, 1), 16)
