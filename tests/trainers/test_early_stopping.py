"""Early stopping from the CLI: stops on the selection metric, keeps the best epoch, resumes
exactly from a run stopped mid-epoch, and a finished early-stopped run is not trained further."""

import json
import pathlib

import pytest
from helpers import start_cli, summary_of

# On digits (seed 0, semi-hard triplets, no augmentation) with patience 1, the run stops at the
# first epoch whose val_eer is not better than the best before it. Which epoch that is depends on
# the CPU's kernels (oneDNN picks per instruction set: epoch 3 on one machine, 6 on another), so
# the tests read it from the run's own log and check the stop against it.
EPOCHS, STEPS_PER_EPOCH = 8, 5
ARGS = (
    "--loss=triplet_semihard --noaugment --deterministic"
    f" --epochs={EPOCHS} --steps_per_epoch={STEPS_PER_EPOCH}"
    " --save_every_steps=2 --calibration_pairs=200 --test_pairs=100"
    " --early_stopping_patience=1 --early_stopping_metric=val_eer --strategy=default"
).split()


def start(workdir, *extra):
    return start_cli("train", f"--workdir={workdir}", *ARGS, *extra)


def finish(proc):
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return summary_of(out)


def report(workdir):
    data = json.loads((pathlib.Path(workdir) / "report.json").read_text())
    for key in ("train_seconds", "start_step"):
        data.pop(key)
    return data


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("stopping")
    return workdir, finish(start(workdir))


def best_epoch(workdir) -> int:
    """The epoch (1-based) early stopping should keep: the log ends one epoch after it."""
    eer = [json.loads(line)["val_eer"] for line in (workdir / "metrics.jsonl").open()]
    best = len(eer) - 1
    # Improving on every epoch up to the best one, then one epoch that does not.
    assert all(later < earlier for earlier, later in zip(eer[: best - 1], eer[1:best], strict=True))
    assert eer[-1] >= eer[best - 1], eer
    return best


def test_stops_on_the_metric_and_keeps_the_best_epoch(uninterrupted):
    workdir, _ = uninterrupted
    saved = report(workdir)
    best = best_epoch(workdir)
    assert saved["steps"] == (best + 1) * STEPS_PER_EPOCH < EPOCHS * STEPS_PER_EPOCH
    expected = {"metric": "val_eer", "best_epoch": best, "stopped": True}
    assert saved["early_stopping"] == expected
    # The kept model is the best epoch's: its threshold is the one calibrated then.
    threshold = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[best - 1])
    assert saved["test"]["threshold"] == pytest.approx(threshold["val_threshold"])


def test_run_stopped_mid_epoch_resumes_the_stopping_state_exactly(uninterrupted, tmp_path):
    # Stopped by --max_steps two steps into the epoch after the best one, then re-run without
    # it. The cut epoch must not end (no calibration, no early-stopping verdict on part of an
    # epoch): it once counted as the worse epoch, so the re-run trained nothing and reported
    # two steps past the best epoch and no calibration instead of the uninterrupted run's steps.
    workdir, summary = uninterrupted
    best = best_epoch(workdir)
    cut = tmp_path / "cut"
    stopped = finish(start(cut, f"--max_steps={best * STEPS_PER_EPOCH + 2}"))
    assert stopped["test_auc"] > 0.5
    assert report(cut)["calibration"]["val_threshold"] == pytest.approx(
        stopped["threshold"], abs=1e-4
    )
    resumed = finish(start(cut))
    assert resumed["weights_sha256"] == summary["weights_sha256"]
    assert report(cut) == report(workdir)
    # Re-running the early-stopped run trains nothing more.
    again = finish(start(cut))
    assert again["weights_sha256"] == summary["weights_sha256"]
    start_step = json.loads((cut / "report.json").read_text())["start_step"]
    assert start_step == (best + 1) * STEPS_PER_EPOCH
