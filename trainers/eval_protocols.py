"""The evaluation protocols: each scores a finished run's embeddings of one split.

* `verification`: the fixed pair set of the split (the run's own test or calibration pairs,
  rebuilt by `TrainConfig.held_out_pairs` as training drew them) scored at the
  model's calibrated threshold — never re-tuned here — with bootstrap CIs of AUC and EER;
* `oneshot`: seeded N-way k-shot episodes (several N and k);
* `retrieval`: recall@k, precision@k and MAP@R, leave-one-out within the split;
* `clustering`: k-means on the embeddings, scored by NMI and AMI;
* `omniglot_runs`: the 20 official 20-way one-shot runs of Lake et al. (2015), read straight
  from `all_runs.zip` (no split needed).

Each is an `EvalProtocol` in the `PROTOCOLS` registry (`name`, `uses_split`, `run(context)`,
`headline(result)`), so `trainers.evaluation.evaluate` runs any of them the same way. The
metrics themselves are numpy code in `siamese_tf.evaluation`; this module picks the data,
seeds and model distances for them.
"""

from __future__ import annotations

import math
import os

import numpy as np

from siamese_tf import evaluation as eval_metrics
from siamese_tf import plots
from siamese_tf.data import fixed_pairs
from siamese_tf.data.images import decode_encoded_images
from siamese_tf.data.one_shot_runs import read_omniglot_runs
from siamese_tf.errors import InputError
from siamese_tf.evaluation import clustering as eval_clustering
from siamese_tf.evaluation import oneshot as eval_oneshot
from siamese_tf.evaluation import retrieval as eval_retrieval
from siamese_tf.evaluation.episodes import source_episodes
from siamese_tf.inference import embed
from trainers.eval_context import EvalContext, EvalOptions
from trainers.finished_run import Run, SplitData, check_finite, model_distances

# (query, support) pairs a pair-head model scores per chunk of one-shot episodes.
_MAX_HEAD_PAIRS = 1 << 18


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


class EvalProtocol:
    """The interface of an evaluation protocol; `PROTOCOLS` holds one instance of each.

    Attributes:
      name: the `--protocol` name, and the report's file name.
      uses_split: whether it scores the run's split (`EvalContext.load_split`); the others
        read their own data.
    """

    name: str = ""
    uses_split: bool = True

    def check_options(self, options: EvalOptions) -> None:
        """Refuses options this protocol cannot run with, before anything is loaded.

        Raises:
          InputError: naming the flag that fixes it.
        """

    def check_run(self, run: Run) -> None:
        """Refuses a run this protocol cannot score, before its data is loaded.

        Raises:
          InputError: naming the problem and the fix.
        """

    def run(self, context: EvalContext) -> dict:
        """The protocol's result (the report adds status, the model, the data and seconds).

        Raises:
          InputError: the data cannot serve this protocol (the report says why).
        """
        raise NotImplementedError

    def headline(self, result: dict) -> dict:
        """The few numbers of a successful result worth one line of a log."""
        raise NotImplementedError


class Verification(EvalProtocol):
    """Verification at the calibrated threshold on the split's fixed pair set."""

    name = "verification"

    def check_options(self, options: EvalOptions) -> None:
        if options.tta_shift:
            raise InputError(
                "--tta_shift does not apply to verification: its threshold was calibrated on "
                "embeddings without test-time augmentation; evaluate verification without it"
            )

    def check_run(self, run: Run) -> None:
        run.require_threshold()

    def run(self, context: EvalContext) -> dict:
        run, data, options = context.run, context.data, context.options
        threshold = run.require_threshold()
        if options.num_pairs:
            seed = options.seed_for(run, "eval_pairs")
            pairs = fixed_pairs(data.labels, options.num_pairs, seed=seed)
        else:  # The run's own pair set of the split ("all": its test pairs' size and seed).
            held_out = "calibration" if data.name == "calibration" else "test"
            pairs = run.config.held_out_pairs(held_out, data.labels)
            seed = run.config.held_out_pair_spec(held_out)[1]
        embeddings = context.embeddings
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
        title = f"{data.name} pairs"
        context.write_plot(
            "roc_curve",
            lambda: plots.roc_figure(distances, pairs.same, threshold, title=f"ROC, {title}"),
            f"{data.name}_roc_curve.png",
        )
        context.write_plot(
            "distance_histograms",
            lambda: plots.distance_histogram_figure(
                distances, pairs.same, threshold, title=f"Distances, {title}"
            ),
            f"{data.name}_distance_histograms.png",
        )
        return result

    def headline(self, result: dict) -> dict:
        report = result["report"]
        out = {k: round(report[k], 4) for k in ("auc", "eer", "accuracy", "threshold")}
        if "bootstrap_ci95" in result:
            out["auc_ci95"] = [round(v, 4) for v in result["bootstrap_ci95"]["auc"]]
            out["eer_ci95"] = [round(v, 4) for v in result["bootstrap_ci95"]["eer"]]
        return out


