"""Early stopping from the CLI: stops on the selection metric, keeps the best epoch, resumes
exactly from a run stopped mid-epoch, and a finished early-stopped run is not trained further."""

import json
import pathlib

import pytest
from helpers import start_cli, summary_of

# On digits (seed 0, semi-hard triplets, no augmentation), val_eer is best at epoch 6 and worse
# at epoch 7: patience 1 stops at step 35 of 40 (measured; the numbers move when the run's
# sub-seeds or these settings do, see siamese_tf/seeds.py).
BEST_EPOCH = 6
STOPPED_AT = (BEST_EPOCH + 1) * 5
ARGS = (
    "--loss=triplet_semihard --noaugment --deterministic --epochs=8 --steps_per_epoch=5"
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


def test_stops_on_the_metric_and_keeps_the_best_epoch(uninterrupted):
    workdir, _ = uninterrupted
    saved = report(workdir)
    assert saved["steps"] == STOPPED_AT < 40
    expected = {"metric": "val_eer", "best_epoch": BEST_EPOCH, "stopped": True}
    assert saved["early_stopping"] == expected
    eer = [json.loads(line)["val_eer"] for line in (workdir / "metrics.jsonl").open()]
    best = BEST_EPOCH - 1
    assert len(eer) == BEST_EPOCH + 1 and min(eer) == eer[best] and eer[best + 1] > eer[best]
    # The kept model is the best epoch's: its threshold is the one calibrated then.
    threshold = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[best])
    assert saved["test"]["threshold"] == pytest.approx(threshold["val_threshold"])


def test_run_stopped_mid_epoch_resumes_the_stopping_state_exactly(uninterrupted, tmp_path):
    # Stopped by --max_steps two steps into the epoch after the best one, then re-run without
    # it. The cut epoch must not end (no calibration, no early-stopping verdict on part of an
    # epoch): it once counted as the worse epoch 7, so the re-run trained nothing and reported
    # 32 steps and no calibration instead of the uninterrupted run's 35.
    workdir, summary = uninterrupted
    cut = tmp_path / "cut"
    stopped = finish(start(cut, f"--max_steps={BEST_EPOCH * 5 + 2}"))
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
    assert json.loads((cut / "report.json").read_text())["start_step"] == STOPPED_AT
