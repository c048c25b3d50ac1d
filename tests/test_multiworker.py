"""Multi-worker training on loopback: two processes, identical weights, a complete chief workdir."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from siamese_tf.distribute import cluster_resolver, get_strategy
from siamese_tf.errors import InputError

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_two_workers_train_to_identical_weights(tmp_path):
    workdir = tmp_path / "mw"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.multiworker",
            "--num_workers=2",
            "--",
            f"--workdir={workdir}",
            "--epochs=2",
            "--steps_per_epoch=4",
            "--classes_per_batch=6",
            "--samples_per_class=4",
            "--calibration_pairs=100",
            "--test_pairs=100",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summaries = {}
    for line in result.stdout.splitlines():
        for worker in ("[worker 0] ", "[worker 1] "):
            if line.startswith(worker + "summary: "):
                summaries[worker] = json.loads(line.split("summary: ", 1)[1])
    assert len(summaries) == 2, result.stdout[-3000:]
    checksums = {s["weights_sha256"] for s in summaries.values()}
    assert len(checksums) == 1  # both workers hold bit-identical weights
    for name in ("config.json", "metrics.jsonl", "model.keras", "report.json"):
        assert (workdir / name).exists(), name
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 2
    report = json.loads((workdir / "report.json").read_text())
    assert report["replicas"] == 2 and report["steps"] == 8


def test_slurm_resolver_reads_a_fake_slurm_environment(monkeypatch):
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "localhost")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "2")
    resolver = cluster_resolver("slurm")
    spec = resolver.cluster_spec().as_dict()
    assert spec == {"worker": ["localhost:8888", "localhost:8889"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)


def test_multi_worker_without_tf_config_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(InputError, match="needs TF_CONFIG"):
        get_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        get_strategy("multi_worker")
    with pytest.raises(InputError, match="unknown cluster"):
        cluster_resolver("k8s")
