"""Input-pipeline benchmark: `python -m launch.benchmark --suite=pipeline [--json]`.

Three measurements, each against its peers on the same data in the same process:

(a) Sampler throughput (batches/s, images/s) of `siamese_tf.data.pk_batches` and of the streaming
    prepared-store reader, against a `keras.utils.PyDataset` doing the same P×K sampling in numpy
    (consumed through Keras' own PyDataset adapter, as `fit` consumes it, and, as an upper bound
    no training loop reaches, by direct `__getitem__` calls) and against the tutorial way (numpy
    `create_pairs` materialising one positive and one negative pair per image, fed as arrays
    through `from_tensor_slices(...).batch`). tf.data pipelines are consumed in-graph, as a
    training step consumes them. P×K = 8×16 on MNIST (10 classes cannot fill P = 32) and
    P×K = 32×4 on synthetic 28×28 images of 100 classes; both 128 images per batch.
(b) Peak memory of each for 60k 28×28 images: one subprocess per variant; after the imports
    the peak-RSS mark is reset (Linux `clear_refs`), and the peak RSS (VmHWM, the process's own
    `ru_maxrss`) after loading the data and drawing 200 batches, minus the RSS after the
    imports, is the variant's peak.
(c) Input overhead in training: `fit` step time of the default conv net (conv_small, 64-d,
    TripletSemiHardLoss(margin=0.5)) fed by `pk_batches` ÷ fed the same batches pre-made as
    tensors; short epochs alternate, and the median ratio of neighbouring epochs is reported.

MNIST is read from `../shared/data/mnist` (beside the checkout) when present, else synthetic
images of the same shape are used; `sizes=(n,)` changes the number of images (default 60,000).
"""

from __future__ import annotations

import os
import pathlib
import random
import statistics
import tempfile
import time

import numpy as np

from launch import WORKSPACE
from launch.benchmarks.process_memory import peak_rss_mb, reset_peak_rss, run_in_subprocess

DEFAULT_SIZE = 60_000
IMAGE_SHAPE = (28, 28, 1)
BATCH_IMAGES = 128
MEMORY_VARIANTS = ("pk_batches", "prepared_store", "pydataset", "tutorial_pairs")
_NO_GPU = {"CUDA_VISIBLE_DEVICES": ""}  # the memory variants are host-memory figures


def find_mnist() -> pathlib.Path | None:
    """The shared MNIST folder beside the checkout, or None."""
    for folder in (
        pathlib.Path.cwd().parent / "shared/data/mnist",
        WORKSPACE.parent / "shared/data/mnist",
    ):
        if (folder / "train-images-idx3-ubyte.gz").is_file():
            return folder
    return None


def load_data(spec: str, n: int):
    """(images uint8 [n, 28, 28, 1], labels int64 [n]) for "mnist:DIR" or "synthetic:CLASSES"."""
    if spec.startswith("mnist:"):
        from siamese_tf.data.sources import load_source

        source = load_source(spec)
        return source.images[:n], source.labels[:n]
    classes = int(spec.partition(":")[2])
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *IMAGE_SHAPE), dtype=np.uint8)
    return images, np.arange(n, dtype=np.int64) % classes


# ------------------------------------------------------------------------------------------------
# The peers.


def make_pydataset(images, labels, p: int, k: int, steps: int, seed: int = 0):
    """A `keras.utils.PyDataset` drawing the same P×K batches in numpy, one per `__getitem__`."""
    import keras

    class PKSequence(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]

        def __len__(self):
            return steps

        def __getitem__(self, idx):
            rng = np.random.default_rng([seed, idx])
            classes = rng.choice(len(self.by_class), p, replace=False)
            rows = np.concatenate(
                [
                    rng.choice(self.by_class[c], k, replace=self.by_class[c].size < k)
                    for c in classes
                ]
            )
            return images[rows], np.repeat(classes, k)

    return PKSequence()


