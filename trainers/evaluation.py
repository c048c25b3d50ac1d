"""Recipes that apply a finished run: evaluation protocols, predictions on image files.

Everything here starts from a workdir (`config.json` + `model.keras`) and needs no flags, so
`launch.evaluate` and `launch.predict` are thin and the logic is testable directly.

Evaluation (`evaluate`) rebuilds the run's data exactly as training split it (same dataset
spec, image size, seed and split fractions from `config.json`; the split sizes are checked
against the saved ones), embeds one split once and runs one or more protocols on it:

* `verification`: the fixed pair set of the split (the run's own `test_pairs` / seed + 2 on
  test, `calibration_pairs` / seed + 1 on calibration, as training drew them) scored at the
  model's calibrated threshold — never re-tuned here — with bootstrap CIs of AUC and EER;
* `oneshot`: seeded N-way k-shot episodes (several N and k);
* `retrieval`: recall@k, precision@k and MAP@R, leave-one-out within the split;
* `clustering`: k-means on the embeddings, scored by NMI and AMI;
* `omniglot_runs`: the 20 official 20-way one-shot runs of Lake et al. (2015), read straight
  from `all_runs.zip`.

Each writes `eval/<protocol>.json` (`eval/<protocol>_<split>.json` on the calibration split or
another dataset's `all`, so they never overwrite the test figures); plots go to `plots/` and
projector files to `logs/projector/`. Runs on host, in one process (no strategy needed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import zipfile

import keras
import numpy as np
import tensorflow as tf

# Imported for their side effect too: they register the serializable layers load_model needs.
import siamese_tf.heads  # noqa: F401
import siamese_tf.models  # noqa: F401
from siamese_tf import embedding_map, plots
from siamese_tf.data import fixed_pairs, load_source, source_episodes, split_indices
from siamese_tf.data.images import decode_encoded_images
from siamese_tf.data.one_shot_runs import read_omniglot_runs
from siamese_tf.errors import InputError
from siamese_tf.evaluation import clustering as eval_clustering
from siamese_tf.evaluation import metrics as eval_metrics
from siamese_tf.evaluation import retrieval as eval_retrieval
from siamese_tf.export import model_image_shape
from siamese_tf.inference import embed
from siamese_tf.models import UNCALIBRATED
from trainers import workdir as wd
from trainers.config import TrainConfig

PROTOCOLS = ("verification", "oneshot", "retrieval", "clustering", "omniglot_runs")
SPLITS = ("test", "calibration", "all")
EVAL_DIR = "eval"
PLOTS_DIR = "plots"
PROJECTOR_DIR = os.path.join(wd.LOGS, "projector")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# (query, support) pairs a pair-head model scores per chunk of one-shot episodes.
_MAX_HEAD_PAIRS = 1 << 18

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# A finished run: its config and model.


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
        return None if value == UNCALIBRATED else value

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
        raise InputError(
            f"{workdir} has no {wd.MODEL}: the run has not finished (re-run launch.train on it "
            "to resume and finish it)"
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


def _check_split_dataset(split: str, dataset: str) -> None:
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
    _check_split_dataset(split, dataset)
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
    splits = split_indices(
        source.labels,
        calibration_fraction=config.calibration_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        split_by=config.split_by,
    )
    if run.split_sizes is not None and splits.sizes() != run.split_sizes:
        raise InputError(
            f"dataset {config.dataset!r} no longer splits as it did in training "
            f"(now {splits.sizes()}, then {run.split_sizes}): the data changed"
        )
    rows = getattr(splits, split)
    return SplitData(split, source.decoded_images(rows), source.labels[rows], source.class_names)


# ------------------------------------------------------------------------------------------------
# Protocols.


@dataclasses.dataclass(frozen=True)
class EvalOptions:
    """Options of `evaluate` (defaults: the flags' defaults).

    Attributes:
      split: "test" or "calibration" of the run's data, or "all" of `dataset`.
      num_pairs: verification pairs; 0 uses the run's own pair set of the split (on "all":
        the run's `test_pairs`).
      bootstrap: bootstrap resamples of the AUC / EER intervals (0: none).
      ways: N of the N-way k-shot episodes.
      shots: k of the episodes.
      queries: queries per class and episode.
      episodes: episodes per (N, k).
      ks: the k of recall@k and precision@k.
      clusters: k-means clusters; 0 uses the number of classes.
      runs_zip: `all_runs.zip` for `omniglot_runs`.
      plots: write `plots/*.png` (needs matplotlib; skipped with a warning without it).
      projector: write TensorBoard projector files of the split's embeddings.
      projection: "auto", "tsne" or "pca" for the embedding map.
      seed: seed of pairs, episodes, bootstrap and k-means; None derives them from the run's.
      batch_size: images per forward pass; 0 uses the run's `eval_batch_size`.
      manual_dir: overrides the run's `manual_dir`.
      data_dir: overrides the run's `data_dir`.
      dataset: another dataset spec to score whole (with split "all"), e.g. classes training
        never saw; empty: the run's own data.
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

    def check(self, protocols) -> None:
        """Validates the options for the given protocols (before anything is loaded).

        Raises:
          InputError: an unknown protocol, split or projection, or a bad size.
        """
        unknown = [p for p in protocols if p not in PROTOCOLS]
        if unknown or not protocols:
            raise InputError(
                f"unknown protocol {', '.join(unknown) or '(none)'}; choose from: "
                f"{', '.join(PROTOCOLS)} (comma-separated for several)"
            )
        if self.split not in SPLITS:
            raise InputError(f"unknown split {self.split!r}; choose one of: {', '.join(SPLITS)}")
        _check_split_dataset(self.split, self.dataset)
        if self.projection not in embedding_map.PROJECTIONS:
            raise InputError(
                f"unknown projection {self.projection!r}; choose one of "
                f"{', '.join(embedding_map.PROJECTIONS)}"
            )
        for name in ("num_pairs", "bootstrap", "clusters", "batch_size"):
            if getattr(self, name) < 0:
                raise InputError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("queries", "episodes"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("ways", "shots", "ks"):
            values = getattr(self, name)
            if not values or any(int(v) != v or v < 1 for v in values):
                raise InputError(f"{name} must be positive integers, got {list(values)}")
        if "omniglot_runs" in protocols and not self.runs_zip:
            raise InputError("protocol omniglot_runs needs --runs_zip=PATH/all_runs.zip")
        if self.num_pairs == 1:
            raise InputError("num_pairs must be 0 (the run's pair set) or >= 2")


def _seed(run: Run, options: EvalOptions, offset: int) -> int:
    return int(options.seed if options.seed is not None else run.config.seed + offset)


def _retrieval_metric(model) -> str:
    """The retrieval metric that ranks like the model's distance (embedding models)."""
    # Angular distance is monotone in cosine similarity; L2 and squared L2 rank alike.
    return "cosine" if getattr(model, "distance_metric", "L2") == "angular" else "euclidean"


def _check_finite(embeddings, what: str) -> None:
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


def _episode_accuracies(model, support, query, targets) -> np.ndarray:
    """Per-episode accuracy: each query gets the class of the closest support (mean over k).

    Embedding models use `siamese_tf.evaluation.retrieval.episode_accuracies` with the metric
    that ranks like theirs; a pair-head model has no embedding metric, so its own distances
    (1 - p(same)) are computed for every (query, support) pair and reduced the same way.
    """
    if getattr(model, "head", None) is None:
        return eval_retrieval.episode_accuracies(
            support, query, targets, metric=_retrieval_metric(model)
        )
    e, n, k, d = support.shape
    q = query.shape[1]
    accuracies = []
    step = max(1, _MAX_HEAD_PAIRS // (q * n * k))  # Episodes per chunk: bounded host memory.
    for start in range(0, e, step):
        sup, qry = support[start : start + step], query[start : start + step]
        shape = (sup.shape[0], q, n, k, d)
        pairs_q = np.broadcast_to(qry[:, :, None, None, :], shape).reshape(-1, d)
        pairs_s = np.broadcast_to(sup[:, None], shape).reshape(-1, d)
        distances = model_distances(model, pairs_q, pairs_s).reshape(shape[:4]).mean(axis=3)
        predicted = np.argmin(distances, axis=2)
        accuracies.append(np.mean(predicted == targets[start : start + step], axis=1))
    return np.concatenate(accuracies)


def verification_protocol(run: Run, data: SplitData, embeddings, options: EvalOptions) -> tuple:
    """Verification at the calibrated threshold on the split's fixed pair set.

    Returns:
      `(result, distances, same)`.

    Raises:
      InputError: an uncalibrated model, or a split that cannot form pairs.
    """
    threshold = run.require_threshold()
    config = run.config
    if options.num_pairs:
        num_pairs, seed = options.num_pairs, _seed(run, options, 2)
    elif data.name in ("test", "all"):
        num_pairs, seed = config.test_pairs, config.seed + 2
    else:
        num_pairs, seed = config.calibration_pairs, config.seed + 1
    pairs = fixed_pairs(data.labels, num_pairs, seed=seed)
    distances = model_distances(run.model, embeddings[pairs.a], embeddings[pairs.b])
    report = eval_metrics.verification_report(distances, pairs.same, threshold)
    result = {"pairs": {"num_pairs": len(pairs), "seed": seed}, "report": report}
    if options.bootstrap:
        boot_seed = _seed(run, options, 4)
        result["bootstrap_ci95"] = {
            stat: list(
                eval_metrics.bootstrap_ci(
                    distances, pairs.same, stat, n_resamples=options.bootstrap, seed=boot_seed
                )
            )
            for stat in eval_metrics.BOOTSTRAP_STATISTICS
        }
        result["bootstrap_ci95"]["n_resamples"] = options.bootstrap
    if data.name == "calibration":
        result["note"] = "the threshold was tuned on this split: its accuracy is optimistic"
    return result, distances, pairs.same


def oneshot_protocol(run: Run, data: SplitData, embeddings, options: EvalOptions) -> dict:
    """N-way k-shot accuracy over seeded episodes, for every (N, k) asked.

    An (N, k) the split cannot fill (too few classes with k + queries examples) is reported as
    skipped with the reason.

    Raises:
      InputError: no (N, k) could be run.
    """
    results, ran = {}, 0
    for n_way in options.ways:
        for k_shot in options.shots:
            key = f"{n_way}way_{k_shot}shot"
            try:
                episodes = source_episodes(
                    data.labels,
                    n_way,
                    k_shot,
                    options.queries,
                    options.episodes,
                    seed=_seed(run, options, 3),
                )
            except InputError as err:
                results[key] = {"skipped": str(err)}
                continue
            accuracies = _episode_accuracies(
                run.model,
                embeddings[episodes.support],
                embeddings[episodes.query],
                episodes.query_targets,
            )
            half_width = 1.96 * float(np.std(accuracies)) / math.sqrt(len(accuracies))
            results[key] = {
                "accuracy": float(np.mean(accuracies)),
                "ci95_half_width": half_width,
                "episodes": len(episodes),
                "n_way": int(n_way),
                "k_shot": int(k_shot),
                "queries_per_class": options.queries,
            }
            ran += 1
    if not ran:
        reasons = "; ".join(r["skipped"] for r in results.values())
        raise InputError(f"no one-shot episodes possible on the {data.name} split: {reasons}")
    return {"episodes": results}


def retrieval_protocol(run: Run, data: SplitData, embeddings, options: EvalOptions) -> dict:
    """Recall@k, precision@k and MAP@R, each example querying the rest of the split."""
    ks = sorted({int(k) for k in options.ks if k < len(data.labels)})
    if not ks:
        raise InputError(
            f"the {data.name} split has {len(data.labels)} examples: no k in "
            f"{list(options.ks)} fits"
        )
    metric = _retrieval_metric(run.model)
    try:
        return {
            "metric": metric,
            "num_queries": int(len(data.labels)),
            "recall_at_k": eval_retrieval.recall_at_k(
                embeddings, data.labels, ks=ks, metric=metric
            ),
            "precision_at_k": eval_retrieval.precision_at_k(
                embeddings, data.labels, ks=ks, metric=metric
            ),
            "map_at_r": eval_retrieval.map_at_r(embeddings, data.labels, metric=metric),
        }
    except ValueError as err:
        raise InputError(f"retrieval on the {data.name} split: {err}") from None


def clustering_protocol(run: Run, data: SplitData, embeddings, options: EvalOptions) -> dict:
    """K-means on the split's embeddings, scored by NMI and AMI against the labels."""
    try:
        return eval_clustering.clustering_scores(
            embeddings,
            data.labels,
            n_clusters=options.clusters or None,
            seed=_seed(run, options, 5),
        )
    except ValueError as err:
        raise InputError(f"clustering of the {data.name} split: {err}") from None


# ------------------------------------------------------------------------------------------------
# The Omniglot one-shot runs of Lake et al. (2015).


def omniglot_runs_protocol(run: Run, options: EvalOptions) -> dict:
    """Scores the official 20-way one-shot runs: per run and over all 400 trials.

    Each query is given the class of the nearest support image by the model's distance.

    Raises:
      InputError: see `read_omniglot_runs`, or runs of unequal sizes.
    """
    runs = read_omniglot_runs(options.runs_zip)
    shapes = {(len(r.support), len(r.queries)) for r in runs}
    if len(shapes) != 1:
        raise InputError(f"{options.runs_zip}: runs differ in size {sorted(shapes)}")
    shape = run.image_shape
    support = decode_encoded_images(
        [b for r in runs for b in r.support],
        shape,
        [f"{r.name}/{f}" for r in runs for f in r.support_files],
    )
    queries = decode_encoded_images(
        [b for r in runs for b in r.queries],
        shape,
        [f"{r.name}/{f}" for r in runs for f in r.query_files],
    )
    batch = options.batch_size or run.config.eval_batch_size
    emb_support = embed(run.model, support, batch)
    emb_queries = embed(run.model, queries, batch)
    _check_finite(emb_support, "the one-shot runs")
    _check_finite(emb_queries, "the one-shot runs")
    e, (n, q) = len(runs), shapes.pop()
    accuracies = _episode_accuracies(
        run.model,
        emb_support.reshape(e, n, 1, -1),
        emb_queries.reshape(e, q, -1),
        np.stack([r.targets for r in runs]),
    )
    accuracy = float(np.mean(accuracies))  # Every run has q queries: the mean over all trials.
    return {
        "runs_zip": os.path.abspath(options.runs_zip),
        "num_runs": e,
        "n_way": n,
        "trials": e * q,
        "accuracy": accuracy,
        "error_rate": 1.0 - accuracy,
        "per_run_accuracy": {r.name: float(a) for r, a in zip(runs, accuracies, strict=True)},
        "image_shape": list(shape),
        # Pixel statistics of what the model saw: strokes 0 on background 255, as in training.
        "mean_query_pixel": float(queries.mean()),
    }


# ------------------------------------------------------------------------------------------------
# The evaluate recipe.

_SPLIT_PROTOCOLS = {
    "oneshot": oneshot_protocol,
    "retrieval": retrieval_protocol,
    "clustering": clustering_protocol,
}


def _write_plot(figure_fn, path: str, written: dict, name: str) -> None:
    try:
        figure = figure_fn()
    except ValueError as err:  # e.g. a one-class pair set: no ROC to draw.
        log.warning("plot %s skipped: %s", name, err)
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    written[name] = plots.save_png(figure, path)


def evaluate(workdir: str, protocols, options: EvalOptions | None = None) -> dict:
    """Runs evaluation protocols on a finished run and writes their reports.

    The split (when a protocol needs one) is rebuilt and embedded once for all protocols.

    Args:
      workdir: the run directory.
      protocols: protocol names (a str, or a sequence), from `PROTOCOLS`.
      options: `EvalOptions`; defaults when None.

    Returns:
      {protocol: result}; each result is also written to `workdir/eval/`, named by
      `report_filename`.

    Raises:
      InputError: bad options, a workdir without a finished run, data that no longer matches
        the run, an uncalibrated model (verification), or a protocol the data cannot serve.
    """
    options = options or EvalOptions()
    if isinstance(protocols, str):
        protocols = [p.strip() for p in protocols.split(",") if p.strip()]
    protocols = list(dict.fromkeys(protocols))
    options.check(protocols)
    if options.projector and protocols == ["omniglot_runs"]:
        raise InputError(
            "--projector writes a split's embeddings: add a split protocol "
            "(verification, oneshot, retrieval or clustering)"
        )
    run = load_run(workdir)
    if "verification" in protocols:
        run.require_threshold()  # Fail before the data is loaded.
    can_plot = options.plots and plots.available()
    if options.plots and not can_plot:
        log.warning("matplotlib is not installed: no plots written (pip install matplotlib)")
    split_protocols = [p for p in protocols if p != "omniglot_runs"]
    results, written = {}, {}
    common = {
        "workdir": os.path.abspath(workdir),
        "model": {
            "threshold": run.threshold,
            "threshold_rule": run.config.threshold_rule,
            "distance_metric": run.model.distance_metric,
            "pair_head": getattr(run.model, "head", None) is not None,
            "image_shape": list(run.image_shape),
        },
    }
    if split_protocols:
        start = time.perf_counter()
        data = load_split(run, options.split, options.manual_dir, options.data_dir, options.dataset)
        embeddings = embed(run.model, data.images, options.batch_size or run.config.eval_batch_size)
        _check_finite(embeddings, f"the {data.name} split")
        data_info = {
            "dataset": options.dataset or run.config.dataset,
            "split": data.name,
            "split_by": run.config.split_by,
            "num_examples": int(len(data.labels)),
            "num_classes": int(np.unique(data.labels).size),
        }
        plot_dir = os.path.join(workdir, PLOTS_DIR)
        for protocol in split_protocols:
            t0 = time.perf_counter()
            if protocol == "verification":
                result, distances, same = verification_protocol(run, data, embeddings, options)
                if can_plot:
                    threshold = run.threshold
                    title = f"{data.name} pairs"
                    _write_plot(
                        lambda d=distances, s=same, t=threshold, ti=title: plots.roc_figure(
                            d, s, t, title=f"ROC, {ti}"
                        ),
                        os.path.join(plot_dir, f"{data.name}_roc_curve.png"),
                        written,
                        "roc_curve",
                    )
                    _write_plot(
                        lambda d=distances, s=same, t=threshold, ti=title: (
                            plots.distance_histogram_figure(d, s, t, title=f"Distances, {ti}")
                        ),
                        os.path.join(plot_dir, f"{data.name}_distance_histograms.png"),
                        written,
                        "distance_histograms",
                    )
            else:
                result = _SPLIT_PROTOCOLS[protocol](run, data, embeddings, options)
            results[protocol] = {
                "protocol": protocol,
                **common,
                "data": data_info,
                **result,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        if can_plot:
            points, method = embedding_map.project_2d(
                embeddings, options.projection, seed=_seed(run, options, 6)
            )
            _write_plot(
                lambda: plots.embedding_map_figure(
                    points,
                    data.labels,
                    data.class_names,
                    title=f"{data.name} split, {method.upper()}",
                ),
                os.path.join(plot_dir, f"{data.name}_embedding_map.png"),
                written,
                "embedding_map",
            )
        if options.projector:
            files = embedding_map.write_projector(
                os.path.join(workdir, PROJECTOR_DIR),
                embeddings,
                data.labels,
                class_names=data.class_names,
                images=data.images,
                tensor_name=f"{data.name}_embeddings",
            )
            written["projector"] = os.path.dirname(files[embedding_map.PROJECTOR_CONFIG])
        log.info("split protocols took %.1f s", time.perf_counter() - start)
    if "omniglot_runs" in protocols:
        t0 = time.perf_counter()
        results["omniglot_runs"] = {
            "protocol": "omniglot_runs",
            **common,
            **omniglot_runs_protocol(run, options),
            "seconds": round(time.perf_counter() - t0, 3),
        }
    eval_dir = os.path.join(workdir, EVAL_DIR)
    os.makedirs(eval_dir, exist_ok=True)
    for protocol, result in results.items():
        if protocol != "omniglot_runs":
            result["plots"] = {k: v for k, v in written.items() if k != "projector"}
            result["projector"] = written.get("projector")
        wd.write_json_atomic(
            os.path.join(eval_dir, report_filename(protocol, options.split)), result
        )
    return results


def report_filename(protocol: str, split: str) -> str:
    """`<protocol>.json` for the test split (and the runs), else `<protocol>_<split>.json`."""
    if split == "test" or protocol == "omniglot_runs":
        return f"{protocol}.json"
    return f"{protocol}_{split}.json"


def headline(protocol: str, result: dict) -> dict:
    """The few numbers of a protocol's result worth one line of a log."""
    if protocol == "verification":
        report = result["report"]
        out = {k: round(report[k], 4) for k in ("auc", "eer", "accuracy", "threshold")}
        if "bootstrap_ci95" in result:
            out["auc_ci95"] = [round(v, 4) for v in result["bootstrap_ci95"]["auc"]]
            out["eer_ci95"] = [round(v, 4) for v in result["bootstrap_ci95"]["eer"]]
        return out
    if protocol == "oneshot":
        return {
            k: round(v["accuracy"], 4) for k, v in result["episodes"].items() if "accuracy" in v
        }
    if protocol == "retrieval":
        return {
            "recall_at_1": round(result["recall_at_k"][min(result["recall_at_k"])], 4),
            "map_at_r": round(result["map_at_r"], 4),
        }
    if protocol == "clustering":
        return {"nmi": round(result["nmi"], 4), "ami": round(result["ami"], 4)}
    return {"accuracy": round(result["accuracy"], 4), "trials": result["trials"]}
