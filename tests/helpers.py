"""Shared test helpers: the CLI runner and the tiny training config every test uses.

A plain module (not conftest) so test files import it by name: `from helpers import run_cli`
(`tests/` is on sys.path through setup.cfg's `pythonpath`).
"""

import io
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import tensorflow as tf
from PIL import Image

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The smallest run that trains, calibrates and tests: one epoch of three steps.
TINY_RUN = dict(epochs=1, steps_per_epoch=3, calibration_pairs=100, test_pairs=100)
TINY_FLAGS = tuple(f"--{k}={v}" for k, v in TINY_RUN.items())


def tiny_config(**overrides):
    """`TrainConfig(**TINY_RUN, **overrides)`."""
    from trainers.config import TrainConfig

    return TrainConfig(**{**TINY_RUN, **overrides})


def cli_env(unset=(), **extra):
    """The environment a CLI subprocess gets: quiet TensorFlow, no GPU, the checkout importable.

    `unset` names variables to drop (e.g. TF_CONFIG); `extra` sets or overrides variables.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    for name in unset:
        env.pop(name, None)
    env.update(extra)
    return env


def cli_command(module, *args):
    """`python -m launch.<module> args...` (`module` may also be a full dotted name)."""
    return [sys.executable, "-m", module if "." in module else f"launch.{module}", *map(str, args)]


def run_cli(module, *args, cwd=None, env=None, timeout=240):
    """Runs `python -m launch.<module> args...` to the end; its output is captured as text."""
    return subprocess.run(
        cli_command(module, *args),
        cwd=ROOT if cwd is None else cwd,
        env=cli_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(module, *args, cwd=None, env=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    """Starts `python -m launch.<module> args...` in the background (text pipes by default)."""
    return subprocess.Popen(
        cli_command(module, *args),
        cwd=ROOT if cwd is None else cwd,
        env=cli_env() if env is None else env,
        stdout=stdout,
        stderr=stderr,
        text=True,
    )


def summary_of(stdout):
    """The JSON of the first `summary: {...}` line a CLI printed."""
    return json.loads(stdout.split("summary: ", 1)[1].splitlines()[0])


def png_bytes(pixels, fmt="PNG"):
    """A uint8 array ([H, W] or [H, W, 3]) encoded as an image file's bytes (PNG by default)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def write_flat_pngs(root, classes=3, per_class=4, size=6, step=10, prefix="c"):
    """`root/<prefix><c>/<i>.png`: flat `size`² gray PNGs of value `step * c + i`."""
    for c in range(classes):
        (root / f"{prefix}{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size), step * c + i, np.uint8)
            (root / f"{prefix}{c}" / f"{i}.png").write_bytes(png_bytes(pixels))


def take_batches(ds, n):
    """The first `n` elements of `ds`, each flattened to a tuple of numpy arrays."""
    return [tuple(np.asarray(t) for t in tf.nest.flatten(e)) for e in ds.take(n)]


def unit_rows(rng, n, dim=8):
    """`n` random unit vectors of `dim` floats (float32)."""
    x = rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def value_and_grad(fn, x):
    """(fn(x), d fn / d x) as numpy arrays, `x` watched as a constant tensor."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(x)
    return value.numpy(), tape.gradient(value, x).numpy()


def check_anchor_halves(terms, emb):
    """`terms(emb, anchor_indices)` -> (sum, count) over two halves of the anchors adds up to the
    full batch's loss, value and gradient (what cross-replica mining relies on)."""
    half = len(emb) // 2
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(emb)
        full_sum, full_count = terms(emb, None)
        full = full_sum / full_count
        halves = [terms(emb, tf.range(lo, lo + half)) for lo in (0, half)]
        combined = (halves[0][0] + halves[1][0]) / (halves[0][1] + halves[1][1])
    np.testing.assert_allclose(combined, full, rtol=1e-5)
    grads = [tape.gradient(combined, emb), tape.gradient(full, emb)]
    np.testing.assert_allclose(*grads, rtol=1e-4, atol=1e-6)


def fit_on_two_replicas(strategy, model, batches):
    """`model.fit` over `strategy`'s two replicas, one step per (images, labels) global batch in
    `batches`; replica r is fed half r of each (one input pipeline feeds the replicas in turn)."""
    images, labels = (np.concatenate(part) for part in zip(*batches, strict=True))
    n = 2 * len(batches)
    halves = (images.reshape(n, -1, *images.shape[1:]), labels.reshape(n, -1))

    def dataset_fn(context):
        return tf.data.Dataset.from_tensor_slices(halves)

    dataset = strategy.distribute_datasets_from_function(dataset_fn)
    return model.fit(dataset, epochs=1, steps_per_epoch=len(batches), verbose=0)


def one_error_line(result) -> str:
    """The one stderr line of a CLI run that failed on bad input (exit 2, no traceback)."""
    assert result.returncode == 2, (result.stdout + result.stderr)[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]
