"""SavedModel export: a serving module that needs TensorFlow only (no `siamese_tf`, no Keras).

`export_saved_model(model, path)` writes a `tf.saved_model` of a `tf.Module` with two
signatures, both taking raw uint8 images exactly as clients have them:

* `embed(images)` → `{"embeddings": float32 [B, D]}`;
* `verify(images_a, images_b)` → `{"distance": float32 [B], "same": bool [B]}`, "same" being
  `distance <= threshold` with the model's calibrated threshold baked in.

`images` are uint8 [B, H, W, C] of any height and width and C = 1 (gray), 3 (RGB) or 4 (RGBA):
inside the graph they are converted to the model's channels and, when their size differs from
the model's input size, resized with the bilinear, antialiased, rounded-to-uint8 resize the
training pipeline uses (`siamese_tf.data.images.resize_uint8`), so a client sends pixels and
needs no preprocessing code. The encoders rescale 0..255 themselves. The loaded object also has
`threshold` (a scalar variable) and `image_shape` (int32 [3], the model's H, W, C).

Only TensorFlow ops are saved: the Keras layers are traced into the signatures' graphs and
their variables are tracked as plain `tf.Variable`s, so `tf.saved_model.load(path)` works in a
process without `siamese_tf` (or Keras) importable.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from siamese_tf.data import images as images_lib
from siamese_tf.errors import InputError
from siamese_tf.threshold import is_calibrated, same

SIGNATURES = ("embed", "verify")


def _tf_variable(variable):
    """The backing `tf.Variable` of a Keras 3 variable (or the variable itself)."""
    return variable if isinstance(variable, tf.Variable) else variable.value


def model_image_shape(model) -> tuple[int, int, int]:
    """(H, W, C) of the images a built `SiameseModel` (or Keras image model) expects.

    Raises:
      InputError: the model's input shape is not a fully known (H, W, C).
    """
    encoder = getattr(model, "encoder", model)
    shape = tuple(encoder.input_shape[1:])
    if len(shape) != 3 or any(d is None for d in shape) or shape[2] not in (1, 3):
        raise InputError(f"the model's input shape {shape} is not a known (H, W, 1 or 3)")
    return tuple(int(d) for d in shape)


class ServingModule(tf.Module):
    """The exported module: preprocessing + the model's forward pass + the calibrated verify.

    Args:
      model: a built `SiameseModel` (with `pair_distances` and `threshold`).
      threshold: the distance threshold of `verify`; defaults to `model.threshold`.
    """

    def __init__(self, model, threshold: float | None = None):
        super().__init__(name="siamese_serving")
        # Bound methods, not the model: tf.Module would track a Keras model and pull Keras into
        # the SavedModel; its variables are tracked below as plain tf.Variables.
        self._encode = model.__call__
        self._pair_distances = model.pair_distances
        height, width, channels = model_image_shape(model)
        self._size = (height, width)
        self._channels = channels
        # Tracked as plain tf.Variables (Keras' own objects would pull Keras into the SavedModel).
        self.model_variables = [_tf_variable(v) for v in model.variables]
        if threshold is None:
            threshold = float(np.asarray(_tf_variable(model.threshold).numpy()))
        self.threshold = tf.Variable(
            float(threshold), trainable=False, dtype=tf.float32, name="threshold"
        )
        self.image_shape = tf.Variable(
            [height, width, channels], trainable=False, dtype=tf.int32, name="image_shape"
        )

    def _preprocess(self, images):
        """uint8 [B, h, w, c] (c = 1, 3 or 4) → uint8 [B, H, W, C] of the model. In the graph."""
        images = tf.convert_to_tensor(images, tf.uint8)
        tf.debugging.assert_rank(images, 4, message="images must be uint8 [batch, H, W, C]")
        images = images_lib.to_channels(images, self._channels)
        shape = tf.shape(images)
        same_size = tf.logical_and(
            tf.equal(shape[1], self._size[0]), tf.equal(shape[2], self._size[1])
        )
        images = tf.cond(
            same_size, lambda: images, lambda: images_lib.resize_uint8(images, self._size)
        )
        return tf.ensure_shape(images, (None, *self._size, self._channels))

    def _embed(self, images):
        return tf.cast(self._encode(self._preprocess(images), training=False), tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, None], tf.uint8, "images")])
    def embed(self, images):
        """Embeddings of raw uint8 images [B, H, W, C]: {"embeddings": float32 [B, D]}."""
        return {"embeddings": self._embed(images)}

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, None], tf.uint8, "images_a"),
            tf.TensorSpec([None, None, None, None], tf.uint8, "images_b"),
        ]
    )
    def verify(self, images_a, images_b):
        """Pair distances and same/different at the baked-in threshold.

        `images_a` and `images_b` hold B pairs each; their sizes may differ from each other.
        Returns {"distance": float32 [B], "same": bool [B]}.
        """
        emb_a, emb_b = self._embed(images_a), self._embed(images_b)
        distance = tf.reshape(tf.cast(self._pair_distances(emb_a, emb_b), tf.float32), [-1])
        return {"distance": distance, "same": same(distance, self.threshold)}


def export_saved_model(
    model, path: str, *, allow_uncalibrated: bool = False, overwrite: bool = False
) -> str:
    """Exports a model as a SavedModel with `embed` and `verify` signatures (module docstring).

    Written to a temporary folder beside `path` and moved into place, so `path` never holds a
    half-written export.

    Args:
      model: a built `SiameseModel`.
      path: the SavedModel folder to create.
      allow_uncalibrated: export even when `model.threshold` is still `UNCALIBRATED` (-1);
        `verify` then calls nothing "same".
      overwrite: replace an existing non-empty `path`.

    Returns:
      `path`.

    Raises:
      InputError: an uncalibrated model (without `allow_uncalibrated`), `path` is a file or a
        non-empty folder (without `overwrite`), or the model's input shape is not known.
    """
    threshold = float(np.asarray(_tf_variable(model.threshold).numpy()))
    if not is_calibrated(threshold) and not allow_uncalibrated:
        raise InputError(
            "the model is uncalibrated (threshold -1): verify would never say 'same'; calibrate "
            "it (train with a calibration split) or pass allow_uncalibrated (--allow_uncalibrated)"
        )
    path = os.path.abspath(path)
    if os.path.isfile(path):
        raise InputError(f"export path {path} is a file, not a folder")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise InputError(
            f"export path {path} exists and is not empty; choose another or pass overwrite "
            "(--overwrite)"
        )
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    module = ServingModule(model, threshold)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        tf.saved_model.save(
            module,
            tmp,
            signatures={
                "embed": module.embed.get_concrete_function(),
                "verify": module.verify.get_concrete_function(),
            },
        )
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return path
