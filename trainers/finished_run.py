"""A finished run, loaded from its workdir: config, model, and its data rebuilt split by split.

`load_run` reads `config.json` and `model.keras`; `load_split` rebuilds one split of the run's
data exactly as training drew it (same dataset spec, image size, seed and split fractions; the
split sizes are checked against the saved ones), or loads another dataset whole
(`split="all"`). Shared by the evaluation protocols and the predictions on files.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import zipfile

import keras
import numpy as np
import tensorflow as tf

# Imported for their side effect too: they register the serializable layers load_model needs.
import siamese_tf.heads  # noqa: F401
import siamese_tf.models  # noqa: F401
from siamese_tf.data import load_source
from siamese_tf.errors import InputError
from siamese_tf.export import model_image_shape
from siamese_tf.threshold import is_calibrated
from trainers import workdir as wd
from trainers.config import TrainConfig

SPLITS = ("test", "calibration", "all")


@dataclasses.dataclass(frozen=True)
class Run:
    """A finished run loaded from its workdir.

    Attributes:
      workdir: the run directory.
      config: its `TrainConfig` (from config.json).
      split_sizes: the split sizes training saw (from config.json), or None.
      model: the loaded `SiameseModel` (not compiled).
    """

    workdir: str
    config: TrainConfig
    split_sizes: dict | None
    model: object

    @property
    def threshold(self) -> float | None:
        """The calibrated distance threshold, or None when the model is uncalibrated."""
        value = float(self.model.threshold.numpy())
        return value if is_calibrated(value) else None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) the model takes."""
        return model_image_shape(self.model)

    def require_threshold(self, override: float | None = None) -> float:
        """The threshold to decide "same" with: `override`, else the calibrated one.

        Raises:
          InputError: no override and the model is uncalibrated.
        """
        if override is not None:
            if not math.isfinite(override):
                raise InputError(f"threshold must be a finite number, got {override}")
            return float(override)
        if self.threshold is None:
            raise InputError(
                f"the model in {self.workdir} is uncalibrated (threshold -1), so it cannot say "
                "same/different; pass a threshold explicitly (--threshold) or retrain with a "
                "calibration split"
            )
        return self.threshold


def load_config(workdir: str) -> tuple[TrainConfig, dict | None]:
    """Reads a run's config.json.

    Returns:
      `(config, split_sizes)`.

    Raises:
      InputError: no such folder, no or unreadable config.json.
    """
    if not workdir:
        raise InputError("--workdir is required: the folder of a finished run")
    if not os.path.isdir(workdir):
        raise InputError(f"workdir {workdir} does not exist or is not a folder")
    filename = wd.path(workdir, wd.CONFIG)
    try:
        with open(filename, encoding="utf-8") as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise InputError(f"{workdir} has no {wd.CONFIG}: not the workdir of a run") from None
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read {filename}: {err}") from None
    fields = {k: v for k, v in saved.items() if k in TrainConfig.field_names()}
    try:
        config = TrainConfig(**fields)
    except TypeError as err:
        raise InputError(f"{filename} does not hold a valid run config: {err}") from None
    return config, saved.get("split_sizes")


def load_run(workdir: str) -> Run:
    """Loads a finished run's config and model (Keras safe mode, not compiled).

    Raises:
      InputError: see `load_config`; no model.keras (training unfinished) or an unreadable one.
    """
    config, split_sizes = load_config(workdir)
    filename = wd.path(workdir, wd.MODEL)
    if not os.path.isfile(filename):
        if wd.has_checkpoint(workdir):
            raise InputError(
                f"{workdir} has no {wd.MODEL}: the run has not finished; re-run the same "
                "launch.train command on it to resume and finish it"
            )
        raise InputError(
            f"{workdir} has no {wd.MODEL}: no training step was saved there (the run stopped "
            f"early); train it with python -m launch.train --workdir={workdir} [flags]"
        )
    try:
        model = keras.models.load_model(filename, compile=False)
    except (ValueError, TypeError, KeyError, OSError, zipfile.BadZipFile) as err:
        detail = " ".join(str(err).split())[:300]
        raise InputError(f"cannot load {filename}: {detail}") from None
    if not hasattr(model, "threshold") or not hasattr(model, "pair_distances"):
        raise InputError(f"{filename} is not a siamese_tf SiameseModel")
    return Run(workdir, config, split_sizes, model)