class OneShot(EvalProtocol):
    """N-way k-shot accuracy over seeded episodes, for every (N, k) asked.

    An (N, k) the split cannot fill (too few classes with k + queries examples) is reported as
    skipped with the reason; when none can, the protocol fails saying which `--ways` would fit.
    """

    name = "oneshot"

    def run(self, context: EvalContext) -> dict:
        run, data, options = context.run, context.data, context.options
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
                    context.embeddings[episodes.support],
                    context.embeddings[episodes.query],
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
            raise InputError(_no_episodes_fit(data, options))
        return {"episodes": results}

    def headline(self, result: dict) -> dict:
        return {
            k: round(v["accuracy"], 4) if "accuracy" in v else "skipped"
            for k, v in result["episodes"].items()
        }


def _no_episodes_fit(data: SplitData, options: EvalOptions) -> str:
    need = min(options.shots) + options.queries
    counts = np.unique(data.labels, return_counts=True)[1]
    eligible = int(np.sum(counts >= need))
    asked = ",".join(str(n) for n in options.ways)
    if eligible >= 2:
        fix = f"use --ways={eligible} (or fewer; asked: {asked})"
    else:
        fix = "evaluate a split with more classes (--split, --dataset)"
    return (
        f"no one-shot episodes fit the {data.name} split: it has {eligible} classes with "
        f"{need}+ examples (k-shot + queries) and N-way episodes need N of them; {fix}"
    )


class Retrieval(EvalProtocol):
    """Recall@k, precision@k and MAP@R, each example querying the rest of the split."""

    name = "retrieval"

    def run(self, context: EvalContext) -> dict:
        data, embeddings, options = context.data, context.embeddings, context.options
        ks = sorted({int(k) for k in options.ks if k < len(data.labels)})
        if not ks:
            raise InputError(
                f"the {data.name} split has {len(data.labels)} examples: no k in "
                f"{list(options.ks)} fits"
            )
        metric = _retrieval_metric(context.run.model)
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

    def headline(self, result: dict) -> dict:
        return {
            "recall_at_1": round(result["recall_at_k"][min(result["recall_at_k"])], 4),
            "map_at_r": round(result["map_at_r"], 4),
        }


class Clustering(EvalProtocol):
    """K-means on the split's embeddings, scored by NMI and AMI against the labels."""

    name = "clustering"

    def run(self, context: EvalContext) -> dict:
        data, options = context.data, context.options
        try:
            return eval_clustering.clustering_scores(
                context.embeddings,
                data.labels,
                n_clusters=options.clusters or None,
                seed=options.seed_for(context.run, "clustering"),
            )
        except ValueError as err:
            raise InputError(f"clustering of the {data.name} split: {err}") from None

    def headline(self, result: dict) -> dict:
        return {"nmi": round(result["nmi"], 4), "ami": round(result["ami"], 4)}


class OmniglotRuns(EvalProtocol):
    """The official 20-way one-shot runs of Lake et al. (2015): per run and over all trials.

    Read straight from `all_runs.zip` (no split needed); each query is given the class of the
    nearest support image by the model's distance.
    """

    name = "omniglot_runs"
    uses_split = False

    def check_options(self, options: EvalOptions) -> None:
        if not options.runs_zip:
            raise InputError("protocol omniglot_runs needs --runs_zip=PATH/all_runs.zip")

    def run(self, context: EvalContext) -> dict:
        """Raises: InputError: see `read_omniglot_runs`, or runs of unequal sizes."""
        run, options = context.run, context.options
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
        emb_support = embed(run.model, support, batch, options.tta_shift)
        emb_queries = embed(run.model, queries, batch, options.tta_shift)
        check_finite(emb_support, "the one-shot runs")
        check_finite(emb_queries, "the one-shot runs")
        e, (n, q) = len(runs), shapes.pop()
        accuracies = episode_accuracies(
            run.model,
            emb_support.reshape(e, n, 1, -1),
            emb_queries.reshape(e, q, -1),
            np.stack([r.targets for r in runs]),
        )
        accuracy = float(np.mean(accuracies))  # Every run has q queries: the mean of all trials.
        return {
            "runs_zip": os.path.abspath(options.runs_zip),
            "num_runs": e,
            "n_way": n,
            "trials": e * q,
            "accuracy": accuracy,
            "error_rate": 1.0 - accuracy,
            "per_run_accuracy": {r.name: float(a) for r, a in zip(runs, accuracies, strict=True)},
            "image_shape": list(shape),
            # Pixel statistics of what the model saw: strokes 0 on background 255, as trained.
            "mean_query_pixel": float(queries.mean()),
        }

    def headline(self, result: dict) -> dict:
        return {"accuracy": round(result["accuracy"], 4), "trials": result["trials"]}


# The protocols by name, in the order `--help` lists them.
PROTOCOLS = {
    protocol.name: protocol
    for protocol in (Verification(), OneShot(), Retrieval(), Clustering(), OmniglotRuns())
}


def resolve(names) -> list[EvalProtocol]:
    """The protocols of a comma-separated string or a sequence of names, each once, in order.

    Raises:
      InputError: an unknown name, or none.
    """
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in PROTOCOLS]
    if unknown or not names:
        raise InputError(
            f"unknown protocol {', '.join(unknown) or '(none)'}; choose from: "
            f"{', '.join(PROTOCOLS)} (comma-separated for several)"
        )
    return [PROTOCOLS[n] for n in names]
