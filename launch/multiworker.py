"""Local multi-worker launcher: `python -m launch.multiworker --num_workers=N -- <train flags>`.

Starts N `launch.train --strategy=multi_worker` processes on 127.0.0.1, each with a free port and
its own `TF_CONFIG`, prefixes every output line with the worker's name (a worker's stderr goes
to stderr) and forwards SIGTERM / SIGINT to all of them (they stop together at one saved step; a
second Ctrl-C ends them at once). A worker that dies is named in one line; the others then stop
by themselves (TensorFlow aborts their collectives) and any still running after
`LOST_WORKER_GRACE_S` is killed. For real clusters use TensorFlow's own machinery
(`--cluster=slurm`, or `TF_CONFIG` from Kubernetes): see WORKSPACE.md.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import flags

from launch import common

flags.DEFINE_integer("num_workers", 2, "Number of worker processes on this machine.")
flags.DEFINE_string("module", "launch.train", "The entry point each worker runs.")
FLAGS = flags.FLAGS


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free on 127.0.0.1 (held open together so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports: list[int], index: int) -> str:
    """TF_CONFIG of worker `index` in a loopback cluster (worker 0 is the chief)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def _say(message: str) -> None:
    """One line of the launcher's own on stderr (between the workers' prefixed lines)."""
    print(message, file=sys.stderr, flush=True)


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(f"{prefix}{line}")
        out.flush()


# Worker exit statuses (launch/train.py) that mean "stopped in agreement, a backup was saved".
STOPPED = (common.EXIT_PREEMPTED, common.EXIT_INTERRUPTED)
EXIT_LOST_WORKER = common.EXIT_LOST_WORKER
# After a worker is lost, the others end by themselves: at once when its sockets closed, within
# TensorFlow's coordination-service heartbeat timeout (10 s) when it froze. This bounds the wait
# before the launcher kills them; after a coordinated stop it bounds the wait for the last save.
LOST_WORKER_GRACE_S = 15.0
STOP_GRACE_S = 120.0


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exited with status {status}"


def launch_workers(num_workers: int, module: str, train_args: list[str]) -> int:
    """Runs the workers to completion and returns the job's exit status.

    0 when all succeed; 75 / 130 when they stopped together on SIGTERM / SIGINT (130 when this
    launcher or any worker was interrupted); 69 when a worker was lost (killed by a signal, or
    frozen: the others stop by themselves, any left after `LOST_WORKER_GRACE_S` are killed);
    otherwise the status of the worker that failed on its own (1: an error, 2: bad input).
    """
    ports = free_ports(num_workers)
    procs = []
    for index in range(num_workers):
        env = {**os.environ, "TF_CONFIG": tf_config(ports, index)}
        cmd = [sys.executable, "-m", module, "--strategy=multi_worker", *train_args]
        procs.append(
            subprocess.Popen(
                cmd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                bufsize=1,
                # Own session: a terminal's Ctrl-C reaches the workers once, forwarded from here,
                # not a second time through the process group (which would end them at once).
                start_new_session=True,
            )
        )
        _say(f"worker {index}: pid {procs[-1].pid}")
    # A worker's stdout goes to ours and its stderr (errors, warnings) to our stderr.
    pumps = [
        threading.Thread(target=_pump, args=(stream, f"[worker {i}] ", out), daemon=True)
        for i, p in enumerate(procs)
        for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr))
    ]
    for pump in pumps:
        pump.start()
    interrupted = threading.Event()

    def forward(signum, frame):
        del frame
        if signum == signal.SIGINT:
            interrupted.set()
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = _supervise(procs, interrupted)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for pump in pumps:
            pump.join(timeout=5)
    return status


def _supervise(procs, interrupted: threading.Event) -> int:
    """Waits for the workers; decides the job's status once one has ended badly."""

    def stopped(status):  # a coordinated stop, or a second Ctrl-C that ended a worker at once
        return status in STOPPED or (interrupted.is_set() and status == -signal.SIGINT)

    killed = set()
    while True:
        # Poll every worker each time (`any` over a generator would stop at the first live one
        # and never notice that a later one died).
        running = [p.poll() is None for p in procs]
        ended = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode not in (None, 0)]
        if ended:
            index, status = ended[0]
            if not stopped(status) and status != EXIT_LOST_WORKER and status >= 0:
                _say(f"worker {index} {_describe(status)}; stopping all workers")
            reported = _report_lost(procs, stopped, set())
            # After a coordinated stop the others are saving the same step; after a lost worker
            # they stop by themselves (a frozen one never does: it is killed).
            grace = STOP_GRACE_S if stopped(status) else LOST_WORKER_GRACE_S
            killed = _wait_then_kill(procs, grace)
            _report_lost(procs, stopped, reported | killed)
            break
        if not any(running):
            break
        time.sleep(0.2)
    statuses = [p.returncode for p in procs]
    if all(s == 0 for s in statuses):
        return 0
    if all(stopped(s) for s in statuses):
        return 130 if interrupted.is_set() or 130 in statuses else 75
    if any(s < 0 and not stopped(s) and i not in killed for i, s in enumerate(statuses)):
        return EXIT_LOST_WORKER
    # A worker that failed on its own (1: an error, 2: bad input) is the cause; its peers then
    # exit 69 (they lost it).
    failed = [s for s in statuses if s > 0 and s not in STOPPED and s != EXIT_LOST_WORKER]
    return failed[0] if failed else EXIT_LOST_WORKER


def _report_lost(procs, stopped, skip: set) -> set:
    """One line per worker killed by a signal (not by us); returns the workers reported."""
    lost = {
        i
        for i, p in enumerate(procs)
        if p.returncode is not None and p.returncode < 0 and not stopped(p.returncode)
    } - skip
    for i in sorted(lost):
        _say(f"worker {i} (pid {procs[i].pid}) was lost: {_describe(procs[i].returncode)}")
    return skip | lost


def _wait_then_kill(procs, grace: float) -> set:
    """Waits up to `grace` seconds for every worker; kills the rest. Returns those killed."""
    deadline = time.monotonic() + grace
    killed = set()
    for index, proc in enumerate(procs):
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _say(f"worker {index} (pid {proc.pid}) still running after {grace:.0f} s; killing it")
            proc.kill()
            proc.wait()
            killed.add(index)
    return killed


def main(argv):
    if FLAGS.num_workers < 1:
        common.fail(f"--num_workers must be >= 1, got {FLAGS.num_workers}")
    sys.exit(launch_workers(FLAGS.num_workers, FLAGS.module, argv[1:]))


if __name__ == "__main__":
    common.run(
        main,
        unknown_flag_hint=(
            "launch.multiworker's own flags are --num_workers and --module; training flags go "
            "after `--`: python -m launch.multiworker --num_workers=2 -- --workdir=DIR [flags]"
        ),
    )
