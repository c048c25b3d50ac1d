"""`python -m launch.train` through absl: a tiny run, and bad input as one line with exit 2."""

import json

import pytest
from helpers import TINY_FLAGS, one_error_line, run_cli, summary_of


def run_train(*args, timeout=240):
    return run_cli("train", *args, timeout=timeout)


def test_cli_trains_a_tiny_run(tmp_path):
    # --jit_compile is not run here: XLA compiling every train and evaluation shape took 100 s
    # of CPU; test_config_audit.py compiles every P×K loss and runs --jit_compile's field.
    workdir = tmp_path / "run"
    result = run_train(f"--workdir={workdir}", *TINY_FLAGS)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 0.0 <= summary_of(result.stdout)["test_auc"] <= 1.0
    assert json.loads((workdir / "report.json").read_text())["steps"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dataset=imagenet"], "unknown dataset"),
        (["--classes_per_batch=11"], "classes_per_batch=11"),
        (["--samples_per_class=0"], "samples_per_class must be"),
        (["--strategy=tpu_pod"], "--strategy=tpu_pod is not one of: auto, default, one_device"),
        (["--loss=bogus"], "--loss=bogus is not one of: triplet_semihard, triplet_hard"),
        (["--distance_metric=l2"], "--distance_metric=l2 is not one of: L2, squared-L2"),
        (["--epochs=two"], "epochs"),
        (["--loss=circle", "--circle_gamma=0"], "--circle_gamma must be > 0"),
        (["--loss=arcface", "--arcface_margin=2"], "--arcface_margin must be in"),
        # P×K-only settings with a pair loss, and the reverse: too few examples per class.
        (["--loss=contrastive", "--cross_batch_memory=64"], "--cross_batch_memory needs a P×K"),
        (["--loss=supcon", "--samples_per_class=1"], "--samples_per_class must be >= 2"),
        (["--loss=contrastive", "--pairs_per_batch=1"], "--pairs_per_batch must be >= 2"),
        (["--classes_per_batch=1"], "--classes_per_batch must be >= 2"),
        # A later --workdir wins: /proc refuses new files even to root, unlike a chmod-ed folder.
        (["--workdir=/proc/siamese_tf_test/run"], "not writable"),
        (["--workdir=FILE"], "not a directory"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_workdir(tmp_path, args, message):
    workdir = tmp_path / "run"
    (tmp_path / "file").write_text("x")
    args = [a.replace("FILE", str(tmp_path / "file")) for a in args]
    assert message in one_error_line(run_train(f"--workdir={workdir}", *args))
    assert not workdir.exists()


def test_pair_losses_draw_pairs_per_batch_and_leave_p_and_k_alone(tmp_path):
    # P and K size P×K batches only: a pair loss takes --pairs_per_batch, whatever they are.
    workdir = tmp_path / "run"
    flags = "--loss=contrastive --pairs_per_batch=6 --classes_per_batch=1 --samples_per_class=1"
    short = "--epochs=1 --steps_per_epoch=2 --calibration_pairs=40 --test_pairs=40"
    result = run_train(f"--workdir={workdir}", *flags.split(), *short.split())
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["pairs_per_batch"] == 6 and config["loss"] == "contrastive"
