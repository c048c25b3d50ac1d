"""The workdir of a run: its files, atomic writes, resume checks. Host side, chief only."""

from __future__ import annotations

import json
import os

from siamese_tf.errors import InputError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
MODEL = "model.keras"
REPORT = "report.json"
LOGS = "logs"

# Fields that describe where data lives or how the job is run, not what is trained: changing
# them on resume is always allowed.
RUNTIME_FIELDS = ("manual_dir", "data_dir", "eval_batch_size")
# Fields that set the run's length: a resume may raise them to extend the run (see
# `check_resume_config`).
LENGTH_FIELDS = ("epochs", "max_steps")
CHECKPOINT_DIRS = ("backup", "checkpoints")


def path(workdir: str, name: str) -> str:
    """Path of a workdir file."""
    return os.path.join(workdir, name)


def write_json_atomic(filename: str, payload) -> None:
    """Writes JSON through a temporary file and `os.replace`, so readers never see half a file."""
    tmp = f"{filename}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, filename)


def save_model_atomic(model, filename: str) -> None:
    """Saves a `.keras` file through a temporary file, so a crash never leaves a broken model."""
    tmp = f"{filename[: -len('.keras')]}.tmp.keras"
    model.save(tmp)
    os.replace(tmp, filename)


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds a checkpoint to resume from (a backup or an epoch checkpoint)."""
    import tensorflow as tf

    return any(
        tf.train.latest_checkpoint(path(workdir, name)) is not None for name in CHECKPOINT_DIRS
    )


def check_resume_config(workdir: str, config_dict: dict, allow_change: bool) -> bool:
    """Compares a new run's config with the one saved in `workdir`.

    A workdir whose config.json has no checkpoint beside it (a run that failed before its first
    save) holds nothing to resume: it is a new run, whatever its config. On resume, `epochs`
    and `max_steps` may change as long as the run gets no shorter (raising them extends it;
    config.json then records the new values); the runtime fields (`RUNTIME_FIELDS`) may change
    freely; any other change is refused.

    Args:
      workdir: the run directory.
      config_dict: the new config as a dict.
      allow_change: accept differences (`--allow_config_change`).

    Returns:
      True when `workdir` already holds a run (this is a resume).

    Raises:
      InputError: the configs differ in a training field, or the new length would shorten the
        run, and `allow_change` is False.
    """
    filename = path(workdir, CONFIG)
    if not os.path.exists(filename) or not has_checkpoint(workdir):
        return False
    with open(filename, encoding="utf-8") as f:
        saved = json.load(f)
    changed = sorted(
        name
        for name, value in config_dict.items()
        if name not in RUNTIME_FIELDS
        and name not in LENGTH_FIELDS
        and name in saved
        and saved[name] != value
    )
    if changed and not allow_change:
        details = ", ".join(f"{n}: {saved[n]!r} -> {config_dict[n]!r}" for n in changed)
        raise InputError(
            f"{workdir} holds a run with a different config ({details}); use a new --workdir, "
            f"or pass --allow_config_change to resume anyway"
        )
    old_total, new_total = _total_steps(saved), _total_steps(config_dict)
    if None not in (old_total, new_total) and new_total < old_total and not allow_change:
        details = ", ".join(
            f"{n}: {saved[n]!r} -> {config_dict[n]!r}"
            for n in LENGTH_FIELDS
            if saved.get(n) != config_dict.get(n)
        )
        raise InputError(
            f"{workdir} holds a run of {old_total} steps; {details} would shorten it to "
            f"{new_total}: a resume may only raise --epochs / --max_steps; use a new --workdir, "
            "or pass --allow_config_change"
        )
    return True


def _total_steps(config_dict: dict) -> int | None:
    """Steps of the run a config dict describes (as `TrainConfig.total_steps`)."""
    try:
        total = int(config_dict["epochs"]) * int(config_dict["steps_per_epoch"])
        max_steps = int(config_dict.get("max_steps", 0))
    except (KeyError, TypeError, ValueError):
        return None
    return min(total, max_steps) if max_steps else total


def truncate_metrics(workdir: str, step: int) -> None:
    """Drops metrics.jsonl lines written after `step` (a job killed between log and checkpoint)."""
    filename = path(workdir, METRICS)
    if not os.path.exists(filename):
        return
    with open(filename, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if _step_of(line) <= step]
    if len(kept) != len(lines):
        with open(f"{filename}.tmp", "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(f"{filename}.tmp", filename)


def _step_of(line: str) -> float:
    """The step of a metrics line; a line cut short by a kill counts as "after" any step."""
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return float("inf")
