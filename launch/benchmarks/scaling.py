"""Scaling suite: training examples/s for 1 and 2 replicas (and GPU variants when present).

On this CPU-only machine the two replicas are logical CPU devices sharing the same cores, so the
figure is a sanity check of the distributed path (it must work and not collapse), not a speed-up.
On a GPU machine it also measures mixed precision and XLA on and off. It also measures the input
pipeline one host feeds (the scaling model in WORKSPACE.md rests on it): the Omniglot recipe's
P×K 32×4 batches of 32×32 images, with and without augmentation, from memory.
"""

from __future__ import annotations

import time

import tensorflow as tf


def _configure_logical_cpus(count: int) -> None:
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError:
        pass  # Already initialised (e.g. under pytest's conftest): use what exists.


def _measure(strategy, *, mixed_precision=False, jit_compile=False, steps=60, warmup=10) -> dict:
    import keras

    from trainers import metric_learning
    from trainers.config import TrainConfig

    config = TrainConfig(
        classes_per_batch=10,
        samples_per_class=8,
        jit_compile=jit_compile,
        mixed_precision=mixed_precision,
    )
    data = metric_learning.prepare_data(config)
    if mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        with strategy.scope():
            model = metric_learning.build_model(config, data.source.image_shape)
        dataset = metric_learning.make_train_dataset(config, data.train, strategy)
        model.fit(dataset, epochs=1, steps_per_epoch=warmup, verbose=0)
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
        seconds = time.perf_counter() - start
    finally:
        keras.mixed_precision.set_global_policy("float32")
    batch = config.classes_per_batch * config.samples_per_class
    return {
        "replicas": strategy.num_replicas_in_sync,
        "mixed_precision": mixed_precision,
        "jit_compile": jit_compile,
        "examples_per_second": round(steps * batch / seconds, 1),
        "step_ms": round(1000 * seconds / steps, 2),
    }


def _input_pipeline(batches: int = 200, repeats: int = 3) -> list:
    """Images/s of one input pipeline of the recipe's batches (median of `repeats` windows)."""
    import numpy as np

    from siamese_tf.data import Source
    from trainers import metric_learning
    from trainers.config import TrainConfig

    rng = np.random.default_rng(0)
    classes, per_class = 964, 20  # Omniglot's background characters, 20 drawings each
    images = rng.integers(0, 256, (classes * per_class, 32, 32, 1), dtype=np.uint8)
    source = Source(images, np.repeat(np.arange(classes), per_class), name="synthetic")
    rows = []
    for augment in (False, True):
        config = TrainConfig(classes_per_batch=32, samples_per_class=4, augment=augment)
        iterator = iter(metric_learning.replica_dataset(config, source, 32, 0, 0))
        for _ in range(20):
            next(iterator)
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(batches):
                next(iterator)
            rates.append(batches * 128 / (time.perf_counter() - start))
        rows.append({"augment": augment, "images_per_second": round(sorted(rates)[repeats // 2])})
    return rows


def run(sizes=None) -> dict:
    """Measures the default digits job's training throughput per configuration.

    Args:
      sizes: unused (the suite has no size axis).

    Returns:
      dict with `rows` and `ratio_2_vs_1_replicas` (CPU) and the device description.
    """
    del sizes
    _configure_logical_cpus(2)
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    rows = [_measure(tf.distribute.OneDeviceStrategy(cpus[0]))]
    if len(cpus) >= 2:
        rows.append(_measure(tf.distribute.MirroredStrategy(cpus[:2])))
    for mixed in (False, True) if gpus else ():
        for jit in (False, True):
            row = _measure(
                tf.distribute.OneDeviceStrategy(gpus[0]), mixed_precision=mixed, jit_compile=jit
            )
            rows.append({**row, "device": "gpu"})
    one = rows[0]["examples_per_second"]
    two = rows[1]["examples_per_second"] if len(rows) > 1 else 0
    return {
        "rows": rows,
        "ratio_2_vs_1_replicas": round(two / one, 3) if one else None,
        "gpu": bool(gpus),
        "logical_cpus": len(cpus),
        "input_pipeline": _input_pipeline(),
    }


def format_table(result: dict) -> str:
    """The rows as a fixed-width table."""
    lines = [f"{'device':<7}{'replicas':>9}{'mixed':>7}{'xla':>7}{'examples/s':>12}{'step ms':>9}"]
    for row in result["rows"]:
        lines.append(
            f"{row.get('device', 'cpu'):<7}{row['replicas']:>9}"
            f"{str(row['mixed_precision']):>7}{str(row['jit_compile']):>7}"
            f"{row['examples_per_second']:>12}{row['step_ms']:>9}"
        )
    lines.append(f"2 vs 1 replicas (logical CPUs, same cores): {result['ratio_2_vs_1_replicas']}")
    for row in result.get("input_pipeline", ()):
        lines.append(
            f"input pipeline, recipe P×K 32×4 at 32×32, augment={row['augment']}: "
            f"{row['images_per_second']} images/s"
        )
    return "\n".join(lines)
