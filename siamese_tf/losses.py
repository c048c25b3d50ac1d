"""Metric-learning losses: drop-in successors of `tfa.losses`, the PML pair losses, ArcFace.

This module holds the Keras loss classes and is the public namespace of every loss function:
the triplet losses' functional forms are defined in `siamese_tf.triplet_losses`, those of
`MultiSimilarityLoss`, `CircleLoss`, `SupConLoss` (cosine similarity, the values of
pytorch-metric-learning 2.x's losses of the same names with their default reducers) and the
proxy loss `ArcFaceLoss` in `siamese_tf.proxy_losses`; all are importable from here. The
rest of this docstring is about the TFA successors.

`ContrastiveLoss`, `TripletSemiHardLoss` and `TripletHardLoss` take the constructor arguments,
the call convention (`loss(y_true=labels [B] or [B, 1], y_pred=embeddings [B, D])`; for the
contrastive loss `y_true` = 1 for similar pairs and `y_pred` = pair distances [B]) and give the
values of the TensorFlow Addons losses of the same names (to float32 round-off).
`TripletBatchAllLoss` adds batch-all mining (mean over active triplets) and a soft margin.

Mining (see `siamese_tf.mining`) never builds a B³ tensor: semi-hard and batch-all mining take
O(B²) memory and at most O(B² log B) time (O(B²·K) for the small classes K of P×K batches),
where TFA tiled the distance matrix B times.

Distributed training: the `keras.losses.Loss` classes follow Keras' own convention — under a
strategy with R replicas in sync, the value is multiplied by 1/R (gradients are then summed
across replicas), outside a strategy it is not scaled; a train step un-scales for its loss
tracker as Keras' does. The functional forms are never scaled. For cross-replica mining, the
`*_loss_terms` functions score only a replica's own anchors (`anchor_indices`) against the
whole (all-gathered) batch and return `(loss_sum, count)`; summing both across replicas and
dividing gives the full-batch value.

Deliberate differences from TFA (wherever TFA's value is finite, ours is equal):

* Degenerate batches — no positive pair (every label distinct) or no negative (a single class):
  the gradient is zero (mining has nothing to contrast). The value is TFA's where TFA's is
  finite (e.g. hard loss with no positive pair: mean of max(margin - d(a, nearest n), 0);
  semi-hard or hard loss with a single class: TFA's margin-based value), and 0 where TFA
  gives NaN (semi-hard loss with no positive pair: TFA divides 0 by 0).
* Returned dtype: float32 (float64 for float64 embeddings). TFA cast the loss back to
  float16/bfloat16 for half-precision embeddings; both compute in float32.
* `"angular"` distances are clamped at 0 and the self-distance is exactly 0 (TFA clamped at
  1e-16 and left the diagonal at round-off); values differ by < 1e-6.
* Distances of duplicate embeddings have a zero (not NaN/inf) gradient.
* The soft margin is a stable softplus: TFA's `log1p(exp(x))` overflowed to inf for gaps above
  ~88 (possible with unnormalised squared-L2 distances); values are otherwise equal.
* The `keras.losses.Loss` classes scale by 1/replicas under a strategy (Keras 3 convention;
  TFA's wrappers used `Reduction.NONE` and were never scaled).
* `sample_weight` is rejected by the triplet losses (a mined loss is not a per-example sum;
  TFA multiplied the scalar by the weights and returned a vector).
* Exact ties (e.g. duplicate embeddings): the gradient goes to one of the tied negatives or
  hardest pairs; TFA's masked minimum/maximum split it among them. Values are equal.
* The functions are not wrapped in `tf.function` (TFA's were); they trace into the caller's.

Labels are compared in their own dtype, as TFA did: the triplet loss classes do not let
`keras.losses.Loss` cast them to float32, which would merge integer labels above 2**24.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from siamese_tf import distances as distances_lib
from siamese_tf.proxy_losses import (  # noqa: F401  (re-exported: the public namespace)
    ARCFACE_VARIANTS,
    arcface_loss,
    arcface_mean_loss,
    margin_cosines,
)
from siamese_tf.similarity_losses import (  # noqa: F401  (re-exported: the public namespace)
    circle_loss,
    circle_loss_terms,
    multi_similarity_loss,
    multi_similarity_loss_terms,
    supcon_loss,
    supcon_loss_terms,
)
from siamese_tf.triplet_losses import (  # noqa: F401  (re-exported: the public namespace)
    batch_all_loss_terms,
    hard_loss_terms,
    semihard_loss_terms,
    triplet_batch_all_loss,
    triplet_hard_loss,
    triplet_semihard_loss,
)


def contrastive_loss(y_true, y_pred, margin=1.0):
    """Per-pair contrastive loss (Hadsell, Chopra & LeCun 2006), as `tfa.losses.contrastive_loss`.

    `y * d² + (1 - y) * max(margin - d, 0)²`.

    Args:
      y_true: [B] (or [B, 1]) 1 for similar pairs, 0 for dissimilar.
      y_pred: [B] (or [B, 1]) distances of the pairs.
      margin: distance dissimilar pairs are pushed beyond.

    Returns:
      float [B] per-pair losses (not reduced, not scaled).
    """
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.dtype in (tf.float16, tf.bfloat16) or not y_pred.dtype.is_floating:
        y_pred = tf.cast(y_pred, tf.float32)
    y_pred = tf.reshape(y_pred, [-1])
    y_true = tf.cast(tf.reshape(y_true, [-1]), y_pred.dtype)
    return y_true * tf.square(y_pred) + (1.0 - y_true) * tf.square(tf.maximum(margin - y_pred, 0.0))


def _scale_for_replicas(value):
    """Keras 3's `scale_loss_for_distribution`: times 1/replicas under a multi-replica strategy."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if replicas > 1:
        value = value * tf.cast(1.0 / replicas, value.dtype)
    return value


