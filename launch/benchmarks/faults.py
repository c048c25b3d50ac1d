"""Faults suite: how a two-worker loopback job ends after each fault, and how fast.

Each row starts `launch.multiworker --num_workers=2` on a small deterministic job (a backup every
step), injects one fault once backup `FAULT_AFTER` exists, and measures the seconds until the
launcher exits, its exit status and the one-line messages. The peer of this suite is the
fault-free run: nothing to compare speed against, so the table reports the bound itself.
Resuming afterwards is what `tests/launch/test_multiworker.py` checks (bit-identical weights).
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import time

from launch import WORKSPACE

FAULT_AFTER = 12
ARGS = [
    "--deterministic",
    "--epochs=8",
    "--steps_per_epoch=10",
    "--save_every_steps=1",
    "--classes_per_batch=6",
    "--samples_per_class=4",
    "--calibration_pairs=50",
    "--test_pairs=50",
]
# name -> (whom to signal: "launcher" or a worker index, the signal)
FAULTS = {
    "sigterm_to_worker_1": (1, signal.SIGTERM),
    "sigint_to_launcher": ("launcher", signal.SIGINT),
    "kill_9_worker_0": (0, signal.SIGKILL),
    "kill_9_worker_1": (1, signal.SIGKILL),
    "sigstop_worker_1": (1, signal.SIGSTOP),
}


def _one(name: str, target, sig, folder: pathlib.Path, timeout: float = 600) -> dict:
    workdir, log = folder / name, folder / f"{name}.log"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    cmd = [sys.executable, "-m", "launch.multiworker", "--num_workers=2", "--"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*cmd, f"--workdir={workdir}", *ARGS],
            cwd=WORKSPACE,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    index = workdir / "backup" / f"step-{FAULT_AFTER}.index"
    while not index.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"{name}: the job ended early: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    text = log.read_text(errors="replace")
    pids = {int(i): int(p) for i, p in re.findall(r"^worker (\d+): pid (\d+)$", text, re.M)}
    start = time.monotonic()
    if target == "launcher":
        proc.send_signal(sig)
    else:
        os.kill(pids[target], sig)
    status = proc.wait(timeout=timeout)
    seconds = time.monotonic() - start
    text = log.read_text(errors="replace").replace("\r", "\n")
    messages = re.findall(r"(stopped: .*|error: lost .*|worker \d \(pid \d+\) .*)", text)
    saved = re.findall(r"stopped: \w+ at step (\d+)", text)
    return {
        "fault": name,
        "exit_status": status,
        "seconds_to_end": round(seconds, 1),
        "saved_steps": sorted({int(s) for s in saved}),
        "messages": messages,
    }


def run(sizes=None) -> dict:
    """Runs every fault once.

    Args:
      sizes: unused (the suite has no size axis).

    Returns:
      dict with `rows` (one per fault) and `fault_after_step`.
    """
    del sizes
    with tempfile.TemporaryDirectory(prefix="siamese_tf_faults_") as folder:
        rows = [_one(name, *fault, pathlib.Path(folder)) for name, fault in FAULTS.items()]
    return {"rows": rows, "fault_after_step": FAULT_AFTER}


def format_table(result: dict) -> str:
    """The rows as a fixed-width table."""
    lines = [f"{'fault':<22}{'exit':>5}{'seconds':>9}  saved step(s)"]
    for row in result["rows"]:
        saved = ",".join(str(s) for s in row["saved_steps"]) or "-"
        lines.append(
            f"{row['fault']:<22}{row['exit_status']:>5}{row['seconds_to_end']:>9}  {saved}"
        )
    lines.append(f"(faults injected once backup {result['fault_after_step']} existed)")
    return "\n".join(lines)
