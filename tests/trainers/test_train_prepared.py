"""Training from a prepared store: a `--deterministic` run from `folder:DIR` and from its
`prepared:DIR` end bit-identical with the same report; exact resume; bad records."""

import json
import pathlib
import shutil

import numpy as np
import pytest
from helpers import png_bytes, start_cli, summary_of
from sklearn.datasets import load_digits

ARGS = (
    "--deterministic --epochs=2 --steps_per_epoch=6 --save_every_steps=2 --classes_per_batch=5 "
    "--samples_per_class=4 --calibration_pairs=100 --test_pairs=100 --strategy=default"
).split()


def run(module, *args, wait=True):
    proc = start_cli(module, *args)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def report(workdir):
    data = json.loads((pathlib.Path(workdir) / "report.json").read_text())
    data.pop("train_seconds")
    return data


@pytest.fixture(scope="module")
def digits_folder_and_store(tmp_path_factory):
    """30 digits of each class as 8×8 PNGs in class folders, and its prepared store."""
    root = tmp_path_factory.mktemp("digits_png")
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for label in range(10):
        folder = root / "img" / f"digit_{label}"
        folder.mkdir(parents=True)
        for i, row in enumerate(np.flatnonzero(digits.target == label)[:30]):
            (folder / f"{i:02d}.png").write_bytes(png_bytes(images[row]))
    code, _, err = run(
        "launch.prepare", f"--dataset=folder:{root / 'img'}", f"--out={root / 'store'}"
    )
    assert code == 0, err[-2000:]
    return root / "img", root / "store"


@pytest.fixture(scope="module")
def two_runs(digits_folder_and_store, tmp_path_factory):
    folder, store = digits_folder_and_store
    root = tmp_path_factory.mktemp("runs")
    results = {}
    for name, spec in (("folder", f"folder:{folder}"), ("prepared", f"prepared:{store}")):
        code, out, err = run("launch.train", f"--workdir={root / name}", f"--dataset={spec}", *ARGS)
        assert code == 0, err[-2000:]
        results[name] = (root / name, summary_of(out))
    return results


def test_folder_and_prepared_runs_are_bit_identical(two_runs):
    (folder_dir, folder), (store_dir, store) = two_runs["folder"], two_runs["prepared"]
    assert folder["weights_sha256"] == store["weights_sha256"]
    assert report(folder_dir) == report(store_dir)
    assert report(store_dir)["steps"] == 12


def test_stopped_streamed_run_resumes_exactly(two_runs, digits_folder_and_store, tmp_path):
    # Stopped at a chosen step (--max_steps=4), then re-run to the end: the stream resumes at the
    # record it had reached. (A real SIGKILL is tested once, in trainers/test_resume.py.)
    _, store = digits_folder_and_store
    workdir = tmp_path / "stopped"
    args = (f"--workdir={workdir}", f"--dataset=prepared:{store}", *ARGS)
    code, _, err = run("launch.train", *args, "--max_steps=4")
    assert code == 0, err[-2000:]
    assert report(workdir)["steps"] == 4
    code, out, err = run("launch.train", *args)
    assert code == 0, err[-2000:]
    resumed = report(workdir)
    assert resumed["start_step"] == 4
    assert summary_of(out)["weights_sha256"] == two_runs["prepared"][1]["weights_sha256"]
    resumed.pop("start_step")
    expected = report(two_runs["prepared"][0])
    expected.pop("start_step")
    assert resumed == expected


def test_a_corrupt_record_stops_training_with_one_line_and_no_checkpoint(
    digits_folder_and_store, tmp_path
):
    _, store = digits_folder_and_store
    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    with np.load(broken / "index.npz") as index:
        offsets, lengths = index["offset"], index["length"]
    shard = bytearray((broken / "records-00000.bin").read_bytes())
    for offset, length in zip(offsets, lengths, strict=True):  # every record: the first read fails
        shard[int(offset) + int(length) // 2] ^= 0xFF
    (broken / "records-00000.bin").write_bytes(bytes(shard))
    workdir = tmp_path / "run"
    code, _, err = run(
        "launch.train", f"--workdir={workdir}", f"--dataset=prepared:{broken}", *ARGS
    )
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "is corrupt" in lines[0] and "(class 'digit_" in lines[0]
    assert not list(workdir.glob("backup/step-*")) and not list(workdir.glob("checkpoints/*"))


@pytest.mark.parametrize("loss", ["contrastive", "triplet_hard"])
def test_open_set_split_and_other_losses_train_from_a_store(
    digits_folder_and_store, tmp_path, loss
):
    import tensorflow as tf

    from trainers import metric_learning
    from trainers.config import TrainConfig

    _, store = digits_folder_and_store
    sizes = dict(classes_per_batch=4, samples_per_class=4, epochs=1, steps_per_epoch=3)
    held_out = dict(
        calibration_fraction=0.2, test_fraction=0.2, calibration_pairs=50, test_pairs=50
    )
    config = TrainConfig(
        dataset=f"prepared:{store}", split_by="class", loss=loss, **sizes, **held_out
    )
    data = metric_learning.prepare_data(config)
    assert not data.train.in_memory and not data.test.in_memory
    report = metric_learning.train_and_evaluate(
        config, str(tmp_path), tf.distribute.get_strategy(), data=data, verbose=0
    )
    assert report["steps"] == 3 and report["one_nn_accuracy"] is None
    assert 0.0 <= report["test"]["auc"] <= 1.0
