"""Local multi-worker launcher: `python -m launch.multiworker --num_workers=N -- <train flags>`.

Starts N `launch.train --strategy=multi_worker` processes on 127.0.0.1, each with a free port and
its own `TF_CONFIG`, prefixes every output line with the worker's name (a worker's stderr goes
to stderr), forwards SIGTERM/SIGINT to all of them, and stops all with a clear message if one
dies. For real clusters use TensorFlow's own machinery (`--cluster=slurm`, or `TF_CONFIG` from
Kubernetes): see WORKSPACE.md.
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


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(f"{prefix}{line}")
        out.flush()


def launch_workers(num_workers: int, module: str, train_args: list[str]) -> int:
    """Runs the workers to completion. Returns the exit status (the first failure's, else 0)."""
    ports = free_ports(num_workers)
    procs = []
    for index in range(num_workers):
        env = {**os.environ, "TF_CONFIG": tf_config(ports, index)}
        cmd = [sys.executable, "-m", module, "--strategy=multi_worker", *train_args]
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
            )
        )
    # A worker's stdout goes to ours and its stderr (errors, warnings) to our stderr.
    pumps = [
        threading.Thread(target=_pump, args=(stream, f"[worker {i}] ", out), daemon=True)
        for i, p in enumerate(procs)
        for stream, out in ((p.stdout, sys.stdout), (p.stderr, sys.stderr))
    ]
    for pump in pumps:
        pump.start()

    def forward(signum, frame):
        del frame
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        while any(p.poll() is None for p in procs):
            failed = [
                (i, p.returncode) for i, p in enumerate(procs) if p.returncode not in (None, 0)
            ]
            if failed:
                index, status = failed[0]
                print(
                    f"worker {index} exited with status {status}; stopping all workers",
                    file=sys.stderr,
                )
                for proc in procs:
                    if proc.poll() is None:
                        proc.terminate()
                for proc in procs:
                    try:
                        proc.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                break
            time.sleep(0.2)
        status = status or next((p.returncode for p in procs if p.returncode), 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for pump in pumps:
            pump.join(timeout=5)
    return status


def main(argv):
    if FLAGS.num_workers < 1:
        common.fail(f"--num_workers must be >= 1, got {FLAGS.num_workers}")
    train_args = argv[1:]
    sys.exit(launch_workers(FLAGS.num_workers, FLAGS.module, train_args))


if __name__ == "__main__":
    common.run(
        main,
        unknown_flag_hint=(
            "launch.multiworker's own flags are --num_workers and --module; training flags go "
            "after `--`: python -m launch.multiworker --num_workers=2 -- --workdir=DIR [flags]"
        ),
    )
