"""Cross-batch memory (XBM, Wang et al. 2020): the last N embeddings and labels as model state.

Pair-based losses see only the B·(B-1) pairs of their batch; XBM keeps a queue of the embeddings
(and labels) of the last N training examples and scores the batch against it too, so each step
mines among B·(B + N) pairs for the cost of one encoder pass. Embeddings drift slowly once
training has warmed up ("slow drift"), which is what makes the stored embeddings of earlier
steps useful negatives and positives.

`CrossBatchMemory` is a Keras layer of non-trainable variables (a ring buffer and a counter):
`SiameseModel(..., cross_batch_memory=N)` owns one, reads it in every step (without gradient),
and enqueues the step's batch after the loss is computed. Being model weights, the queue is in
every checkpoint and backup, so a resumed job continues with exactly the memory it had. Under a
multi-replica strategy every replica enqueues the same all-gathered global batch (the variables
aggregate as "only first replica"), so the queue holds each example once and stays identical on
all replicas.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="siamese_tf")
class CrossBatchMemory(keras.layers.Layer):
    """A queue of the last `size` embeddings and their integer labels.

    Build with the embedding shape `(None, D)`; `read()` returns what is stored (fewer than
    `size` rows until the queue has filled), `enqueue(embeddings, labels)` adds a batch,
    overwriting the oldest rows. Not called as a layer: the model calls these methods.

    Args:
      size: N, the number of embeddings kept (>= 1).
      **kwargs: passed to `keras.layers.Layer`.

    Raises:
      ValueError: size < 1.
    """

    def __init__(self, size, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if int(size) < 1:
            raise ValueError(f"cross-batch memory size must be >= 1, got {size}")
        self.size = int(size)

    def build(self, input_shape):
        def state(name, shape, dtype):
            # Written by every replica with the same value (the gathered global batch): keep
            # the first replica's write.
            return self.add_weight(
                name=name,
                shape=shape,
                dtype=dtype,
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
            )

        self.embeddings = state("embeddings", (self.size, int(input_shape[-1])), "float32")
        self.labels = state("labels", (self.size,), "int64")
        # Examples ever enqueued: the write position and how full the queue is.
        self.count = state("count", (), "int64")
        self.built = True

    def call(self, inputs):
        return inputs

    def read(self):
        """`(embeddings [M, D] float32, labels [M] int64)` stored now, M = min(count, size).

        Without gradient. Runs per replica.
        """
        filled = tf.cast(tf.minimum(self.count, self.size), tf.int32)
        embeddings = tf.convert_to_tensor(self.embeddings)[:filled]
        labels = tf.convert_to_tensor(self.labels)[:filled]
        return tf.stop_gradient(embeddings), labels

    def enqueue(self, embeddings, labels):
        """Adds a batch (the last `size` rows when it is larger). Runs per replica.

        Args:
          embeddings: [B, D] float (cast to float32, no gradient).
          labels: [B] (or [B, 1]) integer labels (cast to int64).
        """
        embeddings = tf.stop_gradient(tf.cast(embeddings, tf.float32))
        labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
        batch = tf.shape(embeddings)[0]
        keep = tf.minimum(batch, self.size)
        embeddings, labels = embeddings[batch - keep :], labels[batch - keep :]
        start = self.count + tf.cast(batch - keep, tf.int64)
        positions = tf.math.floormod(start + tf.range(tf.cast(keep, tf.int64)), self.size)
        positions = positions[:, None]
        self.embeddings.assign(
            tf.tensor_scatter_nd_update(
                tf.convert_to_tensor(self.embeddings), positions, embeddings
            )
        )
        self.labels.assign(
            tf.tensor_scatter_nd_update(tf.convert_to_tensor(self.labels), positions, labels)
        )
        self.count.assign_add(tf.cast(batch, tf.int64))

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size)
        return config
