"""Recipe suite: training step time of the Omniglot recipe per image size and encoder.

The peer is the recipe's first version, conv4 (global average pooling) at 48×48; every other
row reports its speed-up over it, measured in the same process. The data are synthetic
Omniglot-shaped images (uint8, 1 channel, 20 per class), decoded in memory: the step cost
depends on the shapes, not on the strokes, and the suite needs no dataset files.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

PEER = (48, "conv4")
ENCODERS = ("conv4", "conv4_flat")


def _build(size: int, encoder: str, *, warmup: int) -> dict:
    """Builds one (size, encoder) trainer on synthetic data and runs its untimed warm-up."""
    from siamese_tf.data import Source
    from trainers import metric_learning
    from trainers.config import TrainConfig

    config = TrainConfig(
        encoder=encoder,
        embedding_dim=128,
        classes_per_batch=32,
        samples_per_class=4,
        augment=True,
        learning_rate=1e-3,
    )
    rng = np.random.default_rng(0)
    classes, per_class = 200, 20
    images = rng.integers(0, 256, (classes * per_class, size, size, 1), dtype=np.uint8)
    source = Source(images, np.repeat(np.arange(classes), per_class), name="synthetic")
    strategy = tf.distribute.get_strategy()
    model = metric_learning.build_model(config, source.image_shape)
    dataset = metric_learning.make_train_dataset(config, source, strategy)
    model.fit(dataset, epochs=1, steps_per_epoch=warmup, verbose=0)
    return {
        "size": size,
        "encoder": encoder,
        "model": model,
        "dataset": dataset,
        "batch": config.classes_per_batch * config.samples_per_class,
    }


def run(sizes=None, steps: int = 20, warmup: int = 10, repeats: int = 3) -> dict:
    """Measures each (image size, encoder) and the peer in one process.

    The timed windows are interleaved (round r times every row once), so a slow spell of the
    machine hits the peer and the candidates alike; each row reports the median window and
    the spread, since one window can be off by 2x on this 2-core VM (cause not found).

    Args:
      sizes: image sizes (default 32 and 48; the peer's 48 is always measured).
      steps: timed steps per window.
      warmup: untimed steps first (tracing, pipeline warm-up).
      repeats: timed windows per row.

    Returns:
      dict with `rows` (each with `speedup_vs_peer`, the ratio of medians) and the peer's
      description.
    """
    sizes = sorted(set(sizes or (32, 48)) | {PEER[0]})
    trainers = [_build(s, e, warmup=warmup) for s in sizes for e in ENCODERS]
    windows = [[] for _ in trainers]
    for _ in range(repeats):
        for trainer, times in zip(trainers, windows, strict=True):
            start = time.perf_counter()  # seconds per step over one window of `steps` steps
            trainer["model"].fit(trainer["dataset"], epochs=1, steps_per_epoch=steps, verbose=0)
            times.append((time.perf_counter() - start) / steps)
    rows = []
    for trainer, times in zip(trainers, windows, strict=True):
        median = float(np.median(times))
        rows.append(
            {
                "image_size": trainer["size"],
                "encoder": trainer["encoder"],
                "step_ms": round(1000 * median, 1),
                "step_ms_range": [round(1000 * min(times), 1), round(1000 * max(times), 1)],
                "images_per_second": round(trainer["batch"] / median, 1),
                "parameters": int(trainer["model"].count_params()),
            }
        )
    peer = next(r for r in rows if (r["image_size"], r["encoder"]) == PEER)
    for row in rows:
        row["speedup_vs_peer"] = round(peer["step_ms"] / row["step_ms"], 2)
    return {
        "rows": rows,
        "peer": f"{PEER[1]} at {PEER[0]}x{PEER[0]}",
        "batch": "32x4, augmented",
        "windows": f"median of {repeats} interleaved windows of {steps} steps",
    }


def format_table(result: dict) -> str:
    """The rows as a fixed-width table."""
    lines = [
        f"{'size':>5} {'encoder':<11}{'step ms':>9}{'range':>15}{'images/s':>10}{'params':>9}"
        f"{'speed-up':>10}"
    ]
    for row in result["rows"]:
        lines.append(
            f"{row['image_size']:>5} {row['encoder']:<11}{row['step_ms']:>9}"
            f"{'{}-{}'.format(*row['step_ms_range']):>15}"
            f"{row['images_per_second']:>10}{row['parameters']:>9}{row['speedup_vs_peer']:>10}"
        )
    lines.append(
        f"speed-up: over the peer, {result['peer']} ({result['batch']} P×K batches; "
        f"{result['windows']})"
    )
    return "\n".join(lines)