def create_pairs(images, labels, seed: int = 0):
    """The tutorial's `make_pairs` (keras.io Siamese contrastive example): every pair in memory.

    For each image, one positive pair (a random image of its class) and one negative pair (a
    random image of another class); images as float32 in [0, 1], as the tutorial feeds them.
    """
    rng = random.Random(seed)
    x = images.astype("float32") / 255.0
    num_classes = int(labels.max()) + 1
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    pairs, same = [], []
    for i in range(len(x)):
        label = int(labels[i])
        pairs.append([x[i], x[rng.choice(by_class[label])]])
        same.append(1.0)
        other = rng.randrange(num_classes - 1)
        other += other >= label
        pairs.append([x[i], x[rng.choice(by_class[other])]])
        same.append(0.0)
    return np.array(pairs), np.array(same, np.float32)


def tutorial_dataset(pairs, same, batch_pairs: int):
    """The tutorial's arrays fed to training: `((x1, x2), y)` slices, batched."""
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(((pairs[:, 0], pairs[:, 1]), same)).batch(batch_pairs)


# ------------------------------------------------------------------------------------------------
# (a) throughput.


def _in_graph_rate(dataset, batches: int, repeats: int = 3) -> float:
    """Batches/s of a dataset consumed inside one graph (as a training step consumes it)."""
    import tensorflow as tf

    def consume(n):
        def step(total, element):
            first = tf.nest.flatten(element)[0]  # touch the images so they are produced
            return total + tf.cast(tf.reshape(first, [-1])[0], tf.int64)

        dataset.take(n).reduce(tf.constant(0, tf.int64), step)

    consume(10)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        consume(batches)
        rates.append(batches / (time.perf_counter() - start))
    return statistics.median(rates)


def _direct_rate(py_dataset, batches: int, repeats: int = 3) -> float:
    """Batches/s of direct `__getitem__` calls, each batch converted to tensors."""
    import tensorflow as tf

    rates = []
    for r in range(repeats):
        start = time.perf_counter()
        for i in range(batches):
            x, y = py_dataset[r * batches + i]
            tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        rates.append(batches / (time.perf_counter() - start))
    return statistics.median(rates)


def _row(name, batches_per_s, images_per_batch=BATCH_IMAGES, **extra):
    return {
        "pipeline": name,
        "batches_per_s": round(batches_per_s, 1),
        "images_per_s": round(batches_per_s * images_per_batch),
        **extra,
    }


