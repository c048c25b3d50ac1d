"""Embedding networks (encoders): images in, L2-normalised embeddings out.

The encoder contract, which `SiameseModel` and the samplers rely on and which an encoder of your
own must keep: the input is a batch of images as the samplers give them, uint8 [B, H, W, C]
with values 0..255 (floats on the same 0..255 scale work too; each encoder rescales first);
the output is float [B, D], L2-normalised (unit length), so distances lie in [0, 2].
"""

from __future__ import annotations

import keras

from siamese_tf.errors import InputError


def _conv_block(x, filters: int, *, batch_norm: bool, pool: bool, name: str):
    x = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv"
    )(x)
    if batch_norm:
        x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    if pool:
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    return x


def conv_small(input_shape, embedding_dim: int) -> keras.Model:
    """Two 3×3 conv blocks, a dense layer and the embedding: for small images (8×8 .. 32×32)."""
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_block(x, 32, batch_norm=False, pool=True, name="block1")
    x = _conv_block(x, 64, batch_norm=False, pool=input_shape[0] >= 8, name="block2")
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(128, activation="relu", name="hidden")(x)
    return _embedding_head(inputs, x, embedding_dim, "conv_small")


def conv4(input_shape, embedding_dim: int, filters: int = 64) -> keras.Model:
    """The conv4-64 few-shot backbone: four conv-BN-ReLU-pool blocks, global pooling, embedding."""
    return _conv4(input_shape, embedding_dim, filters, flatten=False, name="conv4")


def conv4_flat(input_shape, embedding_dim: int, filters: int = 64) -> keras.Model:
    """conv4-64 whose last feature map is flattened, not averaged, into the embedding layer.

    Global average pooling forgets where in the image a feature fired; for line drawings such
    as characters the layout of the strokes is much of the identity (the few-shot conv4 of
    Vinyals et al. and Snell et al. flattens too). Costs (H/16)·(W/16) times the embedding
    layer's weights.
    """
    return _conv4(input_shape, embedding_dim, filters, flatten=True, name="conv4_flat")


def _conv4(input_shape, embedding_dim: int, filters: int, *, flatten: bool, name: str):
    if min(input_shape[:2]) < 16:
        raise InputError(
            f"{name} halves the image four times and needs at least 16x16 images, got "
            f"{input_shape[0]}x{input_shape[1]}: set --image_size=16 or more"
        )
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i in range(4):
        x = _conv_block(x, filters, batch_norm=True, pool=True, name=f"block{i + 1}")
    if flatten:
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return _embedding_head(inputs, x, embedding_dim, name)


def _embedding_head(inputs, x, embedding_dim: int, name: str) -> keras.Model:
    x = keras.layers.Dense(embedding_dim, name="embedding")(x)
    # L2-normalised embeddings: distances live in [0, 2], so a margin means the same on any data.
    # float32 under mixed precision too (a float16 unit vector loses small distances).
    outputs = keras.layers.UnitNormalization(dtype="float32", name="l2_normalize")(x)
    return keras.Model(inputs, outputs, name=name)


ENCODERS = {"conv_small": conv_small, "conv4": conv4, "conv4_flat": conv4_flat}


def build_encoder(name: str, input_shape, embedding_dim: int) -> keras.Model:
    """Builds an encoder by name.

    Args:
      name: one of `ENCODERS`.
      input_shape: (H, W, C) of one image.
      embedding_dim: size of the embedding.

    Returns:
      A functional `keras.Model` mapping uint8 images [B, H, W, C] (0..255) to L2-normalised
      embeddings [B, embedding_dim] (the module's encoder contract).

    Raises:
      InputError: unknown name or non-positive embedding size.
    """
    if name not in ENCODERS:
        raise InputError(f"unknown encoder {name!r}; known: {', '.join(ENCODERS)}")
    if embedding_dim < 1:
        raise InputError(f"embedding_dim must be >= 1, got {embedding_dim}")
    return ENCODERS[name](tuple(input_shape), embedding_dim)
