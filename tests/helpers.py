"""Shared test helpers: the CLI runner and the tiny training config every test uses.

A plain module (not conftest) so test files import it by name: `from helpers import run_cli`
(`tests/` is on sys.path through setup.cfg's `pythonpath`).
"""

import os
import pathlib
import subprocess
import sys

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
