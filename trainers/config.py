"""The run configuration: a frozen dataclass built from flags in `launch/`; saved as config.json."""

from __future__ import annotations

import dataclasses
import json

from siamese_tf.data import PairSet, Splits, fixed_pairs, split_indices
from siamese_tf.data.sampling import CLASS_WEIGHTINGS
from siamese_tf.data.splits import SPLIT_BY
from siamese_tf.distances import METRICS
from siamese_tf.errors import InputError
from siamese_tf.losses import ARCFACE_VARIANTS
from siamese_tf.models.encoders import ENCODERS
from siamese_tf.seeds import RunSeeds
from trainers import losses

# The settings with a fixed set of values: enum flags in `launch/`, checked here for configs
# built in Python.
CHOICES = {
    "split_by": SPLIT_BY,
    "encoder": tuple(ENCODERS),
    "loss": losses.ALL_LOSSES,
    "arcface_variant": ARCFACE_VARIANTS,
    "distance_metric": METRICS,
    "class_weighting": CLASS_WEIGHTINGS,
    "lr_schedule": ("constant", "cosine", "step"),
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a metric-learning run. Defaults give the embedded digits job.

    Each entry below is the one description of a setting: `launch.train --help` prints it.

    Attributes:
      dataset: what to train on: `digits` (scikit-learn's bundled 8x8 digits), `mnist:DIR` (IDX
        files), `npz:PATH` (arrays `images`, `labels`), `folder:PATH` (one sub-folder per class),
        `tfds:NAME[:SPLIT]` (the builder folder `./datasets/NAME/`, or NAME/ in a folder listed
        in `$SIAMESE_TF_DATASETS`; else a copy prepared in `data_dir`, or TFDS's catalogue),
        `prepared:DIR` (a store from `launch.prepare`, local or gs://, read by row id: never
        loaded into memory).
      manual_dir: where a TFDS builder finds the files you downloaded yourself.
      data_dir: where TFDS keeps prepared datasets.
      image_size: resize images to SxS pixels; 0 keeps the native size.
      split_by: `example` (calibration and test hold other images of the training classes),
        `class` (they hold classes training never sees: the open-set protocol) or `group` (they
        hold whole groups of classes training never sees, e.g. Omniglot alphabets; needs a
        dataset with groups: nested GROUP/CLASS/ folders or a TFDS `alphabet` feature).
      calibration_fraction: share of the data (examples or classes) held out to calibrate the
        threshold and select the model.
      test_fraction: share of the data (examples or classes) held out for the final report.
      encoder: `conv_small`, `conv4` (conv4-64, global average pooling) or `conv4_flat` (conv4-64,
        last feature map flattened).
      embedding_dim: size of the L2-normalised embedding.
      loss: `triplet_hard` (batch-hard: each anchor's farthest positive and closest negative;
        the default), `triplet_semihard`, `triplet_batch_all`, `multi_similarity`,
        `circle`, `supcon` (P×K batches), `arcface` (class proxies with a margin softmax;
        labelled batches, any K), `contrastive` or `bce` (balanced pair batches; `bce` adds a
        dense head on |a - b|).
      margin: the margin of the triplet and contrastive losses (and of the logged
        active-triplet fraction).
      ms_alpha: multi_similarity: weight of the positive term, > 0.
      ms_beta: multi_similarity: weight of the negative term, > 0.
      ms_base: multi_similarity: the similarity margin lambda, a cosine in [-1, 1].
      circle_m: circle: the relaxation margin m, in [0, 1).
      circle_gamma: circle: the scale gamma, > 0.
      supcon_temperature: supcon: the softmax temperature, > 0.
      arcface_margin: arcface: the additive angular margin in radians, in [0, pi/2); with
        `arcface_variant=cosface` the additive cosine margin, in [0, 1) (CosFace used 0.35).
      arcface_scale: arcface: the logit scale s, > 0.
      arcface_variant: arcface: `arcface` (cos(theta + m)) or `cosface` (cos(theta) - m).
      cross_batch_memory: N > 0 scores every batch also against the last N training
        embeddings (XBM; P×K batch losses only); 0: off.
      distance_metric: `L2`, `squared-L2` or `angular`.
      classes_per_batch: P, the classes of a P×K batch (labelled losses; >= 2).
      samples_per_class: K, the examples per class of a P×K batch (labelled losses; >= 2, and
        >= 1 for `arcface`).
      pairs_per_batch: pairs of a balanced pair batch, half positive and half negative (pair
        losses `contrastive`, `bce`; >= 2, a multiple of the replicas).
      class_weighting: how classes are drawn: `uniform` or `proportional` to their size.
      augment: stateless random affine distortions, seeded by the step (on by default:
        without it the default job's loss reaches 0 by its second epoch and stops learning;
        `--noaugment` turns it off).
      rotate_classes: each training class turned by 90, 180 and 270 degrees becomes 3 new classes.
      learning_rate: Adam's (peak) learning rate.
      lr_schedule: `constant`, `cosine` (to 0 over the run) or `step` (/10 at 50% and 75%).
      epochs: epochs of the run.
      steps_per_epoch: training steps per epoch (the threshold is calibrated after each).
      max_steps: stop after this many steps in all; 0: epochs x steps_per_epoch.
      seed: the one seed of the run (>= 0): the split, sampling, augmentation, initialisation,
        pair sets and episodes each draw from their own named sub-seed of it.
      deterministic: TensorFlow op determinism (bit-identical runs and resumes).
      mixed_precision: float16 compute (float32 distances and mining); for GPUs.
      jit_compile: compile the train step with XLA.
      cross_replica_mining: mine over the global batch (all-gathered) instead of each replica's.
      save_every_steps: steps between backups; 0: only at epoch ends and on preemption.
      keep_checkpoints: epoch-end checkpoints kept.
      calibration_pairs: pairs drawn from the calibration split to set the threshold.
      test_pairs: pairs drawn from the test split for the final report.
      threshold_rule: how the threshold is chosen on the ROC curve: `eer`, `max_accuracy`,
        `youden` or `far=X` (e.g. `far=1e-3`).
      eval_batch_size: batch size when embedding calibration, test and gallery images.
      oneshot_ways: N of the per-epoch N-way 1-shot validation episodes (>= 2).
      oneshot_episodes: N-way 1-shot episodes drawn once from the calibration split and scored
        every epoch as `val_oneshot_<N>way` (the selection metric of open-set runs); 0: off.
      early_stopping_patience: stop after this many epochs without a better selection metric,
        and end with the best epoch's weights and threshold; 0: off. Its state is checkpointed,
        so a resumed run stops exactly where an uninterrupted one would.
      early_stopping_metric: the epoch log value early stopping watches; empty: the selection
        metric (`val_oneshot_<N>way` with one-shot validation, else `val_auc`). Values named
        `*loss*` or `*eer*` are minimised, others maximised.
    """

    dataset: str = "digits"
    manual_dir: str = ""
    data_dir: str = ""
    image_size: int = 0
    split_by: str = "example"
    calibration_fraction: float = 0.15
    test_fraction: float = 0.2
    encoder: str = "conv_small"
    embedding_dim: int = 64
    loss: str = "triplet_hard"
    margin: float = 0.5
    ms_alpha: float = 2.0
    ms_beta: float = 50.0
    ms_base: float = 0.5
    circle_m: float = 0.4
    circle_gamma: float = 80.0
    supcon_temperature: float = 0.1
    arcface_margin: float = 0.5
    arcface_scale: float = 64.0
    arcface_variant: str = "arcface"
    cross_batch_memory: int = 0
    distance_metric: str = "L2"
    classes_per_batch: int = 10
    samples_per_class: int = 8
    pairs_per_batch: int = 80
    class_weighting: str = "uniform"
    augment: bool = True
    rotate_classes: bool = False
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"
    epochs: int = 10
    steps_per_epoch: int = 150
    max_steps: int = 0
    seed: int = 0
    deterministic: bool = False
    mixed_precision: bool = False
    jit_compile: bool = False
    cross_replica_mining: bool = False
    save_every_steps: int = 100
    keep_checkpoints: int = 3
    calibration_pairs: int = 2000
    test_pairs: int = 4000
    threshold_rule: str = "eer"
    eval_batch_size: int = 512
    oneshot_ways: int = 20
    oneshot_episodes: int = 0
    early_stopping_patience: int = 0
    early_stopping_metric: str = ""

    def __post_init__(self):
        positive = (
            "embedding_dim",
            "epochs",
            "steps_per_epoch",
            "calibration_pairs",
            "test_pairs",
            "eval_batch_size",
            "keep_checkpoints",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.oneshot_ways < 2:
            raise InputError(f"oneshot_ways must be >= 2, got {self.oneshot_ways}")
        if self.oneshot_episodes < 0:
            raise InputError(f"oneshot_episodes must be >= 0, got {self.oneshot_episodes}")
        if self.early_stopping_patience < 0:
            raise InputError(
                f"early_stopping_patience must be >= 0 (0: off), got {self.early_stopping_patience}"
            )
        if self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        if self.max_steps < 0 or self.save_every_steps < 0:
            raise InputError("max_steps and save_every_steps must be >= 0 (0 disables them)")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise InputError(
                    f"--{name}={getattr(self, name)} is not one of: {', '.join(choices)}"
                )
        for name in ("learning_rate", "margin"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")
        # The loss, its hyperparameters and its batch: P and K, or pairs (trainers/losses.py).
        losses.check(self)

    def to_json(self) -> str:
        """The config as indented JSON (config.json)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @property
    def selection_metric(self) -> str:
        """The epoch log value that selects the model (and early stopping watches)."""
        if self.early_stopping_metric:
            return self.early_stopping_metric
        return f"val_oneshot_{self.oneshot_ways}way" if self.oneshot_episodes else "val_auc"

    @property
    def total_steps(self) -> int:
        """Steps of the whole run: epochs × steps_per_epoch, capped by max_steps when set."""
        total = self.epochs * self.steps_per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    @property
    def seeds(self) -> RunSeeds:
        """The run's named sub-seeds (`siamese_tf.seeds`): the one place each is decided."""
        return RunSeeds.of(self.seed)

    def held_out_pairs(self, split: str, labels) -> PairSet:
        """The fixed pair set this run draws on a held-out split, "calibration" or "test".

        The one place these pair sets are drawn: training calibrates and reports on them, and
        evaluation rebuilds them through this method (the same size and named sub-seed).

        Raises:
          InputError: see `siamese_tf.data.fixed_pairs`.
        """
        num_pairs, seed = self.held_out_pair_spec(split)
        return fixed_pairs(labels, num_pairs, seed=seed)

    def held_out_pair_spec(self, split: str) -> tuple[int, int]:
        """`(num_pairs, seed)` of `held_out_pairs(split)`."""
        if split == "calibration":
            return self.calibration_pairs, self.seeds.calibration_pairs
        if split == "test":
            return self.test_pairs, self.seeds.test_pairs
        raise ValueError(f"held-out pairs are drawn on 'calibration' or 'test', not {split!r}")

    def split(self, labels, groups=None) -> Splits:
        """Train / calibration / test rows of a dataset with these labels (and groups), as this
        run splits it.

        The one place the split is drawn, so evaluation rebuilds exactly what training used.

        Raises:
          InputError: see `siamese_tf.data.split_indices`.
        """
        return split_indices(
            labels,
            calibration_fraction=self.calibration_fraction,
            test_fraction=self.test_fraction,
            seed=self.seeds.split,
            split_by=self.split_by,
            groups=groups,
        )

    @classmethod
    def field_names(cls) -> tuple:
        """Names of all fields, for flag plumbing."""
        return tuple(f.name for f in dataclasses.fields(cls))
