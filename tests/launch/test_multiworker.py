"""Multi-worker training on loopback (two workers through `launch.multiworker`): identical
weights; one saved step when a worker is signalled, an end (no hang) when one is killed, and a
bit-identical resume either way."""

import functools
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import tensorflow as tf
from helpers import cli_env, start_cli

from siamese_tf.distribute import cluster_resolver, get_strategy, lost_worker
from siamese_tf.errors import InputError

# Small but real: 3 epochs × 6 steps on two workers, op determinism on, a backup every step (so a
# test can wait for any step by polling the workdir).
ARGS = (
    "--deterministic --epochs=3 --steps_per_epoch=6 --save_every_steps=1 --classes_per_batch=6 "
    "--samples_per_class=4 --calibration_pairs=50 --test_pairs=50"
).split()
TOTAL_STEPS = 18


class Launch:
    """`python -m launch.multiworker --num_workers=2` in the background, its output in a file."""

    def __init__(self, workdir, log):
        self.workdir, self.log = pathlib.Path(workdir), pathlib.Path(log)
        with self.log.open("w") as out:
            self.proc = start_cli(
                "multiworker",
                "--num_workers=2",
                "--",
                f"--workdir={workdir}",
                *ARGS,
                env=cli_env(unset=["TF_CONFIG"]),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self):
        return self.log.read_text(errors="replace")

    def wait(self, timeout=400):
        return self.proc.wait(timeout=timeout)

    def poll_until(self, condition, what, timeout=300):
        # A bounded poll of the workdir and log (the only view of the job's progress), never a
        # sleep to synchronise.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                raise AssertionError(f"the job ended before {what}: {self.text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}")

    def worker_pids(self):
        def pids():
            found = dict(re.findall(r"^worker (\d+): pid (\d+)$", self.text(), re.M))
            return {int(k): int(v) for k, v in found.items()} if len(found) == 2 else None

        return self.poll_until(pids, "the worker pids")

    def wait_for_backup(self, step):
        # The last *committed* backup: a step's files exist before the checkpoint state names
        # it, and a kill in between rightly resumes from the one before.
        return self.poll_until(lambda: committed_backup_step(self.workdir) >= step, "a backup")

    def summaries(self):
        found = re.findall(r"^\[worker (\d)\] summary: (.*)$", self.text(), re.M)
        return {int(w): json.loads(s) for w, s in found}


def backup_steps(workdir):
    folder = pathlib.Path(workdir) / "backup"
    return sorted(int(p.name.split("-")[1].split(".")[0]) for p in folder.glob("step-*.index"))


def committed_backup_step(workdir):
    latest = tf.train.latest_checkpoint(str(pathlib.Path(workdir) / "backup"))
    return int(latest.rsplit("-", 1)[-1]) if latest else 0


