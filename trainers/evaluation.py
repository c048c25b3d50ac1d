"""The evaluate recipe: run evaluation protocols on a finished run and write their reports.

Everything here starts from a workdir (`config.json` + `model.keras`) and needs no flags, so
`launch.evaluate` is thin and the logic is testable directly. `evaluate` rebuilds the run's
data (`trainers.finished_run.load_split`), embeds one split once and runs one or more of the
protocols of `trainers.eval_protocols` on it (`omniglot_runs` reads its own zip): every
protocol through the same interface, none by name.

Each writes `eval/<protocol>.json` (`eval/<protocol>_<split>.json` on the calibration split or
another dataset's `all`, so they never overwrite the test figures); plots go to `plots/` and
projector files to `logs/projector/`. Runs on host, in one process (no strategy needed).
"""

from __future__ import annotations

import logging
import os
import time

from siamese_tf import embedding_map, plots
from siamese_tf.errors import InputError
from trainers import workdir as wd
from trainers.eval_context import EvalContext, EvalOptions
from trainers.eval_protocols import PROTOCOLS, resolve
from trainers.finished_run import load_run, load_split

__all__ = ["EvalOptions", "evaluate", "headline", "load_run", "load_split", "report_filename"]

EVAL_DIR = "eval"
PLOTS_DIR = "plots"
PROJECTOR_DIR = os.path.join(wd.LOGS, "projector")

log = logging.getLogger(__name__)


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
    chosen = resolve(protocols)
    options.check(chosen)
    if options.projector and not any(p.uses_split for p in chosen):
        names = [p.name for p in PROTOCOLS.values() if p.uses_split]
        raise InputError(
            "--projector writes a split's embeddings: add a split protocol "
            f"({', '.join(names[:-1])} or {names[-1]})"
        )
    run = load_run(workdir)
    options.check_image_shape(run.image_shape)
    can_plot = options.plots and plots.available()
    if options.plots and not can_plot:
        log.warning("matplotlib is not installed: no plots written (pip install matplotlib)")
    context = EvalContext(run, options, os.path.join(workdir, PLOTS_DIR) if can_plot else None)
    common = {
        "workdir": os.path.abspath(workdir),
        "model": {
            "threshold": run.threshold,
            "threshold_rule": run.config.threshold_rule,
            "distance_metric": run.model.distance_metric,
            "pair_head": getattr(run.model, "head", None) is not None,
            "image_shape": list(run.image_shape),
        },
        "tta_shift": options.tta_shift,
    }
    results = {}
    for protocol in chosen:  # What each can know before any data is loaded.
        try:
            protocol.check_run(run)
        except InputError as err:
            results[protocol.name] = _failed(protocol.name, common, err)
    ready = [p for p in chosen if p.name not in results]
    if any(p.uses_split for p in ready):
        start = time.perf_counter()
        context.load_split()
        log.info("the split loaded and embedded in %.1f s", time.perf_counter() - start)
    for protocol in ready:
        data = {"data": context.data_info()} if protocol.uses_split else {}
        t0 = time.perf_counter()
        try:
            result = protocol.run(context)
        except InputError as err:
            results[protocol.name] = {**_failed(protocol.name, common, err), **data}
            continue
        results[protocol.name] = {
            "protocol": protocol.name,
            "status": "ok",
            **common,
            **data,
            **result,
            "seconds": round(time.perf_counter() - t0, 3),
        }
    projector = _write_split_outputs(context, workdir) if context.data is not None else None
    results = {p.name: results[p.name] for p in chosen}  # In the order asked.
    eval_dir = os.path.join(workdir, EVAL_DIR)
    os.makedirs(eval_dir, exist_ok=True)
    for protocol in chosen:
        result = results[protocol.name]
        if protocol.uses_split and result["status"] == "ok":
            result["plots"] = dict(context.plots)
            result["projector"] = projector
        wd.write_json_atomic(
            os.path.join(
                eval_dir, report_filename(protocol.name, options.split, options.tta_shift)
            ),
            result,
        )
    if all(r["status"] == "failed" for r in results.values()):
        raise InputError("; ".join(f"{p}: {r['error']}" for p, r in results.items()))
    return results


def _write_split_outputs(context: EvalContext, workdir: str) -> str | None:
    """The split's embedding map (a plot) and, when asked, its projector files.

    Returns:
      The projector folder, or None.
    """
    data, embeddings, options = context.data, context.embeddings, context.options
    if context.plot_dir is not None:
        points, method = embedding_map.project_2d(
            embeddings, options.projection, seed=options.seed_for(context.run, "projection")
        )
        context.write_plot(
            "embedding_map",
            lambda: plots.embedding_map_figure(
                points, data.labels, data.class_names, title=f"{data.name} split, {method.upper()}"
            ),
            f"{data.name}_embedding_map.png",
        )
    if not options.projector:
        return None
    files = embedding_map.write_projector(
        os.path.join(workdir, PROJECTOR_DIR),
        embeddings,
        data.labels,
        class_names=data.class_names,
        images=data.images,
        tensor_name=f"{data.name}_embeddings",
    )
    return os.path.dirname(files[embedding_map.PROJECTOR_CONFIG])


def _failed(protocol: str, common: dict, err: Exception) -> dict:
    """The report of a protocol that could not run: why, in the user's terms."""
    return {"protocol": protocol, "status": "failed", "error": str(err), **common}


def report_filename(protocol: str, split: str, tta_shift: int = 0) -> str:
    """`<protocol>.json` for the test split (and protocols without a split, e.g. the runs),
    else `<protocol>_<split>.json`; `_tta<N>` before `.json` with test-time augmentation, so
    it does not replace the plain report."""
    suffix = f"_tta{tta_shift}" if tta_shift else ""
    if split == "test" or not PROTOCOLS[protocol].uses_split:
        return f"{protocol}{suffix}.json"
    return f"{protocol}_{split}{suffix}.json"


def headline(protocol: str, result: dict) -> dict:
    """The few numbers of a protocol's result worth one line of a log."""
    if result.get("status") == "failed":
        return {"status": "failed", "error": result["error"]}
    return PROTOCOLS[protocol].headline(result)
