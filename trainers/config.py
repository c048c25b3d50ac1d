"""The run configuration: a frozen dataclass built from flags in `launch/`; saved as config.json."""

from __future__ import annotations

import dataclasses
import json

from siamese_tf.data import Splits, split_indices
from siamese_tf.errors import InputError

LR_SCHEDULES = ("constant", "cosine", "step")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a metric-learning run. Defaults give the embedded digits job."""

    dataset: str = "digits"
    manual_dir: str = ""
    data_dir: str = ""
    image_size: int = 0
    split_by: str = "example"
    calibration_fraction: float = 0.15
    test_fraction: float = 0.2
    encoder: str = "conv_small"
    embedding_dim: int = 64
    loss: str = "triplet_semihard"
    margin: float = 0.5
    distance_metric: str = "L2"
    classes_per_batch: int = 10
    samples_per_class: int = 8
    class_weighting: str = "uniform"
    augment: bool = False
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

    def __post_init__(self):
        positive = (
            "embedding_dim",
            "classes_per_batch",
            "samples_per_class",
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
        if self.samples_per_class < 2:
            raise InputError(
                "samples_per_class must be >= 2 to form positive pairs, got "
                f"{self.samples_per_class}"
            )
        if self.classes_per_batch < 2:
            raise InputError(
                f"classes_per_batch must be >= 2 to form negatives, got {self.classes_per_batch}"
            )
        if self.max_steps < 0 or self.save_every_steps < 0:
            raise InputError("max_steps and save_every_steps must be >= 0 (0 disables them)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(
                f"unknown lr_schedule {self.lr_schedule!r}; "
                f"choose one of: {', '.join(LR_SCHEDULES)}"
            )
        for name in ("learning_rate", "margin"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, got {getattr(self, name)}")

    def to_json(self) -> str:
        """The config as indented JSON (config.json)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @property
    def total_steps(self) -> int:
        """Steps of the whole run: epochs × steps_per_epoch, capped by max_steps when set."""
        total = self.epochs * self.steps_per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    def split(self, labels) -> Splits:
        """Train / calibration / test rows of a dataset with these labels, as this run splits it.

        The one place the split is drawn, so evaluation rebuilds exactly what training used.

        Raises:
          InputError: see `siamese_tf.data.split_indices`.
        """
        return split_indices(
            labels,
            calibration_fraction=self.calibration_fraction,
            test_fraction=self.test_fraction,
            seed=self.seed,
            split_by=self.split_by,
        )

    @classmethod
    def field_names(cls) -> tuple:
        """Names of all fields, for flag plumbing."""
        return tuple(f.name for f in dataclasses.fields(cls))