def digests(launch):
    return {s["weights_sha256"] for s in launch.summaries().values()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mw")
    launch = Launch(tmp / "run", tmp / "log")
    assert launch.wait() == 0, launch.text()[-3000:]
    return launch


def test_two_workers_train_to_identical_weights(uninterrupted):
    workdir = uninterrupted.workdir
    assert len(uninterrupted.summaries()) == 2, uninterrupted.text()[-3000:]
    assert len(digests(uninterrupted)) == 1  # both workers hold bit-identical weights
    for name in ("config.json", "metrics.jsonl", "model.keras", "report.json"):
        assert (workdir / name).exists(), name
    assert len((workdir / "metrics.jsonl").read_text().splitlines()) == 3
    report = json.loads((workdir / "report.json").read_text())
    assert report["replicas"] == 2 and report["steps"] == TOTAL_STEPS


# Fixed signal points: SIGTERM to worker 1 once the backup of step 4 is on disk; after the resume,
# SIGKILL to the chief (the harder loss: it writes the backups) three steps further.
SIGNAL_AFTER = 4
KILL_STEPS_LATER = 3
VICTIM = 0


def test_sigterm_to_one_worker_then_a_worker_killed_then_resume_is_bit_identical(
    uninterrupted, tmp_path
):
    # One job through two faults (one test: each 2-worker launch costs tens of seconds here).
    workdir = tmp_path / "run"

    # 1. A scheduler often notifies one worker only: worker 1 (not the chief) gets SIGTERM at a
    # chosen step; both workers must save the same step and exit 75.
    signal_after = SIGNAL_AFTER
    launch = Launch(workdir, tmp_path / "log1")
    pids = launch.worker_pids()
    launch.wait_for_backup(signal_after)
    os.kill(pids[1], signal.SIGTERM)
    assert launch.wait() == 75, launch.text()[-3000:]
    stopped = re.findall(r"^\[worker (\d)\] stopped: preempted at step (\d+)", launch.text(), re.M)
    assert sorted(w for w, _ in stopped) == ["0", "1"], launch.text()[-3000:]
    steps = {int(s) for _, s in stopped}
    assert len(steps) == 1  # every worker saved the same step
    step = steps.pop()
    assert signal_after <= step < TOTAL_STEPS - 2 and backup_steps(workdir)[-1] == step

    # 2. The re-run resumes there; then a worker (the chief) is killed outright (the
    # OOM killer, a lost node): the survivor's collective fails, it names the lost worker and
    # exits 69; the launcher names it too. `wait`'s timeout bounds the whole stop.
    kill_after = min(step + KILL_STEPS_LATER, TOTAL_STEPS - 2)
    victim = VICTIM
    launch = Launch(workdir, tmp_path / "log2")
    pids = launch.worker_pids()
    launch.wait_for_backup(kill_after)
    os.kill(pids[victim], signal.SIGKILL)
    assert launch.wait(timeout=120) == 69, launch.text()[-3000:]
    text = launch.text()
    assert f"[worker 0] resuming from step {step} of {TOTAL_STEPS}" in text
    assert f"worker {victim} (pid {pids[victim]}) was lost: killed by SIGKILL" in text
    survivor = 1 - victim
    lost = f"[worker {survivor}] error: lost worker {victim} (/job:worker/replica:0/task:{victim})"
    assert lost in text, text[-3000:]

    # 3. The same launch again resumes from the last backup and ends bit-identical.
    again = Launch(workdir, tmp_path / "log3")
    assert again.wait() == 0, again.text()[-3000:]
    resumed = re.search(
        rf"^\[worker 0\] resuming from step (\d+) of {TOTAL_STEPS}$", again.text(), re.M
    )
    assert resumed and int(resumed.group(1)) >= kill_after
    assert digests(again) == digests(uninterrupted)


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


def _fake_worker(code: str):
    return subprocess.Popen([sys.executable, "-c", f"import os, signal, sys, time\n{code}"])


@pytest.mark.parametrize(
    "codes, status, lines",
    [
        (["sys.exit(0)", "sys.exit(0)"], 0, []),
        (["sys.exit(75)", "time.sleep(0.3); sys.exit(75)"], 75, []),
        (["sys.exit(75)", "sys.exit(130)"], 130, []),
        (["sys.exit(2)", "sys.exit(2)"], 2, ["exited with status 2; stopping all workers"]),
        # A crash is the cause; its peer then exits 69 (it lost the crashed worker).
        (["sys.exit(1)", "time.sleep(0.3); sys.exit(69)"], 1, ["worker 0 exited with status 1"]),
        (["sys.exit(1)", "time.sleep(60)"], 1, ["worker 1 (pid"]),  # killed by us: not "lost"
        # Killed outright, whichever ends first; a frozen worker is killed after the grace.
        (["time.sleep(0.3); sys.exit(69)", "os.kill(os.getpid(), 9)"], 69, ["1 (pid"]),
        (["os.kill(os.getpid(), 9)", "sys.exit(69)"], 69, ["0 (pid"]),
        (["sys.exit(69)", "time.sleep(60)"], 69, ["still running after 3 s; killing it"]),
    ],
)
def test_launcher_status_and_lines(codes, status, lines, capsys, monkeypatch):
    from launch import multiworker

    monkeypatch.setattr(multiworker, "LOST_WORKER_GRACE_S", 3.0)
    procs = [_fake_worker(code) for code in codes]
    assert multiworker._supervise(procs, threading.Event()) == status
    err = capsys.readouterr().err
    for line in lines:
        assert line in err, err
    if status == 69 and "killing" not in err:
        assert "was lost: killed by SIGKILL" in err


# TensorFlow 2.21's messages, as the loopback runs above produced them.
HEARTBEAT = (
    "Collective ops is aborted by: Error reported from /job:worker/task:1: The following tasks "
    "are unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have "
    "crashed. Check the task logs for an earlier error"
)
SOCKET = (
    "Collective ops is aborted by: Socket closed\nAdditional GRPC error information from remote "
    "target /job:worker/replica:0/task:1 while calling /tensorflow.WorkerService/RecvBuf:"
)
LEADER = (
    "Collective ops is aborted by: Deadline Exceeded\n\nRPC: "
    "/tensorflow.CoordinationService/Heartbeat"
)


WORKER_1 = "worker 1 (/job:worker/replica:0/task:1)"
UNAVAILABLE = functools.partial(tf.errors.UnavailableError, None, None)


@pytest.mark.parametrize(
    "error, expected",
    [
        (UNAVAILABLE(HEARTBEAT), f"{WORKER_1}: it stopped sending heartbeats"),
        (UNAVAILABLE(SOCKET), f"{WORKER_1}: its connection closed"),
        (
            tf.errors.DeadlineExceededError(None, None, LEADER),
            "worker 0 (/job:worker/replica:0/task:0, which runs the coordination service): "
            "it stopped answering",
        ),
        (
            UNAVAILABLE("Connection reset by peer\nmore"),
            "contact with the cluster (UnavailableError: Connection reset by peer)",
        ),
        (tf.errors.InvalidArgumentError(None, None, "Incompatible shapes"), None),
        (ValueError("not a TensorFlow error"), None),
    ],
)
def test_lost_worker_names_the_worker_from_tensorflows_message(error, expected):
    assert lost_worker(error) == expected