def _serialize_metric(metric):
    if callable(metric):
        return keras.saving.serialize_keras_object(metric)
    return metric


def _deserialize_metric(metric):
    if isinstance(metric, dict):
        return keras.saving.deserialize_keras_object(metric)
    return metric


class BatchLoss(keras.losses.Loss):
    """Base of the losses defined over a whole labelled batch (triplet, pair-based).

    Labels keep their dtype, embeddings go to the loss dtype, the value is scaled by 1/replicas
    under a strategy, `sample_weight` is refused. Subclasses define `terms(y_true, y_pred,
    anchor_indices)` -> `(loss_sum, count)` (the loss is their ratio), which `SiameseModel` uses
    to score some anchors of a larger (all-gathered, or memory-extended) batch: a loss of your
    own that subclasses this works with `cross_replica_mining` and `cross_batch_memory`.
    """

    def __init__(self, name=None, **kwargs):
        # TFA accepted and ignored extra kwargs (e.g. `reduction`); so do we. A mined loss is
        # one scalar per batch, so the reduction never applies.
        kwargs.pop("reduction", None)
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)

    def terms(self, y_true, y_pred, anchor_indices=None):
        """`(loss_sum, count)` of the anchors `anchor_indices` (default: all) of the batch."""
        raise NotImplementedError

    def call(self, y_true, y_pred):
        loss_sum, count = self.terms(y_true, y_pred)
        return tf.math.divide_no_nan(loss_sum, count)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} does not take sample_weight: a mined batch loss is "
                "defined over the whole batch, not as a sum of per-example terms"
            )
        with tf.name_scope(self.name):
            # Labels keep their dtype (Keras would cast them to float32); embeddings go to the
            # loss dtype (float32 unless set), as in keras.losses.Loss.
            y_true = tf.convert_to_tensor(y_true)
            y_pred = tf.convert_to_tensor(y_pred)
            if y_pred.dtype != self.dtype:
                y_pred = tf.cast(y_pred, self.dtype)
            return _scale_for_replicas(self.call(y_true, y_pred))

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        return config


class TripletLoss(BatchLoss):
    """Base of the triplet losses: a margin and a distance metric, which `SiameseModel` reads."""

    def __init__(self, margin=1.0, distance_metric="L2", name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        distances_lib.check_metric(distance_metric)
        self.margin = float(margin)
        self.distance_metric = distance_metric

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, distance_metric=_serialize_metric(self.distance_metric))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["distance_metric"] = _deserialize_metric(config.get("distance_metric", "L2"))
        return cls(**config)


@keras.saving.register_keras_serializable(package="siamese_tf")
class TripletSemiHardLoss(TripletLoss):
    """Triplet loss with semi-hard negative mining (drop-in for `tfa.losses.TripletSemiHardLoss`).

    `loss(y_true=labels [B] or [B, 1], y_pred=embeddings [B, D])`; see `triplet_semihard_loss`.
    Scaled by 1/replicas under a multi-replica strategy, like every Keras loss.

    Args:
      margin: margin term. Default 1.0.
      distance_metric: "L2", "squared-L2", "angular" or a callable. Default "L2".
      name: optional name.
      **kwargs: `dtype` of the loss computation; anything else TFA accepted is ignored.
    """

    def terms(self, y_true, y_pred, anchor_indices=None):
        return semihard_loss_terms(
            y_true, y_pred, self.margin, self.distance_metric, anchor_indices
        )


