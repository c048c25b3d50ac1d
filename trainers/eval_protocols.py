"""The evaluation protocols: each scores a finished run's embeddings of one split.

* `verification`: the fixed pair set of the split (the run's own test or calibration pairs,
  rebuilt by `TrainConfig.held_out_pairs` as training drew them) scored at the
  model's calibrated threshold — never re-tuned here — with bootstrap CIs of AUC and EER;
* `oneshot`: seeded N-way k-shot episodes (several N and k);
* `retrieval`: recall@k, precision@k and MAP@R, leave-one-out within the split;
* `clustering`: k-means on the embeddings, scored by NMI and AMI;
* `omniglot_runs`: the 20 official 20-way one-shot runs of Lake et al. (2015), read straight
  from `all_runs.zip` (no split needed).

The metrics themselves are numpy code in `siamese_tf.evaluation`; this module picks the data,
seeds and model distances for them.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from siamese_tf import embedding_map
from siamese_tf.data import fixed_pairs, source_episodes
from siamese_tf.data.images import decode_encoded_images
from siamese_tf.data.one_shot_runs import read_omniglot_runs
from siamese_tf.errors import InputError
from siamese_tf.evaluation import clustering as eval_clustering
from siamese_tf.evaluation import metrics as eval_metrics
from siamese_tf.evaluation import oneshot as eval_oneshot
from siamese_tf.evaluation import retrieval as eval_retrieval
from siamese_tf.inference import embed
from siamese_tf.seeds import derive
from trainers.finished_run import (
    SPLITS,
    Run,
    SplitData,
    check_finite,
    check_split_dataset,
    model_distances,
)

PROTOCOLS = ("verification", "oneshot", "retrieval", "clustering", "omniglot_runs")
# (query, support) pairs a pair-head model scores per chunk of one-shot episodes.
_MAX_HEAD_PAIRS = 1 << 18


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
        check_split_dataset(self.split, self.dataset)
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
        if min(self.ways) < 2:
            raise InputError(
                f"--ways must be >= 2, got {','.join(str(v) for v in self.ways)}: a 1-way episode "
                "has one candidate class, so it is always right"
            )
        if "omniglot_runs" in protocols and not self.runs_zip:
            raise InputError("protocol omniglot_runs needs --runs_zip=PATH/all_runs.zip")
        if self.seed is not None and self.seed < 0:
            raise InputError(f"seed must be >= 0, got {self.seed}")
        if self.num_pairs == 1:
            raise InputError("num_pairs must be 0 (the run's pair set) or >= 2")

    def seed_for(self, run: Run, stream: str) -> int:
        """The sub-seed of one named stream (`siamese_tf.seeds.STREAMS`) of `seed`, else of
        the run's seed."""
        return derive(self.seed if self.seed is not None else run.config.seed, stream)


def _retrieval_metric(model) -> str:
    """The retrieval metric that ranks like the model's distance (embedding models)."""
    # Angular distance is monotone in cosine similarity; L2 and squared L2 rank alike.
    return "cosine" if getattr(model, "distance_metric", "L2") == "angular" else "euclidean"


def episode_accuracies(model, support, query, targets) -> np.ndarray:
    """Per-episode accuracy: each query gets the class of the closest support (mean over k).

    Embedding models use `siamese_tf.evaluation.oneshot.episode_accuracies` with the metric
    that ranks like theirs; a pair-head model has no embedding metric, so its own distances
    (1 - p(same)) are computed for every (query, support) pair and reduced the same way.
    """
    if getattr(model, "head", None) is None:
        return eval_oneshot.episode_accuracies(
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
    if options.num_pairs:
        num_pairs, seed = options.num_pairs, options.seed_for(run, "eval_pairs")
    else:  # The run's own pair set of the split ("all": its test pairs' size and seed).
        held_out = "calibration" if data.name == "calibration" else "test"
        num_pairs, seed = run.config.held_out_pair_spec(held_out)
    pairs = fixed_pairs(data.labels, num_pairs, seed=seed)
    distances = model_distances(run.model, embeddings[pairs.a], embeddings[pairs.b])
    report = eval_metrics.verification_report(distances, pairs.same, threshold)
    result = {"pairs": {"num_pairs": len(pairs), "seed": seed}, "report": report}
    if options.bootstrap:
        boot_seed = options.seed_for(run, "bootstrap")
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
      InputError: no (N, k) could be run (the message says which `--ways` would fit).
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
                    seed=options.seed_for(run, "eval_episodes"),
                )
            except InputError as err:
                results[key] = {"skipped": str(err)}
                continue
            accuracies = episode_accuracies(
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
        need = min(options.shots) + options.queries
        counts = np.unique(data.labels, return_counts=True)[1]
        eligible = int(np.sum(counts >= need))
        asked = ",".join(str(n) for n in options.ways)
        if eligible >= 2:
            fix = f"use --ways={eligible} (or fewer; asked: {asked})"
        else:
            fix = "evaluate a split with more classes (--split, --dataset)"
        raise InputError(
            f"no one-shot episodes fit the {data.name} split: it has {eligible} classes with "
            f"{need}+ examples (k-shot + queries) and N-way episodes need N of them; {fix}"
        )
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
            seed=options.seed_for(run, "clustering"),
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
    check_finite(emb_support, "the one-shot runs")
    check_finite(emb_queries, "the one-shot runs")
    e, (n, q) = len(runs), shapes.pop()
    accuracies = episode_accuracies(
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
