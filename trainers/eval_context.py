"""What the evaluation protocols of one `evaluate` call share: its options and its context.

`EvalOptions` are the options of `trainers.evaluation.evaluate` (the `launch.evaluate` flags);
`EvalContext` carries the finished run, the options and the split every split protocol
scores, loaded and embedded once. Runs on host.
"""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from siamese_tf import embedding_map, plots
from siamese_tf.errors import InputError
from siamese_tf.inference import embed
from siamese_tf.seeds import derive
from trainers.finished_run import (
    SPLITS,
    Run,
    SplitData,
    check_finite,
    check_split_dataset,
    load_split,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """Options of `evaluate` (defaults: the flags' defaults).

    Attributes:
      split: "test" or "calibration" of the run's data, or "all" of `dataset`.
      num_pairs: verification pairs; 0 uses the run's own pair set of the split (on "all":
        the run's `test_pairs`).
      bootstrap: bootstrap resamples of the AUC / EER intervals (0: none).
      ways: N of the N-way k-shot episodes (each >= 2).
      shots: k of the episodes.
      queries: queries per class and episode.
      episodes: episodes per (N, k).
      ks: the k of recall@k and precision@k.
      clusters: k-means clusters; 0 uses the number of classes.
      runs_zip: `all_runs.zip` for `omniglot_runs`.
      plots: write `plots/*.png` (needs matplotlib; skipped with a warning without it).
      projector: write TensorBoard projector files of the split's embeddings.
      projection: "auto", "tsne" or "pca" for the embedding map.
      seed: the seed whose named sub-seeds (`siamese_tf.seeds`) draw pairs, episodes, bootstrap,
        k-means and the projection; None: the run's seed.
      batch_size: images per forward pass; 0 uses the run's `eval_batch_size`.
      manual_dir: overrides the run's `manual_dir`.
      data_dir: overrides the run's `data_dir`.
      dataset: another dataset spec to score whole (with split "all"), e.g. classes training
        never saw; empty: the run's own data.
      tta_shift: test-time augmentation: every embedding averaged over the translations of its
        image by up to this many pixels (`siamese_tf.inference.embed`); 0: off. Not with
        verification, whose threshold was calibrated without it.
    """

    split: str = "test"
    num_pairs: int = 0
    bootstrap: int = 1000
    ways: tuple = (5, 20)
    shots: tuple = (1,)
    queries: int = 1
    episodes: int = 1000
    ks: tuple = (1, 2, 4, 8)
    clusters: int = 0
    runs_zip: str = ""
    plots: bool = True
    projector: bool = False
    projection: str = "auto"
    seed: int | None = None
    batch_size: int = 0
    manual_dir: str = ""
    data_dir: str = ""
    dataset: str = ""
    tta_shift: int = 0

    def check(self, protocols) -> None:
        """Validates the options for the given protocols (before anything is loaded).

        Args:
          protocols: the `trainers.eval_protocols.EvalProtocol`s to run.

        Raises:
          InputError: an unknown split or projection, a bad size, or an option a protocol
            needs (e.g. `--runs_zip`).
        """
        if self.split not in SPLITS:
            raise InputError(f"unknown split {self.split!r}; choose one of: {', '.join(SPLITS)}")
        check_split_dataset(self.split, self.dataset)
        if self.projection not in embedding_map.PROJECTIONS:
            raise InputError(
                f"unknown projection {self.projection!r}; choose one of "
                f"{', '.join(embedding_map.PROJECTIONS)}"
            )
        for name in ("num_pairs", "bootstrap", "clusters", "batch_size", "tta_shift"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("queries", "episodes"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ways", "shots", "ks"):
            values = getattr(self, name)
            if not values or any(int(v) != v or v < 1 for v in values):
                raise InputError(f"{name} must be positive integers, got {list(values)}")
        if min(self.ways) < 2:
            raise InputError(
                f"--ways must be >= 2, got {','.join(str(v) for v in self.ways)}: a 1-way episode "
                "has one candidate class, so it is always right"
            )
        for protocol in protocols:
            protocol.check_options(self)
        if self.seed is not None and self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        if self.num_pairs == 1:
            raise InputError("num_pairs must be 0 (the run's pair set) or >= 2")

    def check_image_shape(self, image_shape) -> None:
        """Refuses a `tta_shift` the run's images are too small for.

        Raises:
          InputError: `2 * tta_shift` is not below the images' height and width.
        """
        if 2 * self.tta_shift >= min(image_shape[:2]):
            raise InputError(
                f"--tta_shift={self.tta_shift} needs images larger than {2 * self.tta_shift} "
                f"pixels on each side; the run's are {image_shape[0]}x{image_shape[1]}: use a "
                "smaller --tta_shift"
            )

    def seed_for(self, run: Run, stream: str) -> int:
        """The sub-seed of one named stream (`siamese_tf.seeds.STREAMS`) of `seed`, else of
        the run's seed."""
        return derive(self.seed if self.seed is not None else run.config.seed, stream)


class EvalContext:
    """What the protocols of one `evaluate` call share: the run, the options, the split.

    The split (when a protocol scores it) is loaded and embedded once, by `load_split`, for
    every protocol. Runs on host.

    Attributes:
      run: the finished run.
      options: the `EvalOptions`.
      plot_dir: where protocols write their figures; None writes none.
      data: the split's `SplitData`, once loaded.
      embeddings: its embeddings [n, D], once loaded.
      plots: {name: path} of the figures written so far.
    """

    def __init__(self, run: Run, options: EvalOptions, plot_dir: str | None = None):
        self.run = run
        self.options = options
        self.plot_dir = plot_dir
        self.data: SplitData | None = None
        self.embeddings = None
        self.plots: dict = {}

    def load_split(self) -> None:
        """Rebuilds the options' split of the run's data and embeds it.

        Raises:
          InputError: see `trainers.finished_run.load_split`, or non-finite embeddings.
        """
        options, run = self.options, self.run
        self.data = load_split(
            run, options.split, options.manual_dir, options.data_dir, options.dataset
        )
        batch = options.batch_size or run.config.eval_batch_size
        self.embeddings = embed(run.model, self.data.images, batch, options.tta_shift)
        check_finite(self.embeddings, f"the {self.data.name} split")

    def data_info(self) -> dict:
        """What the loaded split is, for every report that scored it."""
        return {
            "dataset": self.options.dataset or self.run.config.dataset,
            "split": self.data.name,
            "split_by": self.run.config.split_by,
            "num_examples": int(len(self.data.labels)),
            "num_classes": int(np.unique(self.data.labels).size),
        }

    def write_plot(self, name: str, figure_fn, filename: str) -> None:
        """Draws `figure_fn()` into `plot_dir/filename` as plot `name` (nothing without a dir).

        A figure the data cannot give (e.g. a ROC of one class) is skipped with a warning.
        """
        if self.plot_dir is None:
            return
        try:
            figure = figure_fn()
        except ValueError as err:
            log.warning("plot %s skipped: %s", name, err)
            return
        os.makedirs(self.plot_dir, exist_ok=True)
        self.plots[name] = plots.save_png(figure, os.path.join(self.plot_dir, filename))
