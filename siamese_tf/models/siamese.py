"""`SiameseModel`: a `keras.Model` subclass that trains an encoder on P×K or pair batches."""

from __future__ import annotations

import logging

import keras
import tensorflow as tf

from siamese_tf import compat, mining
from siamese_tf import losses as losses_lib
from siamese_tf.distances import pair_distances
from siamese_tf.memory import CrossBatchMemory
from siamese_tf.threshold import UNCALIBRATED, same

log = logging.getLogger(__name__)


def loss_settings(loss) -> dict:
    """The settings of `SiameseModel` a compiled loss already holds, by constructor name.

    A triplet loss mines with a distance metric and a margin: the model measures pair distances
    (verification, the threshold) with that metric and reports the active-triplet fraction at
    that margin. A `ContrastiveLoss` holds a margin but no metric (the model computes the
    distances it scores). Other losses hold neither.

    Args:
      loss: the compiled loss (any object; None before `compile`).

    Returns:
      A subset of {"distance_metric": str, "stats_margin": float}.
    """
    settings = {}
    if isinstance(loss, (losses_lib.TripletLoss, losses_lib.ContrastiveLoss)):
        settings["stats_margin"] = float(loss.margin)
    metric = getattr(loss, "distance_metric", None)
    if isinstance(loss, losses_lib.TripletLoss) and isinstance(metric, str):
        settings["distance_metric"] = metric  # A callable metric scores [B, B], not pairs.
    return settings


