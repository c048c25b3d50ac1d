"""Metric-learning losses: drop-in successors of `tfa.losses`, the PML pair losses, ArcFace.

`MultiSimilarityLoss`, `CircleLoss` and `SupConLoss` (cosine similarity, the values of
pytorch-metric-learning 2.x's losses of the same names with their default reducers) and the
proxy loss `ArcFaceLoss` are defined in `siamese_tf.similarity_losses`; their classes are here.
The rest of this docstring is about the TFA successors.

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
from siamese_tf import mining
from siamese_tf.similarity_losses import (  # noqa: F401  (re-exported: the public namespace)
    ARCFACE_VARIANTS,
    arcface_loss,
    circle_loss,
    circle_loss_terms,
    margin_cosines,
    multi_similarity_loss,
    multi_similarity_loss_terms,
    supcon_loss,
    supcon_loss_terms,
)


def _degenerate(labels):
    """True when the batch has no positive pair or no negative (zero-gradient case)."""
    labels = tf.reshape(labels, [-1])
    num_classes = tf.size(tf.unique(labels).y)
    return tf.logical_or(num_classes >= tf.size(labels), num_classes <= 1)


def _no_gradient_if(condition, value):
    # tf.where sends a zero gradient to the unselected branch, so `value` gets none when true.
    return tf.where(condition, tf.stop_gradient(value), value)


def _prepare(y_true, y_pred, distance_metric, anchor_indices):
    """What every triplet loss mines from: labels, distances, negatives and positive pairs.

    Returns:
      `(labels [B], pdist [A, B], negative [A, B] bool, valid [A, K] bool, positive_d [A, K])`:
      `positive_d[a, j]` is the distance of anchor a to its j-th positive where `valid`.
    """
    labels = tf.reshape(tf.convert_to_tensor(y_true), [-1])
    pdist = distances_lib.pairwise_distances(y_pred, distance_metric, anchor_indices)
    negative = mining.negative_mask(labels, anchor_indices)
    columns, valid = mining.positive_slots(labels, anchor_indices)
    return labels, pdist, negative, valid, mining.gather_rows(pdist, columns)


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


def semihard_loss_terms(y_true, y_pred, margin=1.0, distance_metric="L2", anchor_indices=None):
    """Sum and count of the semi-hard triplet loss terms of some anchors.

    For every positive pair (a, p) with `a` among the anchors: `max(margin + d(a, p) - d(a, n),
    0)` where `n` is the semi-hard negative (see `mining.semihard_negative_distances`).

    Args:
      y_true: [B] or [B, 1] labels of the whole batch.
      y_pred: [B, D] embeddings of the whole batch.
      margin: margin term.
      distance_metric: "L2", "squared-L2", "angular" or a callable (embeddings -> [B, B]).
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      `(loss_sum, num_positive_pairs)`, float scalars; the loss is their ratio. Zero gradient
      for a degenerate batch (see module docstring).
    """
    labels, pdist, negative, valid, positive_d = _prepare(
        y_true, y_pred, distance_metric, anchor_indices
    )
    negative_d = mining._semihard(pdist, negative, positive_d, valid)  # noqa: SLF001
    terms = tf.maximum(margin + (positive_d - negative_d), 0.0)
    loss_sum = tf.reduce_sum(tf.where(valid, terms, 0.0))
    count = tf.reduce_sum(tf.cast(valid, pdist.dtype))
    return _no_gradient_if(_degenerate(labels), loss_sum), count


def hard_loss_terms(
    y_true, y_pred, margin=1.0, soft=False, distance_metric="L2", anchor_indices=None
):
    """Sum and count of the batch-hard triplet loss terms of some anchors.

    Per anchor: hardest positive `max_p d(a, p)` and hardest negative `min_n d(a, n)`, then
    `max(hp - hn + margin, 0)` or, with `soft`, `log(1 + exp(hp - hn))`. As in TFA, an anchor
    without positive uses the row minimum (0) as `hp`, one without negative the row maximum as
    `hn`, and every anchor counts.

    Args:
      y_true: [B] or [B, 1] labels of the whole batch.
      y_pred: [B, D] embeddings of the whole batch.
      margin: margin term (unused when `soft`).
      soft: soft-margin variant.
      distance_metric: "L2", "squared-L2", "angular" or a callable.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      `(loss_sum, num_anchors)`, float scalars.
    """
    labels, pdist, negative, valid, positive_d = _prepare(
        y_true, y_pred, distance_metric, anchor_indices
    )
    inf = tf.constant(float("inf"), pdist.dtype)
    everything = tf.ones_like(negative)
    num_anchors = tf.shape(pdist)[0]

    def columns_if_needed(needed, largest):
        # Row arg-min/max over the whole row, only computed when some anchor needs it.
        return tf.cond(
            tf.reduce_all(needed),
            lambda: tf.zeros([num_anchors, 1], tf.int32),
            lambda: mining._row_argmin(pdist, everything, largest),  # noqa: SLF001
        )

    # Arg-min/max then gather: the gradient is a scatter, and no B×B tensor is kept for it.
    has_positive = tf.reduce_any(valid, axis=1)
    row_min = mining.gather_rows(pdist, columns_if_needed(has_positive, False))[:, 0]
    hardest_positive = tf.where(
        has_positive, tf.reduce_max(tf.where(valid, positive_d, -inf), axis=1), row_min
    )
    has_negative = tf.reduce_any(negative, axis=1, keepdims=True)
    nearest_negative = mining._row_argmin(pdist, negative)  # noqa: SLF001
    farthest = columns_if_needed(has_negative, True)
    hardest_negative = mining.gather_rows(
        pdist, tf.where(has_negative, nearest_negative, farthest)
    )[:, 0]
    gap = hardest_positive - hardest_negative
    terms = tf.nn.softplus(gap) if soft else tf.maximum(gap + margin, 0.0)
    count = tf.cast(tf.shape(pdist)[0], pdist.dtype)
    return _no_gradient_if(_degenerate(labels), tf.reduce_sum(terms)), count


def _soft_triplet_sum(positive_d, valid, pdist, negative):
    """Sum of softplus(d(a, p) - d(a, n)) over all valid triplets, in O(B²) memory.

    Loops over the K positive slots (O(B²·K) time) with a hand-written gradient, so the backward
    pass does not keep K B×B intermediates.
    """
    dtype = pdist.dtype
    valid_f = tf.cast(valid, dtype)
    negative_f = tf.cast(negative, dtype)
    num_slots = tf.shape(positive_d)[1]

    def weights(j):
        return valid_f[:, j : j + 1] * negative_f

    @tf.custom_gradient
    def total(positive_d, pdist):
        def body(j, acc):
            x = positive_d[:, j : j + 1] - pdist
            return j + 1, acc + tf.reduce_sum(weights(j) * tf.nn.softplus(x))

        _, value = tf.while_loop(
            lambda j, _: j < num_slots, body, (tf.constant(0), tf.zeros([], dtype))
        )

        def grad(upstream):
            def grad_body(j, grad_positive, grad_pdist):
                s = weights(j) * tf.sigmoid(positive_d[:, j : j + 1] - pdist)
                return j + 1, grad_positive.write(j, tf.reduce_sum(s, axis=1)), grad_pdist - s

            _, grad_positive, grad_pdist = tf.while_loop(
                lambda j, *_: j < num_slots,
                grad_body,
                (tf.constant(0), tf.TensorArray(dtype, size=num_slots), tf.zeros_like(pdist)),
            )
            grad_positive = tf.reshape(tf.transpose(grad_positive.stack()), tf.shape(positive_d))
            return upstream * grad_positive, upstream * grad_pdist

        return value, grad

    return total(positive_d, pdist)


def batch_all_loss_terms(
    y_true, y_pred, margin=1.0, soft=False, distance_metric="L2", anchor_indices=None
):
    """Sum and count of the batch-all triplet loss terms of some anchors.

    Hard margin: sum of `d(a, p) - d(a, n) + margin` over the *active* triplets (those where it
    is > 0) and their number — O(B² log K) time via sorted positives. Soft margin: sum of
    `log(1 + exp(d(a, p) - d(a, n)))` over all valid triplets and their number — O(B²·K) time.
    Memory O(B²) in both.

    Args:
      y_true: [B] or [B, 1] labels of the whole batch.
      y_pred: [B, D] embeddings of the whole batch.
      margin: margin term (unused when `soft`).
      soft: soft-margin variant.
      distance_metric: "L2", "squared-L2", "angular" or a callable.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      `(loss_sum, num_triplets)`, float scalars.
    """
    labels, pdist, negative, valid, positive_d = _prepare(
        y_true, y_pred, distance_metric, anchor_indices
    )
    if soft:
        loss_sum = _soft_triplet_sum(positive_d, valid, pdist, negative)
        num_valid = tf.reduce_sum(tf.cast(valid, pdist.dtype), axis=1)
        num_negative = tf.reduce_sum(tf.cast(negative, pdist.dtype), axis=1)
        count = tf.reduce_sum(num_valid * num_negative)
    else:
        plain = tf.stop_gradient(pdist)
        keys = mining.margin_keys(positive_d, valid, margin)
        active, counts = mining._margin_counts(plain, negative, keys)  # noqa: SLF001
        # Given which triplets are active, the loss is linear in the distances:
        # sum over active (a, p, n) of d(a, p) + margin - d(a, n)
        #   = sum_(a, p) counts(a, p) (d(a, p) + margin) - sum_(a, n) active(a, n) d(a, n),
        # taken per anchor row first to keep the float32 cancellation small.
        counts = tf.cast(counts, pdist.dtype)
        positive_part = tf.reduce_sum(tf.where(valid, counts * (positive_d + margin), 0.0), axis=1)
        negative_part = tf.reduce_sum(tf.cast(active, pdist.dtype) * pdist, axis=1)
        loss_sum = tf.reduce_sum(positive_part - negative_part)
        count = tf.reduce_sum(tf.where(valid, counts, 0.0))
    return _no_gradient_if(_degenerate(labels), loss_sum), count


def _mean(terms):
    loss_sum, count = terms
    return tf.math.divide_no_nan(loss_sum, count)


def triplet_semihard_loss(y_true, y_pred, margin=1.0, distance_metric="L2", anchor_indices=None):
    """Triplet loss with FaceNet semi-hard negative mining, as `tfa.losses.triplet_semihard_loss`.

    Mean over positive pairs (a, p) of `max(d(a, p) - d(a, n) + margin, 0)`, `n` the closest
    negative farther than `p`, else the farthest negative (Schroff et al. 2015).

    Args:
      y_true: [B] or [B, 1] integer (or float) class labels.
      y_pred: [B, D] embeddings (usually L2-normalised).
      margin: margin term.
      distance_metric: "L2", "squared-L2", "angular" or a callable (embeddings -> [B, B]).
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      float32 scalar (not scaled for distribution). 0 with zero gradient without positive pair.
    """
    return _mean(semihard_loss_terms(y_true, y_pred, margin, distance_metric, anchor_indices))


def triplet_hard_loss(
    y_true, y_pred, margin=1.0, soft=False, distance_metric="L2", anchor_indices=None
):
    """Batch-hard triplet loss (Hermans et al. 2017), as `tfa.losses.triplet_hard_loss`.

    Args:
      y_true: [B] or [B, 1] class labels.
      y_pred: [B, D] embeddings.
      margin: margin term (unused when `soft`).
      soft: soft-margin variant `log(1 + exp(hp - hn))`.
      distance_metric: "L2", "squared-L2", "angular" or a callable.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      float32 scalar: mean over anchors (not scaled for distribution).
    """
    return _mean(hard_loss_terms(y_true, y_pred, margin, soft, distance_metric, anchor_indices))


def triplet_batch_all_loss(
    y_true, y_pred, margin=1.0, soft=False, distance_metric="L2", anchor_indices=None
):
    """Batch-all triplet loss: mean over active triplets (all valid triplets when `soft`).

    Args:
      y_true: [B] or [B, 1] class labels.
      y_pred: [B, D] embeddings.
      margin: margin term (unused when `soft`).
      soft: soft-margin variant `log(1 + exp(d(a, p) - d(a, n)))` over all valid triplets.
      distance_metric: "L2", "squared-L2", "angular" or a callable.
      anchor_indices: optional [A] int rows scored as anchors (default: all).

    Returns:
      float32 scalar (not scaled for distribution); 0 when no triplet is active.
    """
    return _mean(
        batch_all_loss_terms(y_true, y_pred, margin, soft, distance_metric, anchor_indices)
    )


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
        return _mean(self.terms(y_true, y_pred))

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


class _TripletLoss(BatchLoss):
    """Shared plumbing of the triplet losses: margin, distance metric, config."""

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
class TripletSemiHardLoss(_TripletLoss):
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


class _SoftTripletLoss(_TripletLoss):
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

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, scale=self.scale, variant=self.variant)
        return config
