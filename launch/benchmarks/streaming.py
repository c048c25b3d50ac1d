"""Streaming benchmark: `python -m launch.benchmark --suite=streaming [--json]`.

Trains-shaped reading from a prepared store larger than memory would be, against the limit of
this machine, at two dataset sizes:

1. A synthetic JPEG set (112×112 RGB, 10 images a class; each image a smooth random pattern
   plus noise, JPEG quality 95, so files are photo-like in size) is generated in a parallel
   `tf.data` map and written with `siamese_tf.data.write_store` (the path of
   `launch.prepare`, every image decoded once to check it). The large set is at least 2 GB on
   disk; the small one has 1/8 of its images.
2. Each size is read by our pipeline (`pk_batches` on `prepared:DIR`, P×K = 64×4, rows drawn
   at random over the whole store, read by id, decoded in the parallel map) and by its peer: a
   plain `tf.data` pipeline reading the same store in record order, 256 records per batch,
   decoded by the same function with the same parallelism — what this machine can decode at
   all. Each pipeline runs alone in its own fresh process (see `measure_pipeline` for why),
   alternating ours, plain, ours, plain … for `rounds` rounds; each process reports the median
   of 3 windows of `batches` batches after a warm-up window, and each pipeline's figure is the
   median over its rounds. `decode_limit_ratio` = ours ÷ plain, on the large store.
3. Peak RSS (VmHWM, reset after the imports) of our pipeline's processes (the highest);
   `rss_growth_ratio` = large ÷ small: memory must not grow with the dataset.
4. The store format against ArrayRecord (the format TFDS writes for random access): the small
   store's records copied into one ArrayRecord file (`group_size:1`, as Grain requires), then
   the same random batches of 256 record ids read by `ArrayRecordDataSource.__getitems__` and
   by our `RecordStore.read` (which also checks each record's CRC-32), on one host thread,
   files in the page cache. `arrayrecord_read_ratio` = ours ÷ ArrayRecord, in records/s.

`sizes=(small, large)` sets the image counts instead (tests use tiny ones).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np

from launch.benchmarks.process_memory import peak_rss_mb, reset_peak_rss, run_in_subprocess

IMAGE_SIZE = 112
PER_CLASS = 10
P, K = 64, 4
TARGET_LARGE_BYTES = 2_100 << 20  # "at least 2 GB on disk", with a margin
SIZE_RATIO = 8
GENERATE_CHUNK = 1024


def _jpeg_dataset(start: int, count: int):
    """Synthetic JPEGs `start .. start+count-1` (a pure function of the index)."""
    import tensorflow as tf

    def make(i):  # Runs in the input pipeline.
        pattern_seed, noise_seed = tf.unstack(
            tf.random.experimental.stateless_split(tf.stack([i, tf.constant(17, tf.int64)]), 2)
        )
        base = tf.random.stateless_uniform([14, 14, 3], seed=pattern_seed, maxval=255.0)
        image = tf.image.resize(base[None], [IMAGE_SIZE, IMAGE_SIZE], method="bicubic")[0]
        image += tf.random.stateless_normal(image.shape, seed=noise_seed, stddev=20.0)
        return tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=95)

    return (
        tf.data.Dataset.range(start, start + count)
        .map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(GENERATE_CHUNK)
        .prefetch(2)
    )


def mean_jpeg_bytes(sample: int = 512) -> float:
    """Mean size of the synthetic JPEGs, from a sample."""
    batch = next(iter(_jpeg_dataset(0, sample)))
    return float(np.mean([len(b) for b in batch.numpy()]))


def write_synthetic_store(out: str, count: int) -> dict:
    """Writes `count` synthetic JPEGs (`count // PER_CLASS` classes) as a prepared store."""
    from siamese_tf.data import write_store
    from siamese_tf.data.stream import SourceStream

    def chunks():
        start = 0
        for batch in _jpeg_dataset(0, count):
            items = list(batch.numpy())
            labels = (np.arange(start, start + len(items)) // PER_CLASS).astype(np.int64)
            yield items, labels, None
            start += len(items)

    return write_store(SourceStream("synthetic_jpeg", True, chunks()), out)


def _window_rate(iterator, batches: int) -> float:
    """Images per second over the next `batches` elements (first component: the images)."""
    images = 0
    start = time.perf_counter()
    for _ in range(batches):
        images += int(next(iterator)[0].shape[0])
    return images / (time.perf_counter() - start)


def _pipeline(source, name: str):
    """Our P×K pipeline, or the plain in-order read of the same store with the same decode."""
    import tensorflow as tf

    from siamese_tf.data import pk_batches

    if name == "ours":
        return pk_batches(source, classes_per_batch=P, samples_per_class=K, seed=0)
    gather, decode = source.gather_fn(), source.map_fn
    return (
        tf.data.Dataset.range(len(source))
        .batch(P * K)
        .map(
            lambda rows: (decode(gather(rows)),),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(tf.data.AUTOTUNE)
        .repeat()
    )


def measure_pipeline(path: str, name: str, batches: int, repeats: int = 3) -> dict:
    """Runs in a fresh process, holding one pipeline only: its rate and peak RSS.

    One pipeline per process, because a second one in the same process keeps prefetching and
    decoding (AUTOTUNE) while the first is timed: it steals the cores, then serves its own
    next window from full buffers (a first version of this suite measured 25k images/s on 2
    cores that way). The rate is the median of `repeats` windows of `batches` batches, after
    one warm-up window, during which the peak RSS is read.
    """
    from siamese_tf.data import load_source

    reset_peak_rss()
    baseline = peak_rss_mb()
    iterator = iter(_pipeline(load_source(f"prepared:{path}"), name))
    _window_rate(iterator, batches)
    peak = peak_rss_mb()
    rates = [_window_rate(iterator, batches) for _ in range(repeats)]
    return {
        "images_per_second": round(statistics.median(rates), 1),
        "peak_rss_mb": round(peak, 1),
        "rss_after_imports_mb": round(baseline, 1),
    }


def measure_store(path: str, batches: int, rounds: int) -> dict:
    """Alternates fresh processes (ours, plain, ours, plain, …) for `rounds` rounds.

    Alternating spreads any drift in machine load over both pipelines; each figure is the
    median over its rounds, and the peak RSS is the highest our pipeline reached.
    """
    runs = {"ours": [], "plain": []}
    for _ in range(rounds):
        for name in runs:
            runs[name].append(run_in_subprocess(measure_pipeline, path, name, batches))
    ours = [r["images_per_second"] for r in runs["ours"]]
    plain = [r["images_per_second"] for r in runs["plain"]]
    return {
        "images_per_second": round(statistics.median(ours), 1),
        "plain_images_per_second": round(statistics.median(plain), 1),
        "images_per_second_runs": [round(r) for r in ours],
        "plain_images_per_second_runs": [round(r) for r in plain],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs["ours"]),
        "rss_after_imports_mb": runs["ours"][0]["rss_after_imports_mb"],
    }


def compare_arrayrecord(path: str, folder: str, batches: int = 200) -> dict:
    """Random batch reads, records/s: our store vs the same records in one ArrayRecord file."""
    from array_record.python import array_record_data_source, array_record_module

    from siamese_tf.data.store import RecordStore

    store = RecordStore(path)
    n = len(store)
    array_record_path = os.path.join(folder, "records.array_record")
    writer = array_record_module.ArrayRecordWriter(array_record_path, "group_size:1")
    for start in range(0, n, 1024):
        for record in store.read(np.arange(start, min(n, start + 1024))):
            writer.write(record)
    writer.close()
    source = array_record_data_source.ArrayRecordDataSource([array_record_path])
    rng = np.random.default_rng(0)
    id_batches = [rng.integers(0, n, P * K) for _ in range(batches)]
    assert source.__getitems__(id_batches[0]) == store.read(id_batches[0])
    rates = {}
    for name, read in (("ours", store.read), ("arrayrecord", source.__getitems__)):
        start = time.perf_counter()
        for ids in id_batches:
            read(ids)
        rates[name] = batches * P * K / (time.perf_counter() - start)
    return {
        "ours_records_per_second": round(rates["ours"]),
        "arrayrecord_records_per_second": round(rates["arrayrecord"]),
        "arrayrecord_read_ratio": round(rates["ours"] / rates["arrayrecord"], 3),
    }


def run(sizes=None, batches: int = 20, rounds: int = 3) -> dict:
    """Writes both stores, measures each in a fresh process, returns the figures."""
    if sizes:
        small, large = (int(s) for s in sizes)
        target = "given"
    else:
        large = int(np.ceil(TARGET_LARGE_BYTES / mean_jpeg_bytes()))
        large = -(-large // PER_CLASS) * PER_CLASS
        small = large // SIZE_RATIO
        target = f">= {TARGET_LARGE_BYTES >> 20} MB"
    with tempfile.TemporaryDirectory(prefix="siamese_tf_streaming_") as tmp:
        result = {"suite": "streaming", "p": P, "k": K, "image_size": IMAGE_SIZE}
        for name, count in (("small", small), ("large", large)):
            start = time.perf_counter()
            meta = write_synthetic_store(os.path.join(tmp, name), count)
            result[f"prepare_seconds_{name}"] = round(time.perf_counter() - start, 1)
            result[f"images_{name}"] = count
            result[f"dataset_mb_{name}"] = round(sum(s["bytes"] for s in meta["shards"]) / 2**20, 1)
            measured = measure_store(os.path.join(tmp, name), batches, rounds)
            result[f"peak_rss_mb_{name}"] = measured["peak_rss_mb"]
            result[f"measured_{name}"] = measured
            if name == "small":
                result["store_vs_arrayrecord"] = compare_arrayrecord(os.path.join(tmp, name), tmp)
    large_run = result["measured_large"]
    cpus = os.cpu_count() or 1
    result.update(
        large_target=target,
        images_per_second=large_run["images_per_second"],
        images_per_second_per_core=round(large_run["images_per_second"] / cpus, 1),
        decode_limit_ratio=round(
            large_run["images_per_second"] / large_run["plain_images_per_second"], 3
        ),
        rss_growth_ratio=round(result["peak_rss_mb_large"] / result["peak_rss_mb_small"], 3),
        size_ratio=round(large / small, 2),
        arrayrecord_read_ratio=result["store_vs_arrayrecord"]["arrayrecord_read_ratio"],
        cpus=cpus,
    )
    return result


def format_table(result: dict) -> str:
    lines = [
        f"Streaming P×K {result['p']}×{result['k']} from a prepared store of "
        f"{result['image_size']}×{result['image_size']} JPEGs ({result['cpus']} CPUs)",
        f"{'store':<8}{'images':>10}{'MB on disk':>12}{'ours img/s':>12}{'plain img/s':>13}"
        f"{'peak RSS MB':>13}",
    ]
    for name in ("small", "large"):
        m = result[f"measured_{name}"]
        lines.append(
            f"{name:<8}{result[f'images_{name}']:>10}{result[f'dataset_mb_{name}']:>12}"
            f"{m['images_per_second']:>12}{m['plain_images_per_second']:>13}"
            f"{result[f'peak_rss_mb_{name}']:>13}"
        )
    lines.append(
        f"decode_limit_ratio {result['decode_limit_ratio']} (target >= 0.8), rss_growth_ratio "
        f"{result['rss_growth_ratio']} (target <= 1.15), large peak RSS "
        f"{result['peak_rss_mb_large']} MB vs {result['dataset_mb_large']} MB on disk"
    )
    vs = result["store_vs_arrayrecord"]
    lines.append(
        f"random reads of 256 records: ours {vs['ours_records_per_second']} records/s, "
        f"ArrayRecord {vs['arrayrecord_records_per_second']} (ratio {vs['arrayrecord_read_ratio']})"
    )
    return "\n".join(lines)
