"""Early stopping from the CLI: stops on the selection metric, keeps the best epoch, resumes
exactly after a kill, and a finished early-stopped run is not trained further."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# On digits, val_eer is best at epoch 4 and worse at epoch 5: patience 1 stops at step 25 of 40.
ARGS = [
    "--deterministic",
    "--epochs=8",
    "--steps_per_epoch=5",
    "--save_every_steps=2",
    "--calibration_pairs=200",
    "--test_pairs=100",
    "--early_stopping_patience=1",
    "--early_stopping_metric=val_eer",
    "--strategy=default",
]


def start(workdir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen(
        [sys.executable, "-m", "launch.train", f"--workdir={workdir}", *ARGS],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.split("summary: ", 1)[1].splitlines()[0])


def report(workdir):
    data = json.loads((pathlib.Path(workdir) / "report.json").read_text())
    for key in ("train_seconds", "start_step"):
        data.pop(key)
    return data


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("stopping")
    return workdir, finish(start(workdir))


def test_stops_on_the_metric_and_keeps_the_best_epoch(uninterrupted):
    workdir, _ = uninterrupted
    saved = report(workdir)
    assert saved["steps"] == 25
    assert saved["early_stopping"] == {"metric": "val_eer", "best_epoch": 4, "stopped": True}
    eer = [json.loads(line)["val_eer"] for line in (workdir / "metrics.jsonl").open()]
    assert len(eer) == 5 and min(eer) == eer[3] and eer[4] > eer[3]
    # The kept model is epoch 4's: its threshold is the one calibrated at epoch 4.
    threshold = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[3])
    assert saved["test"]["threshold"] == pytest.approx(threshold["val_threshold"])


def test_killed_run_resumes_the_stopping_state_exactly(uninterrupted, tmp_path):
    workdir, summary = uninterrupted
    killed = tmp_path / "killed"
    proc = start(killed)
    deadline = time.monotonic() + 240
    while not (killed / "backup" / "step-22.index").exists():  # after the best epoch
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = finish(start(killed))
    assert resumed["weights_sha256"] == summary["weights_sha256"]
    assert report(killed) == report(workdir)
    # Re-running the early-stopped run trains nothing more.
    again = finish(start(killed))
    assert again["weights_sha256"] == summary["weights_sha256"]
    assert json.loads((killed / "report.json").read_text())["start_step"] == 25
