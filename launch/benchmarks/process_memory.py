"""Peak memory of one measurement, taken in a fresh Python process (mining, pipeline, streaming).

A peak RSS cannot be lowered in-process (TensorFlow's start-up and every earlier measurement stay
in it), so each measurement that reports memory runs alone in a child process started here, and
the child reads its own peak with `peak_rss_mb`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from launch import WORKSPACE

_RESULT = "RESULT "


def peak_rss_mb() -> float:
    """Peak RSS of this process in MB: VmHWM where Linux has it, else `ru_maxrss`.

    `ru_maxrss` survives fork + exec on Linux: a child started by a process that has grown
    reports the parent's peak until it exceeds it. VmHWM belongs to the process' own memory
    map, which exec replaces, so it is the child's own peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak_rss() -> bool:
    """Resets the peak-RSS mark to the current RSS (Linux `clear_refs`); False if not allowed.

    So that the imports' transient peak does not hide the measurement's.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_in_subprocess(function, *args, env=None, timeout=None) -> dict:
    """`function(*args)` (a module-level function returning a JSON dict) in a fresh process.

    Args:
      function: the function to call; the child imports it from its module.
      *args: its arguments (str / int / float, written into the child's code with `repr`).
      env: extra environment variables of the child.
      timeout: seconds before the child is killed (None: no limit).

    Returns:
      The dict the function returned in the child.

    Raises:
      RuntimeError: the child failed; the message is its exit status and last line of output.
    """
    code = (
        f"import json; from {function.__module__} import {function.__name__} as f; "
        f"print({_RESULT!r} + json.dumps(f(*{args!r})))"
    )
    child_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(WORKSPACE), child_env.get("PYTHONPATH")) if p
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=WORKSPACE,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for line in done.stdout.splitlines():
        if done.returncode == 0 and line.startswith(_RESULT):
            return json.loads(line[len(_RESULT) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
    raise RuntimeError(f"exit {done.returncode}: {' '.join(tail)}")