# ------------------------------------------------------------------------------------------------
# Rebuilding the run's data.


@dataclasses.dataclass(frozen=True)
class SplitData:
    """One split of a run's data, decoded.

    Attributes:
      name: "test" or "calibration".
      images: uint8 [n, H, W, C].
      labels: int64 [n].
      class_names: name of each label value, or None.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple | None


def check_split_dataset(split: str, dataset: str) -> None:
    if (split == "all") != bool(dataset):
        raise InputError(
            "--split=all scores a whole other dataset and needs --dataset=SPEC; --dataset "
            "needs --split=all (test and calibration are splits of the run's own data)"
        )


def load_split(
    run: Run, split: str = "test", manual_dir: str = "", data_dir: str = "", dataset: str = ""
) -> SplitData:
    """Rebuilds one split of a run's data exactly as training drew it, or loads another dataset.

    Args:
      run: the run.
      split: "test" or "calibration" of the run's own data, or "all": every example of
        `dataset` (e.g. Omniglot's evaluation alphabets, which training never saw).
      manual_dir: overrides the run's `manual_dir` (data moved); empty keeps it.
      data_dir: overrides the run's `data_dir`; empty keeps it.
      dataset: a dataset spec other than the run's, resized to the run's `image_size`; only
        with `split="all"`.

    Returns:
      The decoded split.

    Raises:
      InputError: an unknown split, `dataset` without `split="all"` or the reverse,
        unreadable data, data whose split sizes differ from the ones training saw, or images
        of another shape than the model takes.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    config = run.config
    check_split_dataset(split, dataset)
    if dataset and dataset == config.dataset:
        raise InputError(
            f"--dataset={dataset} is the run's training dataset: --split=all would score "
            "training images; use --split=test"
        )
    source = load_source(
        dataset or config.dataset,
        image_size=config.image_size,
        manual_dir=manual_dir or config.manual_dir,
        data_dir=data_dir or config.data_dir,
    )
    if tuple(source.image_shape) != run.image_shape:
        raise InputError(
            f"dataset {dataset or config.dataset!r} decodes to {tuple(source.image_shape)} "
            f"images but the model takes {run.image_shape}"
        )
    if split == "all":
        return SplitData(split, source.decoded_images(), source.labels, source.class_names)
    splits = config.split(source.labels, source.groups)
    if run.split_sizes is not None and splits.sizes() != run.split_sizes:
        raise InputError(
            f"dataset {config.dataset!r} no longer splits as it did in training "
            f"(now {splits.sizes()}, then {run.split_sizes}): the data changed"
        )
    rows = getattr(splits, split)
    return SplitData(split, source.decoded_images(rows), source.labels[rows], source.class_names)


def check_finite(embeddings, what: str) -> None:
    if not np.all(np.isfinite(embeddings)):
        raise InputError(f"the model gives NaN or infinite embeddings on {what}: it diverged")


def model_distances(model, emb_a, emb_b, chunk: int = 65536) -> np.ndarray:
    """The model's own pair distances (its metric, or 1 - p(same) of a head), in chunks."""
    emb_a, emb_b = np.asarray(emb_a, np.float32), np.asarray(emb_b, np.float32)
    out = [
        np.asarray(
            model.pair_distances(
                tf.constant(emb_a[i : i + chunk]), tf.constant(emb_b[i : i + chunk])
            ),
            np.float32,
        )
        for i in range(0, emb_a.shape[0], chunk)
    ]
    return np.concatenate(out) if out else np.zeros(0, np.float32)