class _SoftTripletLoss(TripletLoss):
    def __init__(self, margin=1.0, soft=False, distance_metric="L2", name=None, **kwargs):
        super().__init__(margin=margin, distance_metric=distance_metric, name=name, **kwargs)
        self.soft = bool(soft)

    def get_config(self):
        config = super().get_config()
        config.update(soft=self.soft)
        return config


@keras.saving.register_keras_serializable(package="siamese_tf")
class TripletHardLoss(_SoftTripletLoss):
    """Batch-hard triplet loss (drop-in for `tfa.losses.TripletHardLoss`).

    `loss(y_true=labels, y_pred=embeddings)`; see `triplet_hard_loss`.

    Args:
      margin: margin term. Default 1.0.
      soft: soft-margin variant. Default False.
      distance_metric: "L2", "squared-L2", "angular" or a callable. Default "L2".
      name: optional name.
      **kwargs: `dtype`; anything else TFA accepted is ignored.
    """

    def terms(self, y_true, y_pred, anchor_indices=None):
        return hard_loss_terms(
            y_true, y_pred, self.margin, self.soft, self.distance_metric, anchor_indices
        )


@keras.saving.register_keras_serializable(package="siamese_tf")
class TripletBatchAllLoss(_SoftTripletLoss):
    """Batch-all triplet loss: mean over active triplets; see `triplet_batch_all_loss`.

    Args:
      margin: margin term. Default 1.0.
      soft: soft-margin variant (mean over all valid triplets). Default False.
      distance_metric: "L2", "squared-L2", "angular" or a callable. Default "L2".
      name: optional name.
      **kwargs: `dtype`.
    """

    def terms(self, y_true, y_pred, anchor_indices=None):
        return batch_all_loss_terms(
            y_true, y_pred, self.margin, self.soft, self.distance_metric, anchor_indices
        )


@keras.saving.register_keras_serializable(package="siamese_tf")
class ContrastiveLoss(keras.losses.Loss):
    """Contrastive loss of pair distances (drop-in for `tfa.losses.ContrastiveLoss`).

    `loss(y_true=same [B], y_pred=distances [B])`: mean over pairs of
    `y * d² + (1 - y) * max(margin - d, 0)²`, reduced and scaled like any Keras loss.

    Args:
      margin: margin term. Default 1.0.
      reduction: Keras reduction. Default "sum_over_batch_size".
      name: optional name.
      **kwargs: passed to `keras.losses.Loss` (e.g. `dtype`).
    """

    def __init__(
        self, margin=1.0, reduction="sum_over_batch_size", name="contrastive_loss", **kwargs
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        return contrastive_loss(y_true, y_pred, self.margin)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin)
        return config


# --- cosine-similarity losses (pytorch-metric-learning 2.x definitions) -------------------------


def _check_positive(name, value):
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


@keras.saving.register_keras_serializable(package="siamese_tf")
class MultiSimilarityLoss(BatchLoss):
    """Multi-similarity loss (Wang et al. 2019), equal to PML 2.x's `MultiSimilarityLoss`.

    `loss(y_true=labels [B] or [B, 1], y_pred=embeddings [B, D])`: cosine similarities of the
    embeddings (normalised here), mean over all anchors; see `multi_similarity_loss`. Scaled by
    1/replicas under a multi-replica strategy, like every Keras loss.

    Args:
      alpha: weight of the positive term (> 0). Default 2.
      beta: weight of the negative term (> 0). Default 50.
      base: the similarity margin lambda. Default 0.5.
      name: optional name.
      **kwargs: `dtype`.

    Raises:
      ValueError: alpha or beta not > 0.
    """

    def __init__(self, alpha=2.0, beta=50.0, base=0.5, name="multi_similarity_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_positive("alpha", alpha)
        _check_positive("beta", beta)
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)

    def terms(self, y_true, y_pred, anchor_indices=None):
        return multi_similarity_loss_terms(
            y_true, y_pred, self.alpha, self.beta, self.base, anchor_indices
        )

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, beta=self.beta, base=self.base)
        return config