def measure_throughput(images, labels, p: int, k: int, store_dir=None, tutorial=True) -> dict:
    """Throughput rows of every pipeline for one data set and P×K (see the module docstring)."""
    from siamese_tf.compat import pydataset_tf_dataset
    from siamese_tf.data import load_source, pk_batches

    batches = 2000
    rows = []
    ours = _in_graph_rate(
        pk_batches(images, labels, classes_per_batch=p, samples_per_class=k, seed=0), batches
    )
    rows.append(_row("siamese_tf pk_batches (in memory)", ours))
    if store_dir is not None:
        streaming = pk_batches(
            load_source(f"prepared:{store_dir}"), classes_per_batch=p, samples_per_class=k, seed=0
        )
        rows.append(_row("siamese_tf prepared store (streaming)", _in_graph_rate(streaming, 300)))
    py_dataset = make_pydataset(images, labels, p, k, steps=10 * batches)
    # Consumed through the tf.data dataset Keras' `fit` builds from a PyDataset (its adapter).
    generator = _in_graph_rate(pydataset_tf_dataset(py_dataset), batches // 2)
    rows.append(_row("PyDataset P×K generator (keras adapter)", generator))
    direct = _direct_rate(py_dataset, batches)
    rows.append(_row("PyDataset P×K generator (direct __getitem__)", direct))
    if tutorial:
        start = time.perf_counter()
        pairs, same = create_pairs(images, labels)
        setup_s = time.perf_counter() - start
        rate = _in_graph_rate(tutorial_dataset(pairs, same, BATCH_IMAGES // 2), batches)
        extra = {"setup_s": round(setup_s, 2), "pairs_mb": round(pairs.nbytes / 2**20)}
        rows.append(_row("tutorial create_pairs arrays", rate, **extra))
        del pairs, same
    return {
        "p": p,
        "k": k,
        "rows": rows,
        "speedup_vs_generator": round(ours / generator, 2),
        "speedup_vs_generator_direct": round(ours / direct, 2),
    }


# ------------------------------------------------------------------------------------------------
# (b) memory, one subprocess per variant.


def measure_memory_variant(variant: str, data_spec: str, n: int, store_dir: str = "") -> dict:
    """Runs one variant in this (fresh) process; returns its peak memory above the imports."""
    import keras  # noqa: F401  (every variant pays the same imports before the baseline)
    import tensorflow  # noqa: F401

    from siamese_tf.compat import pydataset_tf_dataset
    from siamese_tf.data import load_source, pk_batches

    reset = reset_peak_rss()
    baseline = peak_rss_mb()
    p, k = 8, 16
    if variant == "prepared_store":  # the data stays on disk
        source = load_source(f"prepared:{store_dir}")
        ds = pk_batches(source, classes_per_batch=p, samples_per_class=k, seed=0)
    else:
        images, labels = load_data(data_spec, n)
        if variant == "pk_batches":
            ds = pk_batches(images, labels, classes_per_batch=p, samples_per_class=k, seed=0)
        elif variant == "pydataset":
            ds = pydataset_tf_dataset(make_pydataset(images, labels, p, k, steps=1000))
        elif variant == "tutorial_pairs":
            pairs, same = create_pairs(images, labels)
            ds = tutorial_dataset(pairs, same, BATCH_IMAGES // 2)
        else:
            raise ValueError(f"unknown memory variant {variant!r}")
    for _ in ds.take(200):
        pass
    return {"variant": variant, "peak_mb": round(peak_rss_mb() - baseline, 1), "reset": reset}


# ------------------------------------------------------------------------------------------------
# (c) overhead in training.


def measure_overhead(images, labels, p: int, k: int, steps: int = 30, repeats: int = 9) -> dict:
    """Median `fit` step time fed by `pk_batches` ÷ fed the same batches pre-made as tensors."""
    import keras
    import tensorflow as tf

    from siamese_tf.data import pk_batches
    from siamese_tf.losses import TripletSemiHardLoss
    from siamese_tf.models import SiameseModel, build_encoder

    keras.utils.set_random_seed(0)
    model = SiameseModel(build_encoder("conv_small", IMAGE_SHAPE, 64))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=TripletSemiHardLoss(margin=0.5))
    pipeline = pk_batches(images, labels, classes_per_batch=p, samples_per_class=k, seed=0)
    made = list(pipeline.take(steps).as_numpy_iterator())
    made = tuple(tf.constant(np.stack(part)) for part in zip(*made, strict=True))
    premade = tf.data.Dataset.from_tensor_slices(made).cache().repeat().prefetch(tf.data.AUTOTUNE)

    class StepTimes(keras.callbacks.Callback):
        """Intervals between consecutive batch ends: one training step including its input."""

        def __init__(self):
            super().__init__()
            self.intervals, self._last = [], None

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if self._last is not None:
                self.intervals.append(now - self._last)
            self._last = now

    datasets = {"pipeline": pipeline, "premade": premade}
    for dataset in datasets.values():  # warm-up: traces the train function once per input
        model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    # Short epochs alternate, so each pipeline epoch has a premade neighbour under the same
    # machine load; per epoch the median step interval (robust to a descheduled step), per
    # pair their ratio, and the median ratio over pairs.
    medians = {name: [] for name in datasets}
    for _ in range(repeats):
        for name, dataset in datasets.items():
            timer = StepTimes()
            model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer])
            medians[name].append(statistics.median(timer.intervals))
    ratios = [a / b for a, b in zip(medians["pipeline"], medians["premade"], strict=True)]
    piped = statistics.median(medians["pipeline"])
    base = statistics.median(medians["premade"])
    return {
        "step_ms_pipeline": round(1000 * piped, 2),
        "step_ms_premade": round(1000 * base, 2),
        "overhead_ratio": round(statistics.median(ratios), 3),
        "overhead_ratios": [round(r, 3) for r in ratios],
        "steps": steps,
        "repeats": repeats,
    }


# ------------------------------------------------------------------------------------------------


def run(sizes=None) -> dict:
    """Runs the three measurements; `sizes=(n,)` sets the number of images (default 60,000)."""
    from siamese_tf.data import write_store
    from siamese_tf.data.stream import SourceStream

    n = int(sizes[0]) if sizes else DEFAULT_SIZE
    mnist = find_mnist()
    data_spec = f"mnist:{mnist}" if mnist else "synthetic:10"
    images, labels = load_data(data_spec, n)
    synthetic_images, synthetic_labels = load_data("synthetic:100", n)
    with tempfile.TemporaryDirectory() as tmp:
        shards = str(pathlib.Path(tmp) / "store")
        write_store(SourceStream(data_spec, False, iter([(images, labels, None)])), shards)
        synthetic_shards = str(pathlib.Path(tmp) / "synthetic")
        write_store(
            SourceStream("synthetic", False, iter([(synthetic_images, synthetic_labels, None)])),
            synthetic_shards,
        )
        throughput = [
            {"data": data_spec, **measure_throughput(images, labels, 8, 16, shards)},
            {
                "data": "synthetic:100",
                **measure_throughput(
                    synthetic_images, synthetic_labels, 32, 4, synthetic_shards, tutorial=False
                ),
            },
        ]
        peak = {
            v: run_in_subprocess(
                measure_memory_variant, v, data_spec, n, shards, env=_NO_GPU, timeout=900
            )["peak_mb"]
            for v in MEMORY_VARIANTS
        }
    overhead = measure_overhead(images, labels, 8, 16)
    return {
        "suite": "pipeline",
        "data": data_spec,
        "num_images": n,
        "throughput": throughput,
        "speedup_vs_generator": min(t["speedup_vs_generator"] for t in throughput),
        "speedup_vs_generator_direct": min(t["speedup_vs_generator_direct"] for t in throughput),
        "peak_mb": peak,
        "overhead": overhead,
        "overhead_ratio": overhead["overhead_ratio"],
        "cpus": os.cpu_count(),
    }


def format_table(result: dict) -> str:
    """The result as plain-text tables."""
    lines = [
        f"pipeline benchmark: {result['num_images']} images 28x28, data {result['data']}, "
        f"{result['cpus']} CPUs",
        "",
        "(a) sampler throughput (tf.data consumed in-graph; 128 images per batch)",
    ]
    for block in result["throughput"]:
        lines.append(f"  {block['data']}, P×K = {block['p']}×{block['k']}")
        lines.append(f"    {'pipeline':<48}{'batches/s':>12}{'images/s':>12}")
        for row in block["rows"]:
            note = ""
            if "setup_s" in row:
                note = f"  (pairs built in {row['setup_s']} s, {row['pairs_mb']} MB)"
            lines.append(
                f"    {row['pipeline']:<48}{row['batches_per_s']:>12.1f}"
                f"{row['images_per_s']:>12,}{note}"
            )
        lines.append(
            f"    speedup vs generator: {block['speedup_vs_generator']}x "
            f"(vs direct __getitem__: {block['speedup_vs_generator_direct']}x)"
        )
    lines += ["", f"(b) peak memory above imports, {result['num_images']} images (MB)"]
    lines += [f"    {variant:<48}{mb:>12.1f}" for variant, mb in result["peak_mb"].items()]
    o = result["overhead"]
    lines += [
        "",
        "(c) training step, conv_small + TripletSemiHardLoss, P×K = 8×16 (median ms)",
        f"    fed by pk_batches {o['step_ms_pipeline']:.2f} ms, pre-made tensors "
        f"{o['step_ms_premade']:.2f} ms: overhead ratio {o['overhead_ratio']:.3f}",
    ]
    return "\n".join(lines)
