"""Loss benchmark: every batch loss and ArcFace vs its peer and the pairwise-similarity floor.

Triplet (the first table). For each batch size B (P×K batches, 128-d L2-normalised float32
embeddings):

* `ours`: `siamese_tf.losses.TripletSemiHardLoss` — forward and gradient;
* `tiled`: TFA's O(B³) formulation (`tests/tfa_reference.py`) — forward and gradient; skipped
  where its B³ tensors would not fit (`tiled_limit_gb`), and then measured at `anchor_size`
  and scaled by (B / anchor_size)^e, flagged as an extrapolation (`_growth_exponent`: why e);
* `floor`: the B×B pairwise-distance matrix alone — forward and gradient of its sum, the least
  any mining loss has to do.

The pair-based and proxy losses (the second table), at every B, forward and gradient:

* `ours:multi_similarity`, `ours:circle`, `ours:supcon` (`siamese_tf.losses`) against the
  `floor:cosine` row: the B×B cosine-similarity matrix of the normalised embeddings, forward and
  gradient of its sum;
* `ours:arcface` (`ClassProxies` cosines + `ArcFaceLoss`, C = B/K classes, gradient to the
  embeddings and the proxies) against `floor:proxies`: the B×C cosine matrix alone;
* the peers: TF Similarity 0.17's published algorithms (`tfsim:multi_similarity`,
  `tfsim:circle`, `tfsim:arcface`; `tfsim_reference.py`, re-implemented from their formulas
  and run here). TF Similarity has no supervised contrastive loss (its `SimCLRLoss` is the
  unsupervised NT-Xent), so SupCon has no peer row.

Time: per call, median of `repeats` samples of back-to-back calls (~0.2 s each) after a
warm-up, inside one `tf.function`, in this process; at each B every implementation except the
tiled one is timed round-robin, side by side, so the ratios to the floors hold on a machine
whose load changes.
Memory: a fresh subprocess per (implementation, B) — RSS peaks cannot be reset in-process — that
reports its peak RSS (VmHWM; `ru_maxrss` would include the parent's peak, see
`process_memory.peak_rss_mb`) and the peak minus its peak after importing TensorFlow and
building the inputs (the delta).

Called by `python -m launch.benchmark --suite=mining`; no flags here.
"""

from __future__ import annotations

import importlib.util
import math
import os
import statistics
import time

from launch import WORKSPACE
from launch.benchmarks.process_memory import peak_rss_mb, run_in_subprocess

_GB = 1024**3
IMPLS = ("ours", "tiled", "floor")
# Pair-based and proxy losses: (implementation, the floor it is compared with).
LOSS_IMPLS = {
    "ours:multi_similarity": "floor:cosine",
    "tfsim:multi_similarity": "floor:cosine",
    "ours:circle": "floor:cosine",
    "tfsim:circle": "floor:cosine",
    "ours:supcon": "floor:cosine",
    "ours:arcface": "floor:proxies",
    "tfsim:arcface": "floor:proxies",
    "floor:cosine": None,
    "floor:proxies": None,
}


