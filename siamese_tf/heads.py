"""Pair heads: layers that turn two embeddings into a score for the pair."""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="siamese_tf")
class PairClassifierHead(keras.layers.Layer):
    """Probability that two embeddings show the same class: dense layers on `|a - b|`, sigmoid.

    With `keras.losses.BinaryCrossentropy` on `y_true = 1` for same pairs this is the "dense
    head with cross-entropy" Siamese variant (Koch et al. 2015 use an L1 feature like this one).
    `|a - b|` makes the score symmetric in the two inputs.

    Call as `head([a, b])` with [B, D] embeddings; returns float32 [B]
    probabilities. The output layer computes in float32, so the head is safe under a
    mixed-precision policy.

    Args:
      hidden_units: sizes of the hidden dense layers (may be empty: logistic regression on
        `|a - b|`).
      activation: activation of the hidden layers.
      dropout_rate: dropout after each hidden layer (training only).
      **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, hidden_units=(64,), activation="relu", dropout_rate=0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.dropout_rate = float(dropout_rate)
        self.hidden = [
            keras.layers.Dense(units, activation=activation, name=f"hidden_{i}")
            for i, units in enumerate(self.hidden_units)
        ]
        self.dropout = keras.layers.Dropout(self.dropout_rate) if self.dropout_rate else None
        self.output_layer = keras.layers.Dense(
            1, activation="sigmoid", dtype="float32", name="same"
        )

    def build(self, input_shape):
        dim = input_shape[0][-1]
        for layer in self.hidden:
            layer.build((None, dim))
            dim = layer.units
        self.output_layer.build((None, dim))
        self.built = True

    def call(self, inputs, training=None):
        a, b = inputs
        x = tf.abs(a - b)
        for layer in self.hidden:
            x = layer(x)
            if self.dropout is not None:
                x = self.dropout(x, training=training)
        return tf.reshape(self.output_layer(x), [-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden_units=list(self.hidden_units),
            activation=keras.activations.serialize(keras.activations.get(self.activation))
            if not isinstance(self.activation, str)
            else self.activation,
            dropout_rate=self.dropout_rate,
        )
        return config


@keras.saving.register_keras_serializable(package="siamese_tf")
class ClassProxies(keras.layers.Layer):
    """One learned direction per training class: `layer(embeddings)` -> cosines [B, C].

    The class-proxy layer of ArcFace / CosFace (`siamese_tf.losses.ArcFaceLoss`): a [D, C]
    weight whose columns, L2-normalised, are the class centres; the output is the cosine of
    each (L2-normalised) embedding to each centre, in float32 whatever the policy. Attach it
    with `SiameseModel(encoder, proxies=ClassProxies(C))`: the model then scores `(images,
    labels)` batches through it, trains it with the encoder and checkpoints it with the model,
    while `model(images)` (and everything exported) stays the embedding. Labels must be class
    indices in [0, C).

    Args:
      num_classes: C, the number of training classes (largest label + 1).
      initializer: initializer of the [D, C] weight.
      **kwargs: passed to `keras.layers.Layer`.
    """

    def __init__(self, num_classes, initializer="glorot_uniform", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.proxies = self.add_weight(
            name="proxies",
            shape=(int(input_shape[-1]), self.num_classes),
            initializer=self.initializer,
            trainable=True,
        )
        self.built = True

    def call(self, embeddings):
        embeddings = tf.math.l2_normalize(tf.cast(embeddings, self.compute_dtype), axis=-1)
        centres = tf.math.l2_normalize(tf.cast(self.proxies, self.compute_dtype), axis=0)
        return tf.matmul(embeddings, centres)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            initializer=keras.initializers.serialize(self.initializer),
        )
        return config