@keras.saving.register_keras_serializable(package="siamese_tf")
class CircleLoss(BatchLoss):
    """Circle loss (Sun et al. 2020) on cosine similarities, equal to PML 2.x's `CircleLoss`.

    `loss(y_true=labels, y_pred=embeddings)`: mean over the anchors with a non-zero loss; see
    `circle_loss`.

    Args:
      m: relaxation margin, in [0, 1). Default 0.4.
      gamma: scale (> 0). Default 80.
      name: optional name.
      **kwargs: `dtype`.

    Raises:
      ValueError: m outside [0, 1) or gamma not > 0.
    """

    def __init__(self, m=0.4, gamma=80.0, name="circle_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= m < 1.0:
            raise ValueError(f"m must be in [0, 1), got {m}")
        _check_positive("gamma", gamma)
        self.m, self.gamma = float(m), float(gamma)

    def terms(self, y_true, y_pred, anchor_indices=None):
        return circle_loss_terms(y_true, y_pred, self.m, self.gamma, anchor_indices)

    def get_config(self):
        config = super().get_config()
        config.update(m=self.m, gamma=self.gamma)
        return config


@keras.saving.register_keras_serializable(package="siamese_tf")
class SupConLoss(BatchLoss):
    """Supervised contrastive loss (Khosla et al. 2020), equal to PML 2.x's `SupConLoss`.

    `loss(y_true=labels, y_pred=embeddings)`: mean over the anchors with a non-zero loss; see
    `supcon_loss`. With two augmented views of each example as the only same-label pairs it
    is NT-Xent (SimCLR).

    Args:
      temperature: softmax temperature (> 0). Default 0.1.
      name: optional name.
      **kwargs: `dtype`.

    Raises:
      ValueError: temperature not > 0.
    """

    def __init__(self, temperature=0.1, name="supcon_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        _check_positive("temperature", temperature)
        self.temperature = float(temperature)

    def terms(self, y_true, y_pred, anchor_indices=None):
        return supcon_loss_terms(y_true, y_pred, self.temperature, anchor_indices)

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature)
        return config


@keras.saving.register_keras_serializable(package="siamese_tf")
class ArcFaceLoss(keras.losses.Loss):
    """ArcFace (additive angular margin) or CosFace (additive cosine margin) softmax loss.

    `loss(y_true=class indices [B], y_pred=cosines [B, C])`, the cosines being those of the
    embeddings to learned class proxies (`siamese_tf.heads.ClassProxies`; `SiameseModel(...,
    proxies=ClassProxies(C))` feeds them); see `arcface_loss`. Mean over the batch, computed
    in float32, scaled by 1/replicas under a strategy like any Keras loss. Trains on ordinary
    `(images, labels)` batches: no P×K structure is needed.

    Args:
      margin: additive angular margin in radians for "arcface" (in [0, pi/2), default 0.5);
        additive cosine margin for "cosface" (in [0, 1); CosFace used 0.35).
      scale: the logit scale s (> 0). Default 64.
      variant: "arcface" or "cosface".
      reduction: Keras reduction. Default "sum_over_batch_size".
      name: optional name.
      **kwargs: passed to `keras.losses.Loss` (e.g. `dtype`).

    Raises:
      ValueError: unknown variant, margin out of range or scale not > 0.
    """

    def __init__(
        self,
        margin=0.5,
        scale=64.0,
        variant="arcface",
        reduction="sum_over_batch_size",
        name="arcface_loss",
        **kwargs,
    ):
        super().__init__(name=name, reduction=reduction, **kwargs)
        if variant not in ARCFACE_VARIANTS:
            raise ValueError(
                f"unknown variant {variant!r}; use one of {', '.join(ARCFACE_VARIANTS)}"
            )
        limit = math.pi / 2 if variant == "arcface" else 1.0
        if not 0.0 <= margin < limit:
            raise ValueError(f"{variant} margin must be in [0, {limit:.4g}), got {margin}")
        _check_positive("scale", scale)
        self.margin, self.scale, self.variant = float(margin), float(scale), variant

    def call(self, y_true, y_pred):
        return arcface_loss(y_true, y_pred, self.margin, self.scale, self.variant)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # The mean without weights or mask, Keras's default, takes the one-pass path (its
        # reduction around `call` is a dozen small ops; labels also stay integers instead of
        # going through float32). Anything else goes through Keras.
        plain = sample_weight is None and getattr(y_pred, "_keras_mask", None) is None
        if not plain or self.reduction != "sum_over_batch_size":
            return super().__call__(y_true, y_pred, sample_weight)
        with tf.name_scope(self.name):
            y_pred = tf.cast(tf.convert_to_tensor(y_pred), self.dtype)
            mean = arcface_mean_loss(y_true, y_pred, self.margin, self.scale, self.variant)
            return _scale_for_replicas(mean)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, scale=self.scale, variant=self.variant)
        return config