def _tfa_reference():
    """tests/tfa_reference.py, loaded by path (it is not part of an installed package)."""
    path = WORKSPACE / "tests" / "tfa_reference.py"
    spec = importlib.util.spec_from_file_location("tfa_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiled_bytes(batch_size: int) -> int:
    """Rough peak of the tiled formulation: about four live B³ float32 tensors."""
    return 4 * 4 * batch_size**3


def _inputs(batch_size: int, dim: int, samples_per_class: int):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(-(-batch_size // samples_per_class)), samples_per_class)
    labels = tf.constant(labels[:batch_size].astype(np.int32))
    emb = rng.normal(size=(batch_size, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return labels, tf.constant(emb)


def _value_fn(impl: str, batch_size: int, dim: int, samples_per_class: int):
    """`(value_fn(labels, emb), extra watched variables)` of one implementation."""
    import numpy as np
    import tensorflow as tf

    from launch.benchmarks import tfsim_reference
    from siamese_tf import distances, losses, similarity_losses

    if impl.endswith("arcface") or impl == "floor:proxies":
        classes = -(-batch_size // samples_per_class)
        rng = np.random.default_rng(1)
        kernel = tf.Variable(rng.normal(size=(dim, classes)).astype(np.float32))

        def cosines(emb):
            unit = tf.math.l2_normalize(emb, axis=1)
            return tf.matmul(unit, tf.math.l2_normalize(kernel, axis=0))

        if impl == "ours:arcface":
            loss = losses.ArcFaceLoss()
            return (lambda labels, emb: loss(labels, cosines(emb))), [kernel]
        if impl == "tfsim:arcface":
            return (lambda labels, e: tfsim_reference.arcface_loss(labels, e, kernel)), [kernel]
        return (lambda labels, emb: tf.reduce_sum(cosines(emb))), [kernel]
    if impl == "floor:cosine":
        similarity = similarity_losses.cosine_similarity_rows
        return (lambda labels, emb: tf.reduce_sum(similarity(emb))), []
    if impl == "floor":
        return (lambda labels, emb: tf.reduce_sum(distances.pairwise_distances(emb))), []
    if impl == "tiled":
        return _tfa_reference().triplet_semihard_loss, []
    if impl.startswith("tfsim:"):
        return getattr(tfsim_reference, f"{impl[len('tfsim:') :]}_loss"), []
    loss = {
        "ours": losses.TripletSemiHardLoss,
        "ours:multi_similarity": losses.MultiSimilarityLoss,
        "ours:circle": losses.CircleLoss,
        "ours:supcon": losses.SupConLoss,
    }[impl]()
    return (lambda labels, emb: loss(labels, emb)), []


def _step(impl: str, batch_size: int, dim: int, samples_per_class: int):
    """A tf.function `(labels, embeddings) -> (value, gradients)` for one implementation."""
    import tensorflow as tf

    value_fn, watched = _value_fn(impl, batch_size, dim, samples_per_class)

    @tf.function
    def step(labels, emb):
        with tf.GradientTape() as tape:
            tape.watch(emb)
            value = value_fn(labels, emb)
        return value, tape.gradient(value, [emb, *watched])

    return step


# Each timed sample runs enough back-to-back calls to last about this long: at B=1024 one call
# takes a few milliseconds, and a median of single calls moved a ratio to the floor between 1.2
# and 1.8 from one run to the next.
_SAMPLE_SECONDS = 0.2


def _calls_per_sample(step, labels, emb) -> int:
    """Warms `step` up (tracing it) and returns how many calls fill `_SAMPLE_SECONDS`."""
    step(labels, emb)[1][0].numpy()
    start = time.perf_counter()
    step(labels, emb)[1][0].numpy()
    return max(1, math.ceil(_SAMPLE_SECONDS / (time.perf_counter() - start)))


def _seconds_per_call(step, labels, emb, calls) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        result = step(labels, emb)
    result[1][0].numpy()
    return (time.perf_counter() - start) / calls


def _time_interleaved(impls, batch_size, dim, samples_per_class, repeats) -> dict:
    """Median seconds per call of each implementation, timed round-robin at one batch size.

    Round-robin rather than one after the other: on a shared machine the load changes over
    minutes, and a ratio to the floor is only meaningful from runs side by side.
    """
    labels, emb = _inputs(batch_size, dim, samples_per_class)
    steps = {impl: _step(impl, batch_size, dim, samples_per_class) for impl in impls}
    calls = {impl: _calls_per_sample(step, labels, emb) for impl, step in steps.items()}
    seconds = {impl: [] for impl in impls}
    for _ in range(repeats):
        for impl, step in steps.items():
            seconds[impl].append(_seconds_per_call(step, labels, emb, calls[impl]))
    return {impl: statistics.median(values) for impl, values in seconds.items()}


def peak_memory(impl: str, batch_size: int, dim: int, samples_per_class: int) -> dict:
    """Runs in a fresh process: baseline and peak RSS (MB) of two calls of one implementation.

    The baseline is the peak after importing TensorFlow and building the inputs.
    """
    labels, emb = _inputs(batch_size, dim, samples_per_class)
    baseline = peak_rss_mb()
    step = _step(impl, batch_size, dim, samples_per_class)
    for _ in range(2):
        step(labels, emb)[1][0].numpy()
    return {"baseline_mb": baseline, "peak_mb": peak_rss_mb()}


def _row(batch_size, impl, seconds=None, note="", peak_mb=None, delta_mb=None) -> dict:
    return {
        "batch_size": batch_size,
        "impl": impl,
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "delta_mb": delta_mb,
        "note": note,
    }


def _measure(impl, batch_size, dim, samples_per_class, repeats, seconds, memory, note=""):
    """One row: `seconds` (timed alone when None), peak memory from a fresh process (`memory`)."""
    if seconds is None:
        seconds = _time_interleaved((impl,), batch_size, dim, samples_per_class, repeats)[impl]
    if not memory:
        return _row(batch_size, impl, seconds, note or "memory not measured")
    try:
        mem = run_in_subprocess(peak_memory, impl, batch_size, dim, samples_per_class)
    except RuntimeError as err:
        return _row(batch_size, impl, seconds, note or str(err))
    row = _row(batch_size, impl, seconds, note, mem["peak_mb"], mem["peak_mb"] - mem["baseline_mb"])
    return {**row, "baseline_mb": mem["baseline_mb"]}


def _ratio(numerator, denominator):
    """`numerator / denominator`, or None when either is missing (or zero)."""
    return numerator / denominator if numerator and denominator else None


def _find(rows, impl, batch_size):
    for row in rows:
        if row["impl"] == impl and row["batch_size"] == batch_size and row["seconds"] is not None:
            return row
    return None


def _growth_exponent(rows, anchor, key):
    """Measured growth exponent of the tiled formulation below `anchor`, clamped to [2, 3].

    Extrapolating by B³ would assume the B³ tensors already dominate; the exponent measured
    between the two largest sizes is lower at small B, so it gives the conservative estimate.
    """
    smaller = [
        r
        for r in rows
        if r["impl"] == "tiled" and r["batch_size"] < anchor["batch_size"] and r.get(key)
    ]
    if not smaller:
        return 3.0
    below = max(smaller, key=lambda r: r["batch_size"])
    exponent = math.log(anchor[key] / below[key]) / math.log(
        anchor["batch_size"] / below["batch_size"]
    )
    return min(max(exponent, 2.0), 3.0)


def _tiled_at(rows, batch_size, anchor_size):
    """Tiled figures at `batch_size`: measured, or extrapolated from `anchor_size`."""
    row = _find(rows, "tiled", batch_size)
    if row is not None:
        return row["seconds"], row["peak_rss_mb"], row["delta_mb"], "measured"
    anchor = _find(rows, "tiled", anchor_size)
    if anchor is None or anchor["delta_mb"] is None:
        return None, None, None, "not measured"
    ratio = batch_size / anchor_size
    time_exp = _growth_exponent(rows, anchor, "seconds")
    memory_exp = _growth_exponent(rows, anchor, "delta_mb")
    delta = anchor["delta_mb"] * ratio**memory_exp
    return (
        anchor["seconds"] * ratio**time_exp,
        anchor["baseline_mb"] + delta,
        delta,
        f"extrapolated from B={anchor_size}: time x{ratio:g}^{time_exp:.2f}, "
        f"memory above baseline x{ratio:g}^{memory_exp:.2f} (growth measured below it)",
    )


def run(
    sizes=(256, 1024, 4096),
    dim: int = 128,
    repeats: int = 9,
    samples_per_class: int = 4,
    tiled_limit_gb: float = 12.0,
    anchor_size: int = 512,
    loss_impls=tuple(LOSS_IMPLS),
    measure_memory: bool = True,
) -> dict:
    """Measures every loss, its peer and its floor for each batch size.

    Args:
      sizes: batch sizes B.
      dim: embedding size.
      repeats: timed runs per measurement (the median is reported), after one warm-up. Nine:
        at B=1024 a call takes ~10 ms and five samples left a ratio moving by 0.1-0.3 between
        idle runs.
      samples_per_class: K of the P×K batches.
      tiled_limit_gb: skip the tiled formulation where `tiled_bytes(B)` exceeds this.
      anchor_size: B at which the tiled formulation is also measured when it is skipped at a
        requested size, to extrapolate from.
      loss_impls: the pair-based / proxy implementations measured (keys of `LOSS_IMPLS`).
      measure_memory: measure peak RSS in a subprocess per row (off: times only).

    Returns:
      dict with `rows` (one per measurement: batch_size, impl, seconds, peak_rss_mb, delta_mb,
      note) and the summary keys `speedup_vs_tiled_1024`, `memory_ratio_vs_tiled_1024` (peak RSS
      of the whole process, tiled / ours), `memory_delta_ratio_vs_tiled_1024` (peak minus
      baseline), `tiled_1024_source`, `seconds_4096`, `peak_mb_4096`, `delta_mb_4096`,
      `ratio_to_floor_4096` (our time / floor time) and `targets`; `losses`: per loss and B,
      our seconds and memory, the ratio to its floor and the peer's time (`loss_table`).
    """
    import tensorflow as tf

    rows = []
    skipped_any = False
    settings, limit = (dim, samples_per_class, repeats), tiled_limit_gb * _GB
    for batch_size in sizes:
        # Ours, the floors and the TF Similarity peers side by side (the tiled formulation,
        # up to 100x slower, alone).
        side_by_side = _time_interleaved(("ours", "floor", *loss_impls), batch_size, *settings)
        for impl in (*IMPLS, *loss_impls):
            if impl == "tiled" and tiled_bytes(batch_size) > limit:
                skipped_any = True
                need = tiled_bytes(batch_size) / _GB
                rows.append(_row(batch_size, impl, note=f"skipped: would need {need:.1f} GB"))
                continue
            seconds = side_by_side.get(impl)  # None: the tiled formulation, timed alone
            rows.append(_measure(impl, batch_size, *settings, seconds, measure_memory))
    if skipped_any and anchor_size not in sizes and tiled_bytes(anchor_size) <= limit:
        note = "extrapolation anchor"
        rows.append(_measure("tiled", anchor_size, *settings, None, measure_memory, note))

    result = {
        "rows": rows,
        "dim": dim,
        "samples_per_class": samples_per_class,
        "repeats": repeats,
        "tensorflow": tf.__version__,
        "cpus": os.cpu_count(),
    }
    ours_1024 = _find(rows, "ours", 1024) or {}
    ours_4096 = _find(rows, "ours", 4096) or {}
    floor_4096 = _find(rows, "floor", 4096) or {}
    tiled_s, tiled_peak, tiled_delta, source = _tiled_at(rows, 1024, anchor_size)
    ours_delta = ours_1024.get("delta_mb")
    result.update(
        tiled_1024_source=source,
        speedup_vs_tiled_1024=_ratio(tiled_s, ours_1024.get("seconds")),
        memory_ratio_vs_tiled_1024=_ratio(tiled_peak, ours_1024.get("peak_rss_mb")),
        memory_delta_ratio_vs_tiled_1024=_ratio(
            tiled_delta, None if ours_delta is None else max(ours_delta, 1.0)
        ),
        seconds_4096=ours_4096.get("seconds"),
        peak_mb_4096=ours_4096.get("peak_rss_mb"),
        delta_mb_4096=ours_4096.get("delta_mb"),
        ratio_to_floor_4096=_ratio(ours_4096.get("seconds"), floor_4096.get("seconds")),
    )

    def at_least(value, target):
        return None if value is None else value >= target

    def at_most(value, target):
        return None if value is None else value <= target

    result["targets"] = {
        "speedup_vs_tiled_1024>=20": at_least(result["speedup_vs_tiled_1024"], 20),
        "memory_ratio_vs_tiled_1024>=20": at_least(result["memory_ratio_vs_tiled_1024"], 20),
        "seconds_4096<=1": at_most(result["seconds_4096"], 1.0),
        "peak_mb_4096<=1536": at_most(result["peak_mb_4096"], 1536),
    }
    result["losses"] = loss_table(rows, sizes)
    for entry in result["losses"]:
        name = f"{entry['loss']}_{entry['batch_size']}_ratio_to_floor<=1.5"
        result["targets"][name] = at_most(entry["ratio_to_floor"], 1.5)
    return result


def loss_table(rows, sizes) -> list:
    """Per loss and B: our time and memory, the ratio to its floor, the peer's time."""
    table = []
    for batch_size in sizes:
        for loss in ("triplet_semihard", "multi_similarity", "circle", "supcon", "arcface"):
            if loss == "triplet_semihard":
                ours, floor = _find(rows, "ours", batch_size), _find(rows, "floor", batch_size)
                peer, peer_name = _find(rows, "tiled", batch_size), "tfa_tiled"
            else:
                ours = _find(rows, f"ours:{loss}", batch_size)
                floor = _find(rows, LOSS_IMPLS[f"ours:{loss}"], batch_size)
                peer, peer_name = _find(rows, f"tfsim:{loss}", batch_size), "tfsim"
            if ours is None:
                continue
            entry = {
                "loss": loss,
                "batch_size": batch_size,
                "seconds": ours["seconds"],
                "peak_rss_mb": ours["peak_rss_mb"],
                "delta_mb": ours["delta_mb"],
                "floor_seconds": floor["seconds"] if floor else None,
                "ratio_to_floor": _ratio(ours["seconds"], floor and floor["seconds"]),
                "peer": peer_name if peer else None,
                "peer_seconds": peer["seconds"] if peer else None,
                "peer_delta_mb": peer["delta_mb"] if peer else None,
                "speedup_vs_peer": _ratio(peer and peer["seconds"], ours["seconds"]),
            }
            table.append(entry)
    return table


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def format_table(result: dict) -> str:
    """The rows as a Markdown table, then the summary figures."""
    lines = [
        "| B | implementation | seconds (median) | peak RSS MB | delta MB | note |",
        "|---:|---|---:|---:|---:|---|",
    ]
    order = [*IMPLS, *LOSS_IMPLS]
    for row in sorted(result["rows"], key=lambda r: (r["batch_size"], order.index(r["impl"]))):
        lines.append(
            f"| {row['batch_size']} | {row['impl']} | {_fmt(row['seconds'], '.4f')} | "
            f"{_fmt(row['peak_rss_mb'], '.0f')} | {_fmt(row['delta_mb'], '.0f')} | {row['note']} |"
        )
    lines += [
        "",
        f"B=1024 vs tiled ({result['tiled_1024_source']}): "
        f"{_fmt(result['speedup_vs_tiled_1024'], '.1f')}x faster, "
        f"{_fmt(result['memory_ratio_vs_tiled_1024'], '.1f')}x less peak RSS "
        f"({_fmt(result['memory_delta_ratio_vs_tiled_1024'], '.0f')}x less above baseline)",
        f"B=4096: {_fmt(result['seconds_4096'], '.3f')} s, "
        f"{_fmt(result['peak_mb_4096'], '.0f')} MB peak RSS "
        f"({_fmt(result['delta_mb_4096'], '.0f')} MB above baseline), "
        f"{_fmt(result['ratio_to_floor_4096'], '.2f')}x the distance-matrix floor",
        "",
        "| loss | B | seconds | x floor | delta MB | peer | peer seconds | peer delta MB |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for entry in result.get("losses", []):
        lines.append(
            f"| {entry['loss']} | {entry['batch_size']} | {_fmt(entry['seconds'], '.4f')} | "
            f"{_fmt(entry['ratio_to_floor'], '.2f')} | {_fmt(entry['delta_mb'], '.0f')} | "
            f"{entry['peer'] or '-'} | {_fmt(entry['peer_seconds'], '.4f')} | "
            f"{_fmt(entry['peer_delta_mb'], '.0f')} |"
        )
    lines.append(
        "targets: " + ", ".join(f"{name}: {met}" for name, met in result["targets"].items())
    )
    return "\n".join(lines)