@keras.saving.register_keras_serializable(package="siamese_tf")
class SiameseModel(compat.BuildOnce, keras.Model):
    """Siamese / metric-learning model around an encoder.

    `model(images)` returns embeddings. `fit` accepts two batch layouts:

    * P×K batches `(images, labels)`: the compiled loss gets `(labels, embeddings)` — the triplet
      and pair-based losses of `siamese_tf.losses` mine inside the batch; with class `proxies`
      (ArcFace / CosFace) it gets `(labels, cosines to the proxies)`, and any labelled batch
      will do (no P×K structure needed);
    * pair batches `((images_a, images_b), same)`: both sides are embedded in one call of the
      encoder (one forward pass, consistent batch-norm statistics); the compiled loss gets
      `(same, distances)` (e.g. `ContrastiveLoss`), or `(same, probabilities)` when a pair `head`
      is given (binary cross-entropy).

    The `threshold` variable holds the calibrated distance threshold (a pair is "same" when its
    distance is <= threshold); callbacks set it, it is saved and exported with the model, and it
    is `UNCALIBRATED` (-1) until set.

    The encoder contract (what `build_encoder` gives, and what your own encoder must do):
    images in as the samplers give them, uint8 [B, H, W, C] with values 0..255 (so the encoder
    rescales them itself, e.g. `keras.layers.Rescaling(1 / 255)` first); embeddings out,
    float [B, D], L2-normalised (e.g. `keras.layers.UnitNormalization()` last), so distances
    lie in [0, 2] and a loss margin means the same on any data.

    Args:
      encoder: a Keras model mapping uint8 images [B, H, W, C] to L2-normalised embeddings
        [B, D] (the contract above).
      head: optional pair head `head([emb_a, emb_b]) -> probability same`.
      distance_metric: "L2", "squared-L2" or "angular": the distance of pairs (pair losses,
        verification, the threshold). None: the compiled loss's (a triplet loss's
        `distance_metric`, so it is given once), else "L2".
      stats_margin: margin of the reported active-triplet fraction. None: the compiled loss's
        margin (triplet or contrastive), else 1.0.
      cross_replica_mining: with a batch loss (triplet or pair-based, `siamese_tf.losses`)
        under a multi-replica strategy, all-gather embeddings and labels so every replica mines
        over the global batch, scoring its own anchors; the step then equals one replica
        training on the global batch. Without it each replica mines within its own P×K share
        (cheaper, no extra communication). A per-example loss (ArcFace) needs no gathering:
        its replica means already add up to the global-batch value.
      proxies: optional `siamese_tf.heads.ClassProxies` for ArcFace / CosFace (compile with
        `ArcFaceLoss`): trained and checkpointed with the model, never part of `model(images)`.
      cross_batch_memory: N > 0 keeps the last N training embeddings and labels
        (`siamese_tf.memory.CrossBatchMemory`, saved with the model) and scores every batch
        against them too (XBM); needs a batch loss. 0: off.
      **kwargs: passed to `keras.Model`.
    """

    def __init__(
        self,
        encoder,
        head=None,
        distance_metric=None,
        stats_margin=None,
        cross_replica_mining=False,
        proxies=None,
        cross_batch_memory=0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.cross_replica_mining = bool(cross_replica_mining)
        self.encoder = encoder
        self.head = head
        self.proxies = proxies
        self.cross_batch_memory = int(cross_batch_memory)
        self.memory = CrossBatchMemory(self.cross_batch_memory) if cross_batch_memory else None
        # Kept as given: None means "the compiled loss's" (see the properties below).
        self._distance_metric = distance_metric
        self._stats_margin = None if stats_margin is None else float(stats_margin)
        self.threshold = self.add_weight(
            name="threshold",
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(UNCALIBRATED),
            trainable=False,
        )
        self.positive_distance_tracker = keras.metrics.Mean(name="positive_distance")
        self.negative_distance_tracker = keras.metrics.Mean(name="negative_distance")
        self.active_fraction_tracker = keras.metrics.Mean(name="active_triplet_fraction")
        # Counts steps whose loss or gradients were NaN/inf: a NaN input can leave the loss
        # finite (masked out of mining) while the gradients poison the weights.
        self.nonfinite_tracker = keras.metrics.Sum(name="nonfinite_steps")

    @property
    def distance_metric(self) -> str:
        """The pair distance: as given, else the compiled loss's, else "L2"."""
        if self._distance_metric is not None:
            return self._distance_metric
        return loss_settings(getattr(self, "loss", None)).get("distance_metric", "L2")

    @property
    def stats_margin(self) -> float:
        """The margin of the active-triplet fraction: as given, else the loss's, else 1.0."""
        if self._stats_margin is not None:
            return self._stats_margin
        return loss_settings(getattr(self, "loss", None)).get("stats_margin", 1.0)

    def call(self, inputs, training=None):
        """Embeds a batch of images; given a pair batch `(images_a, images_b)`, scores it.

        Runs per replica. The pair form returns what a pair loss takes as `y_pred` (the
        distances, or the head's "same" probability), so Keras can build the compiled loss
        from `model(x)` whatever the batch kind.
        """
        if isinstance(inputs, (tuple, list)):
            return self._pair_outputs(*inputs, training=training)[0]
        return self.encoder(inputs, training=training)

    def _pair_outputs(self, images_a, images_b, training=None):
        """`(y_pred, distances)` of a pair batch: one encoder pass over both sides."""
        emb = self.encoder(tf.concat([images_a, images_b], axis=0), training=training)
        emb_a, emb_b = tf.split(emb, 2, axis=0)
        distances = pair_distances(emb_a, emb_b, self.distance_metric)
        if self.head is None:
            return distances, distances
        return self.head([emb_a, emb_b], training=training), distances

    def build(self, input_shape):
        """Builds the encoder (already built when functional) and the head."""
        if not self.encoder.built:
            self.encoder.build(input_shape)
        dim = self.encoder.output_shape[-1]
        if self.head is not None and not self.head.built:
            self.head.build([(None, dim), (None, dim)])
        for layer in (self.proxies, self.memory):
            if layer is not None and not layer.built:
                layer.build((None, dim))
        self.built = True

    def pair_distances(self, emb_a, emb_b):
        """Distance of each pair (for a head model: 1 - probability of "same")."""
        if self.head is not None:
            return 1.0 - tf.reshape(tf.cast(self.head([emb_a, emb_b]), tf.float32), [-1])
        return pair_distances(emb_a, emb_b, self.distance_metric)

    def verify(self, images_a, images_b):
        """Returns `(distances, same)` for pairs of images, with the calibrated threshold."""
        emb = self(tf.concat([images_a, images_b], axis=0), training=False)
        emb_a, emb_b = tf.split(emb, 2, axis=0)
        distances = self.pair_distances(emb_a, emb_b)
        return distances, same(distances, self.threshold)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`; a (distributed) dataset is not shuffled: the samplers draw each batch.

        Keras' default `shuffle=True` does nothing for a dataset but warn that it is ignored;
        a dataset from `pk_batches` or `balanced_pairs` is already a random draw per step.
        """
        datasets = (tf.data.Dataset, tf.distribute.DistributedDataset)
        if isinstance(x, datasets) and len(args) < 7:  # `shuffle` not given by position
            kwargs.setdefault("shuffle", False)
        return super().fit(x, y, *args, **kwargs)

    # --- training -----------------------------------------------------------------------------

    def _forward(self, data, training):
        """Loss and statistics of one batch. Runs per replica.

        Returns:
          (loss, stats, batch_size): the compiled loss exactly as Keras computes it (already
          scaled by 1/replicas under a strategy), and float32 statistics without gradient.
        """
        x, y = data[0], data[1]
        if isinstance(x, (tuple, list)):
            self._check_batch_kind(pairs=True)
            images_a, images_b = x
            y_pred, distances = self._pair_outputs(images_a, images_b, training=training)
            loss = self.compute_loss(x=x, y=y, y_pred=y_pred, training=training)
            distances = tf.stop_gradient(distances)
            stats = _pair_statistics(distances, tf.cast(tf.reshape(y, [-1]), tf.float32))
            batch_size = tf.shape(images_a)[0]
        else:
            self._check_batch_kind(pairs=False)
            emb = self(x, training=training)
            if self.proxies is not None:
                cosines = self.proxies(emb, training=training)
                loss = self.compute_loss(x=x, y=y, y_pred=cosines, training=training)
            elif self.memory is not None or (self.cross_replica_mining and _replicas() > 1):
                loss = self._batch_loss(tf.reshape(y, [-1]), emb, training)
            else:
                loss = self.compute_loss(x=x, y=y, y_pred=emb, training=training)
            stats = mining.batch_statistics(
                tf.reshape(y, [-1]), tf.stop_gradient(emb), self.stats_margin, self.distance_metric
            )
            batch_size = tf.shape(x)[0]
        return loss, stats, batch_size

    def _check_batch_kind(self, pairs):
        """Refuses (at trace time) a batch layout the compiled loss cannot score.

        Also warns when the model was given a distance metric other than its loss's: pairs
        would be verified by another distance than training mines with. A warning, not an
        error, and only when training or testing: models saved that way keep loading.
        (`compile` is not overridden for this: Keras would then skip compiling on load.)
        """
        loss = getattr(self, "loss", None)
        held = loss_settings(loss).get("distance_metric")
        if held is not None and self._distance_metric not in (None, held):
            log.warning(
                "SiameseModel(distance_metric=%r) differs from its loss's %r: pairs are "
                "verified with %r; leave distance_metric unset to use the loss's",
                self._distance_metric,
                held,
                self._distance_metric,
            )
        batch_loss = isinstance(loss, losses_lib.BatchLoss)
        proxy_loss = isinstance(loss, losses_lib.ArcFaceLoss) or self.proxies is not None
        if pairs and (batch_loss or proxy_loss or self.memory is not None):
            raise ValueError(
                f"{type(loss).__name__} (or class proxies / cross-batch memory) needs labelled "
                "batches (images, labels), e.g. P×K batches; got a pair batch ((a, b), same)"
            )
        if not pairs and (self.head is not None or isinstance(loss, losses_lib.ContrastiveLoss)):
            raise ValueError(
                f"{type(loss).__name__} (or a pair head) scores pair batches ((a, b), same); got "
                "a labelled batch (images, labels)"
            )
        if not pairs and self.proxies is None and isinstance(loss, losses_lib.ArcFaceLoss):
            raise ValueError("ArcFaceLoss needs class proxies: SiameseModel(..., proxies=...)")
        if self.memory is not None and not batch_loss:
            raise ValueError(
                f"cross_batch_memory needs a batch loss (triplet or pair-based), got "
                f"{type(loss).__name__}"
            )

    def _batch_loss(self, labels, embeddings, training):
        """This replica's share of a batch loss over more than its own batch. Runs per replica.

        With cross-replica mining every replica gathers all embeddings and labels (the gather
        is differentiable: its gradient returns each replica its slice), scores only its own
        anchors against the global batch, and divides by the global count of loss terms. The
        shares sum to the full-batch loss, so summing gradients across replicas (as the
        optimizer does) gives the gradient of one replica training on the whole batch; like a
        Keras loss under a strategy, the share is already "scaled" and is not divided again.

        With a cross-batch memory the stored embeddings (no gradient) are appended to the
        batch the anchors are scored against, then the batch is enqueued (in training steps
        only): under several replicas the all-gathered global batch, the same on every replica,
        so the memory holds each example once.
        """
        loss_fn = self.loss
        if not isinstance(loss_fn, losses_lib.BatchLoss):
            raise ValueError(
                "cross_replica_mining / cross_batch_memory need a siamese_tf batch loss "
                f"(triplet or pair-based), got {type(loss_fn).__name__}"
            )
        replicas = _replicas()
        local = tf.shape(embeddings)[0]
        cross_replica = self.cross_replica_mining and replicas > 1
        if replicas > 1:
            context = tf.distribute.get_replica_context()
            all_embeddings = context.all_gather(embeddings, axis=0)
            all_labels = context.all_gather(labels, axis=0)
        else:
            all_embeddings, all_labels = embeddings, labels
        if cross_replica:
            ref_embeddings, ref_labels = all_embeddings, all_labels
            anchors = context.replica_id_in_sync_group * local + tf.range(local)
        else:
            ref_embeddings, ref_labels = embeddings, labels
            anchors = tf.range(local)
        if self.memory is not None:
            stored, stored_labels = self.memory.read()
            ref_embeddings = tf.concat([tf.cast(ref_embeddings, stored.dtype), stored], axis=0)
            ref_labels = tf.concat([ref_labels, tf.cast(stored_labels, ref_labels.dtype)], axis=0)
        loss_sum, count = loss_fn.terms(ref_labels, ref_embeddings, anchors)
        if cross_replica:
            total = context.all_reduce("sum", tf.stop_gradient(count))
            loss = tf.math.divide_no_nan(loss_sum, total)
        else:
            loss = tf.math.divide_no_nan(loss_sum, count) / tf.cast(replicas, loss_sum.dtype)
        if self.memory is not None and training:
            self.memory.enqueue(all_embeddings, all_labels)
        return loss

    def _update_metrics(self, loss, stats, batch_size):
        # Keras losses come back scaled by 1/replicas (see keras.losses.Loss); the loss tracker
        # must see the unscaled value, as Keras' own train_step does.
        replicas = _replicas()
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss * replicas, sample_weight=batch_size)
        self.positive_distance_tracker.update_state(stats["mean_positive_distance"])
        self.negative_distance_tracker.update_state(stats["mean_negative_distance"])
        if "active_triplet_fraction" in stats:
            self.active_fraction_tracker.update_state(stats["active_triplet_fraction"])
        results = {m.name: m.result() for m in self.metrics}
        if "active_triplet_fraction" not in stats:
            # Pair batches have no triplets: a constant 0 in their logs would only mislead.
            results.pop(self.active_fraction_tracker.name)
        if _is_multi_worker(tf.distribute.get_strategy()):
            # Keras reduces step outputs with strategy.reduce("MEAN", v, axis=0) under
            # MultiWorkerMirroredStrategy, which fails on scalars; metric results are already
            # synchronised, so a [1]-shaped copy reduces to the same value.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def prebuild(self, data_spec):
        """Builds model, compiled loss/metrics and optimizer from a per-replica element spec.

        Call inside `strategy.scope()` before `fit`. Keras would otherwise build from a real
        batch of the training iterator, losing it (see `siamese_tf.compat.BuildOnce`).

        Args:
          data_spec: the per-replica `element_spec` of the training dataset.
        """
        symbolic = tf.nest.map_structure(
            lambda spec: keras.KerasTensor(spec.shape, spec.dtype.name), data_spec
        )
        compat.symbolic_build(self, symbolic)

    def train_step(self, data):
        """One optimisation step. Runs per replica; gradients are summed across replicas."""
        with tf.GradientTape() as tape:
            loss, stats, batch_size = self._forward(data, training=True)
            # Mixed precision: LossScaleOptimizer scales, plain optimizers return the loss as is.
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_weights)
        finite = tf.logical_and(
            tf.math.is_finite(tf.cast(loss, tf.float32)),
            tf.math.is_finite(tf.cast(tf.linalg.global_norm(gradients), tf.float32)),
        )
        self.nonfinite_tracker.update_state(1.0 - tf.cast(finite, tf.float32))
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self._update_metrics(loss, stats, batch_size)

    def test_step(self, data):
        """Loss and statistics on one batch, no update. Runs per replica."""
        loss, stats, batch_size = self._forward(data, training=False)
        return self._update_metrics(loss, stats, batch_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            head=None if self.head is None else keras.saving.serialize_keras_object(self.head),
            distance_metric=self.distance_metric,
            stats_margin=self.stats_margin,
            cross_replica_mining=self.cross_replica_mining,
            proxies=None
            if self.proxies is None
            else keras.saving.serialize_keras_object(self.proxies),
            cross_batch_memory=self.cross_batch_memory,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        for name in ("head", "proxies"):
            if config.get(name) is not None:
                config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)


def _replicas() -> int:
    return tf.distribute.get_strategy().num_replicas_in_sync


def _is_multi_worker(strategy) -> bool:
    # Replicas on other workers: MultiWorkerMirroredStrategy has as many per worker.
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)
    )


def _pair_statistics(distances, same):
    """Mean positive and negative distance of a pair batch (0 when a side is absent)."""
    positive = tf.math.divide_no_nan(tf.reduce_sum(distances * same), tf.reduce_sum(same))
    negative = tf.math.divide_no_nan(
        tf.reduce_sum(distances * (1.0 - same)), tf.reduce_sum(1.0 - same)
    )
    return {"mean_positive_distance": positive, "mean_negative_distance": negative}
