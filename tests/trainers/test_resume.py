"""Preemption-safe training: kill -9 twice and resume bit-identically, SIGTERM, SIGINT, configs."""

import json
import pathlib
import re
import signal
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import start_cli

import siamese_tf  # noqa: F401

# Small but real: 3 epochs × 12 steps, backups every 4 steps, op determinism on.
ARGS = (
    "--deterministic --epochs=3 --steps_per_epoch=12 --save_every_steps=4 --calibration_pairs=100 "
    "--test_pairs=100 --classes_per_batch=6 --samples_per_class=4 --strategy=default"
).split()


def start(workdir, *extra):
    return start_cli("train", f"--workdir={workdir}", *ARGS, *extra)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def backup_steps(workdir):
    """Steps of the backups a resume can restore: those the checkpoint state file lists.

    Not the `step-*.index` files: an index is written before its save completes, and a kill
    in between leaves a backup that resume rightly ignores.
    """
    state = tf.train.get_checkpoint_state(str(pathlib.Path(workdir) / "backup"))
    paths = state.all_model_checkpoint_paths if state else []
    return sorted(int(path.rsplit("-", 1)[1]) for path in paths)


def wait_for_backup(proc, workdir, min_step, timeout=240):
    """The newest backup step once it is >= `min_step`: a bounded poll for a file to appear (the
    only way to see a running subprocess's progress), never a sleep to synchronise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = backup_steps(workdir)
        if steps and steps[-1] >= min_step:
            return steps[-1]
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError("no backup appeared")


def weights(workdir):
    model = keras.models.load_model(pathlib.Path(workdir) / "model.keras")
    return {w.path: w.numpy() for w in model.weights}


def assert_same_weights(workdir_a, workdir_b):
    a, b = weights(workdir_a), weights(workdir_b)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def metrics(workdir):
    path = pathlib.Path(workdir) / "metrics.jsonl"  # written at the first finished epoch
    return [json.loads(line) for line in path.open()] if path.exists() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    code, _, err = finish(start(workdir))
    assert code == 0, err[-2000:]
    return workdir


# Fixed kill points: as soon as the backup of step 8 (in epoch 1), then of step 20 (in epoch 2)
# is on disk. The process is then wherever it got to (mid-step, mid-save): a real SIGKILL.
KILL_AFTER_BACKUPS = (8, 20)


def test_kill_9_twice_then_resume_is_bit_identical(uninterrupted, tmp_path):
    # The one real SIGKILL test of a single-process run; the others stop at a chosen step.
    workdir = tmp_path / "killed"
    for step in KILL_AFTER_BACKUPS:
        proc = start(workdir)
        wait_for_backup(proc, workdir, step)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    code, _, err = finish(start(workdir))
    assert code == 0, err[-2000:]
    assert_same_weights(uninterrupted, workdir)
    assert metrics(workdir) == metrics(uninterrupted)
    report = json.loads((workdir / "report.json").read_text())
    assert report["start_step"] > 0 and report["steps"] == 36


def test_sigterm_saves_and_exits_then_resumes(uninterrupted, tmp_path):
    workdir = tmp_path / "preempted"
    proc = start(workdir)
    wait_for_backup(proc, workdir, 4)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 75 and "preempted at step" in err, err[-2000:]
    stopped_at = backup_steps(workdir)[-1]
    assert stopped_at >= 4
    # The epoch the signal cut short is not recorded: metrics.jsonl holds finished epochs only.
    assert [r["step"] for r in metrics(workdir)] == [
        r["step"] for r in metrics(uninterrupted) if r["step"] <= stopped_at
    ]
    code, _, err = finish(start(workdir))
    assert code == 0, err[-2000:]
    assert_same_weights(uninterrupted, workdir)
    assert metrics(workdir) == metrics(uninterrupted)


def sigint_handled(pid) -> bool:
    """Whether the process has run its first SIGINT handler: SIGINT is no longer caught (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return not caught >> (signal.SIGINT - 1) & 1


def test_sigint_saves_and_exits_130_a_second_one_at_once_then_resume(uninterrupted, tmp_path):
    workdir = tmp_path / "interrupted"
    # Ctrl-C: one line, a backup at the current step, exit 130.
    proc = start(workdir)
    wait_for_backup(proc, workdir, 4)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(proc)
    assert code == 130, err[-2000:]
    ours = [line for line in err.splitlines() if line.startswith(("stopped", "error"))]
    assert len(ours) == 1 and "Traceback" not in err and "KeyboardInterrupt" not in err, err
    step = int(re.fullmatch(r"stopped: interrupted at step (\d+): .*", ours[0]).group(1))
    assert backup_steps(workdir)[-1] == step >= 4

    # A second Ctrl-C ends the process at once (killed by SIGINT); the workdir still resumes.
    proc = start(workdir)
    wait_for_backup(proc, workdir, step + 1)
    proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + 60
    while not sigint_handled(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == -signal.SIGINT, err[-2000:]
    assert f"resuming from step {step} of 36" in out

    code, out, err = finish(start(workdir))
    assert code == 0, err[-2000:]
    resumed = int(re.search(r"^resuming from step (\d+) of 36$", out, re.M).group(1))
    assert resumed > step
    # The epoch lines count on from the interrupted epoch, over the run's 3 epochs.
    assert re.findall(r"^epoch (\d+)/(\d+) \(step", out, re.M) == [
        (str(epoch), "3") for epoch in range(resumed // 12 + 1, 4)
    ]
    assert_same_weights(uninterrupted, workdir)


def test_resume_refuses_a_changed_config(uninterrupted):
    code, _, err = finish(start(uninterrupted, "--margin=0.3"))
    assert code == 2 and "different config (margin: 0.5 -> 0.3)" in err
    assert len(err.strip().splitlines()) == 1
    # A finished run re-run with the same flags trains nothing and reports again.
    code, out, err = finish(start(uninterrupted))
    assert code == 0 and "summary:" in out, err[-2000:]
