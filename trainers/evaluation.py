"""The evaluate recipe: run evaluation protocols on a finished run and write their reports.

Everything here starts from a workdir (`config.json` + `model.keras`) and needs no flags, so
`launch.evaluate` is thin and the logic is testable directly. `evaluate` rebuilds the run's
data (`trainers.finished_run.load_split`), embeds one split once and runs one or more of the
protocols of `trainers.eval_protocols` on it (`omniglot_runs` reads its own zip).

Each writes `eval/<protocol>.json` (`eval/<protocol>_<split>.json` on the calibration split or
another dataset's `all`, so they never overwrite the test figures); plots go to `plots/` and
projector files to `logs/projector/`. Runs on host, in one process (no strategy needed).
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np

from siamese_tf import embedding_map, plots
from siamese_tf.errors import InputError
from siamese_tf.inference import embed
from trainers import workdir as wd
from trainers.eval_protocols import (
    EvalOptions,
    clustering_protocol,
    omniglot_runs_protocol,
    oneshot_protocol,
    retrieval_protocol,
    verification_protocol,
)
from trainers.finished_run import check_finite, load_run, load_split

EVAL_DIR = "eval"
PLOTS_DIR = "plots"
PROJECTOR_DIR = os.path.join(wd.LOGS, "projector")

log = logging.getLogger(__name__)


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

    The split (when a protocol needs one) is rebuilt and embedded once for all protocols. Each
    protocol runs on its own: one the data cannot serve (too few classes for N-way episodes, an
    uncalibrated model for verification, ...) gets a report with `status: "failed"` and its
    `error`, and the others complete. A successful report has `status: "ok"`.

    Args:
      workdir: the run directory.
      protocols: protocol names (a str, or a sequence), from `eval_protocols.PROTOCOLS`.
      options: `EvalOptions`; defaults when None.

    Returns:
      {protocol: result}; each result is also written to `workdir/eval/`, named by
      `report_filename`.

    Raises:
      InputError: bad options, a workdir without a finished run, data that no longer matches
        the run, or every protocol failed (their reports are written first).
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
    can_plot = options.plots and plots.available()
    if options.plots and not can_plot:
        log.warning("matplotlib is not installed: no plots written (pip install matplotlib)")
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
    if "verification" in protocols:
        try:
            run.require_threshold()  # Known before the data is loaded.
        except InputError as err:
            results["verification"] = _failed("verification", common, err)
    split_protocols = [p for p in protocols if p != "omniglot_runs" and p not in results]
    if split_protocols:
        start = time.perf_counter()
        data = load_split(run, options.split, options.manual_dir, options.data_dir, options.dataset)
        embeddings = embed(run.model, data.images, options.batch_size or run.config.eval_batch_size)
        check_finite(embeddings, f"the {data.name} split")
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
            try:
                result = _run_split_protocol(
                    protocol,
                    run,
                    data,
                    embeddings,
                    options,
                    plot_dir if can_plot else None,
                    written,
                )
            except InputError as err:
                results[protocol] = {**_failed(protocol, common, err), "data": data_info}
                continue
            results[protocol] = {
                "protocol": protocol,
                "status": "ok",
                **common,
                "data": data_info,
                **result,
                "seconds": round(time.perf_counter() - t0, 3),
            }
        if can_plot:
            points, method = embedding_map.project_2d(
                embeddings, options.projection, seed=options.seed_for(run, "projection")
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
        try:
            results["omniglot_runs"] = {
                "protocol": "omniglot_runs",
                "status": "ok",
                **common,
                **omniglot_runs_protocol(run, options),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        except InputError as err:
            results["omniglot_runs"] = _failed("omniglot_runs", common, err)
    results = {p: results[p] for p in protocols}  # In the order asked.
    eval_dir = os.path.join(workdir, EVAL_DIR)
    os.makedirs(eval_dir, exist_ok=True)
    for protocol, result in results.items():
        if protocol != "omniglot_runs" and result["status"] == "ok":
            result["plots"] = {k: v for k, v in written.items() if k != "projector"}
            result["projector"] = written.get("projector")
        wd.write_json_atomic(
            os.path.join(eval_dir, report_filename(protocol, options.split)), result
        )
    if all(r["status"] == "failed" for r in results.values()):
        raise InputError("; ".join(f"{p}: {r['error']}" for p, r in results.items()))
    return results


def _failed(protocol: str, common: dict, err: Exception) -> dict:
    """The report of a protocol that could not run: why, in the user's terms."""
    return {"protocol": protocol, "status": "failed", "error": str(err), **common}


def _run_split_protocol(protocol, run, data, embeddings, options, plot_dir, written) -> dict:
    """One split protocol's result; verification also draws its ROC and histograms."""
    if protocol != "verification":
        return _SPLIT_PROTOCOLS[protocol](run, data, embeddings, options)
    result, distances, same = verification_protocol(run, data, embeddings, options)
    if plot_dir is not None:
        threshold, title = run.threshold, f"{data.name} pairs"
        _write_plot(
            lambda: plots.roc_figure(distances, same, threshold, title=f"ROC, {title}"),
            os.path.join(plot_dir, f"{data.name}_roc_curve.png"),
            written,
            "roc_curve",
        )
        _write_plot(
            lambda: plots.distance_histogram_figure(
                distances, same, threshold, title=f"Distances, {title}"
            ),
            os.path.join(plot_dir, f"{data.name}_distance_histograms.png"),
            written,
            "distance_histograms",
        )
    return result


def report_filename(protocol: str, split: str) -> str:
    """`<protocol>.json` for the test split (and the runs), else `<protocol>_<split>.json`."""
    if split == "test" or protocol == "omniglot_runs":
        return f"{protocol}.json"
    return f"{protocol}_{split}.json"


def headline(protocol: str, result: dict) -> dict:
    """The few numbers of a protocol's result worth one line of a log."""
    if result.get("status") == "failed":
        return {"status": "failed", "error": result["error"]}
    if protocol == "verification":
        report = result["report"]
        out = {k: round(report[k], 4) for k in ("auc", "eer", "accuracy", "threshold")}
        if "bootstrap_ci95" in result:
            out["auc_ci95"] = [round(v, 4) for v in result["bootstrap_ci95"]["auc"]]
            out["eer_ci95"] = [round(v, 4) for v in result["bootstrap_ci95"]["eer"]]
        return out
    if protocol == "oneshot":
        return {
            k: round(v["accuracy"], 4) if "accuracy" in v else "skipped"
            for k, v in result["episodes"].items()
        }
    if protocol == "retrieval":
        return {
            "recall_at_1": round(result["recall_at_k"][min(result["recall_at_k"])], 4),
            "map_at_r": round(result["map_at_r"], 4),
        }
    if protocol == "clustering":
        return {"nmi": round(result["nmi"], 4), "ami": round(result["ami"], 4)}
    return {"accuracy": round(result["accuracy"], 4), "trials": result["trials"]}
