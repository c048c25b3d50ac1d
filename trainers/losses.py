"""The losses a run can train with: names, the batches each needs, checks, construction.

* batch losses (P×K batches, scored over every pair of the batch; may use a cross-batch memory
  and cross-replica mining): `triplet_semihard`, `triplet_hard`, `triplet_batch_all`,
  `multi_similarity`, `circle`, `supcon`;
* proxy losses (any labelled `(images, labels)` batch; the run draws them with the P×K sampler,
  any K >= 1, as ArcFace needs no P×K structure): `arcface` (CosFace by `--arcface_variant`);
* pair losses (balanced pair batches `((a, b), same)` of `--pairs_per_batch` pairs):
  `contrastive`, `bce`.
"""

from __future__ import annotations

import math

import keras

from siamese_tf import losses as losses_lib
from siamese_tf.errors import InputError

TRIPLET_LOSSES = ("triplet_semihard", "triplet_hard", "triplet_batch_all")
BATCH_LOSSES = (*TRIPLET_LOSSES, "multi_similarity", "circle", "supcon")
PROXY_LOSSES = ("arcface",)
PAIR_LOSSES = ("contrastive", "bce")
# Losses trained on labelled batches, drawn by the P×K sampler.
LABELLED_LOSSES = BATCH_LOSSES + PROXY_LOSSES
ALL_LOSSES = LABELLED_LOSSES + PAIR_LOSSES


def check(config) -> None:
    """Checks the loss's hyperparameters (the names are checked in `trainers.config`); the
    message names the flag.

    Raises:
      InputError: a hyperparameter out of range, or a setting for the other kind of batch (e.g.
        a cross-batch memory with a pair loss).
    """
    positive = ("ms_alpha", "ms_beta", "circle_gamma", "supcon_temperature", "arcface_scale")
    for name in positive:
        if not getattr(config, name) > 0:
            raise InputError(f"--{name} must be > 0, got {getattr(config, name)}")
    if not -1.0 <= config.ms_base <= 1.0:
        raise InputError(f"--ms_base must be in [-1, 1] (a cosine), got {config.ms_base}")
    if not 0.0 <= config.circle_m < 1.0:
        raise InputError(f"--circle_m must be in [0, 1), got {config.circle_m}")
    limit = math.pi / 2 if config.arcface_variant == "arcface" else 1.0
    if not 0.0 <= config.arcface_margin < limit:
        raise InputError(
            f"--arcface_margin must be in [0, {limit:.4g}) for --arcface_variant="
            f"{config.arcface_variant}, got {config.arcface_margin}"
        )
    if config.cross_batch_memory < 0:
        raise InputError(f"--cross_batch_memory must be >= 0, got {config.cross_batch_memory}")
    if config.cross_batch_memory and config.loss not in BATCH_LOSSES:
        raise InputError(
            f"--cross_batch_memory needs a P×K batch loss ({', '.join(BATCH_LOSSES)}); "
            f"--loss={config.loss} does not mine pairs in its batch"
        )
    _check_batch(config)


def _check_batch(config) -> None:
    """The batch settings of the loss's kind, the one place they are checked against it.

    Labelled losses use P and K (`classes_per_batch`, `samples_per_class`), pair losses
    `pairs_per_batch`; the other kind's settings are not used, so not checked. What the data
    and the replicas allow is checked later, by `trainers.small_data.fit_batch`.
    """
    if config.loss in PAIR_LOSSES:
        if config.pairs_per_batch < 2:
            raise InputError(
                f"--pairs_per_batch must be >= 2 (a positive and a negative pair), got "
                f"{config.pairs_per_batch}"
            )
        return
    if config.classes_per_batch < 2:
        raise InputError(
            f"--classes_per_batch must be >= 2 to form negatives, got {config.classes_per_batch}"
        )
    minimum_k = 1 if config.loss in PROXY_LOSSES else 2
    if config.samples_per_class < minimum_k:
        raise InputError(
            f"--samples_per_class must be >= {minimum_k} for --loss={config.loss}"
            + (" (positive pairs)" if minimum_k == 2 else "")
            + f", got {config.samples_per_class}"
        )


def batch_units(config) -> int:
    """The global batch in the units replicas share: P classes (labelled losses) or pairs."""
    return config.classes_per_batch if config.loss in LABELLED_LOSSES else config.pairs_per_batch


def make_loss(config):
    """The Keras loss of a run (labels / embeddings, or pairs, as `check` says)."""
    if config.loss == "triplet_semihard":
        return losses_lib.TripletSemiHardLoss(
            margin=config.margin, distance_metric=config.distance_metric
        )
    if config.loss == "triplet_hard":
        return losses_lib.TripletHardLoss(
            margin=config.margin, distance_metric=config.distance_metric
        )
    if config.loss == "triplet_batch_all":
        return losses_lib.TripletBatchAllLoss(
            margin=config.margin, distance_metric=config.distance_metric
        )
    if config.loss == "multi_similarity":
        return losses_lib.MultiSimilarityLoss(
            alpha=config.ms_alpha, beta=config.ms_beta, base=config.ms_base
        )
    if config.loss == "circle":
        return losses_lib.CircleLoss(m=config.circle_m, gamma=config.circle_gamma)
    if config.loss == "supcon":
        return losses_lib.SupConLoss(temperature=config.supcon_temperature)
    if config.loss == "arcface":
        return losses_lib.ArcFaceLoss(
            margin=config.arcface_margin,
            scale=config.arcface_scale,
            variant=config.arcface_variant,
        )
    if config.loss == "contrastive":
        return losses_lib.ContrastiveLoss(margin=config.margin)
    return keras.losses.BinaryCrossentropy()
