"""A newcomer's first hour, through the CLI: own small data, help, messages that say the fix
(a subprocess costs a TensorFlow start, so a scenario chains one story's steps in one workdir)."""

import json

import helpers
import numpy as np
import pytest
from helpers import TINY_FLAGS, cli_env, one_error_line

from trainers.config import TrainConfig
from trainers.field_docs import attribute_docs, undocumented_fields

# Keep runs short; none of these flags is one the small-data fitting may change.
SHORT = TINY_FLAGS


def run_cli(module, *args, native_logs=False, timeout=300):
    # What a user has: no TF_CPP_MIN_LOG_LEVEL (launch/ must keep it quiet), no TF_CONFIG.
    env = cli_env(unset=("TF_CONFIG", "SIAMESE_TF_NATIVE_LOGS", "TF_CPP_MIN_LOG_LEVEL"))
    if native_logs:
        env["SIAMESE_TF_NATIVE_LOGS"] = "1"
    return helpers.run_cli(module, *args, env=env, timeout=timeout)


def image_folder(root, sizes: dict, loose: int = 0):
    """A folder of 8x8 grayscale PNGs: one sub-folder per class ({name: images}), `loose`
    images directly in `root`."""
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for c, (name, count) in enumerate(sizes.items()):
        (root / name).mkdir()
        base = rng.integers(0, 256, (8, 8))
        for i in range(count):
            noise = rng.integers(-20, 21, (8, 8))
            pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{c}_{i}.png")
    for i in range(loose):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def test_ten_class_folder_split_by_class_first_time(tmp_path):
    faces = image_folder(tmp_path / "faces", {f"person_{i}": 6 for i in range(10)})
    workdir = tmp_path / "run"
    data = [f"--workdir={workdir}", f"--dataset=folder:{faces}", "--split_by=class", *SHORT]
    # A value the user set that the data cannot serve: the split, the count and the fix;
    # nothing written.
    line = one_error_line(run_cli("train", *data, "--classes_per_batch=10"))
    assert "6 classes with 2+ examples in the training split" in line
    assert "set --classes_per_batch=6" in line
    assert not workdir.exists()
    # A workdir that a failed run left with a config but no checkpoint is a new run.
    workdir.mkdir()
    (workdir / "config.json").write_text(json.dumps({"classes_per_batch": 10, "epochs": 9}))
    result = run_cli("train", *data)
    assert result.returncode == 0, result.stderr[-3000:]
    # Defaults fitted to the data, said on one line; a clean log (no warning, no ANSI codes,
    # one line per epoch when stdout is not a terminal).
    info = [line for line in result.stdout.splitlines() if line.startswith("info: ")]
    assert len(info) == 1, result.stdout
    for chosen in ("--calibration_fraction=0.2", "--test_fraction=0.2", "--classes_per_batch=6"):
        assert chosen in info[0]
    assert result.stderr == "", result.stderr
    assert "\x1b[" not in result.stdout
    epochs = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 1 and epochs[0].startswith("epoch 1/1 (step 3, "), result.stdout
    config = json.loads((workdir / "config.json").read_text())
    assert config["classes_per_batch"] == 6 and config["calibration_fraction"] == 0.2
    assert config["split_sizes"] == {"train": 36, "calibration": 12, "test": 12}
    for name in ("test_roc_curve.png", "test_distance_histograms.png", "calibration_curves.png"):
        assert (workdir / "plots" / name).read_bytes().startswith(b"\x89PNG"), name
    # Evaluation: 2 test classes cannot fill the default 5- and 20-way episodes; verification
    # still completes, the exit status says not all did.
    result = run_cli("evaluate", f"--workdir={workdir}", "--protocol=verification,oneshot")
    assert result.returncode == 3, result.stderr[-3000:]
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: oneshot: "), result.stderr
    assert "--ways=2" in errors[0]
    summaries = [line for line in result.stdout.splitlines() if line.startswith("summary: ")]
    assert len(summaries) == 1 and '"verification"' in summaries[0]
    oneshot = json.loads((workdir / "eval" / "oneshot.json").read_text())
    assert oneshot["status"] == "failed" and "--ways=2" in oneshot["error"]
    assert json.loads((workdir / "eval" / "verification.json").read_text())["status"] == "ok"
    # Resume: --epochs may be raised to extend the run (config.json records it) ...
    result = run_cli("train", *data, "--epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((workdir / "config.json").read_text())["epochs"] == 2
    assert json.loads((workdir / "report.json").read_text())["steps"] == 6
    # ... but not lowered, and any other change is refused as before.
    assert "may only raise" in one_error_line(run_cli("train", *data, "--epochs=1"))


@pytest.mark.parametrize(
    "module, args, folder, expected",
    [
        ("train", [], dict(loose=3), "holds 3 files but no class sub-folders"),
        ("train", [], dict(sizes={"alice": 6}), "holds 1 class ('alice', 6 examples)"),
        (
            "train",
            ["--classes_per_batch=2", "--samples_per_class=2"],
            dict(sizes={**{f"p{i}": 10 for i in range(4)}, "zed_one": 1}),
            "1 class is too small for that (examples of 'zed_one': 1)",
        ),
        (
            "train",
            ["--split_by=class"],
            dict(sizes={f"c{i}": 6 for i in range(3)}),
            "split_by=class needs 2 classes each for training, calibration and test",
        ),
        ("train", ["--flagfile=missing.flags"], None, "cannot read --flagfile=missing.flags"),
        ("train", ["--workdirr=x"], None, "unknown flag --workdirr"),
        (
            "train",
            ["--workdir=WORKDIR", "--dataset=tfds:no_such_builder_xyz"],
            None,
            "set SIAMESE_TF_DATASETS to the folder that holds no_such_builder_xyz/",
        ),
        ("multiworker", ["--workdir=x"], None, "training flags go after `--`"),
        ("evaluate", ["--ways=1"], None, "--ways must be >= 2"),
        ("evaluate", ["--workdir=WORKDIR"], None, "no training step was saved there"),
    ],
)
def test_user_errors_name_the_problem_and_the_fix(tmp_path, module, args, folder, expected):
    args = [a.replace("WORKDIR", str(tmp_path / "run")) for a in args]
    if module == "evaluate" and "--ways=1" in args:
        args.append(f"--workdir={tmp_path}")
    if module == "evaluate" and "--ways=1" not in args:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.json").write_text(TrainConfig().to_json())
    if folder is not None:
        root = image_folder(tmp_path / "data", folder.get("sizes", {}), folder.get("loose", 0))
        args = [f"--workdir={tmp_path / 'run'}", f"--dataset=folder:{root}", *SHORT, *args]
    line = one_error_line(run_cli(module, *args))
    assert expected in line, line
    # Never a library's own wording (scikit-learn's "n_samples=...", absl's "Did you mean").
    for leak in ("n_samples", "test_size", "Did you mean", "ERROR:", "label 4"):
        assert leak not in line, line
    if module == "train" and folder is not None:
        assert not (tmp_path / "run").exists()


def test_worker_errors_go_to_stderr(tmp_path):
    result = run_cli(
        "multiworker", "--num_workers=1", "--", f"--workdir={tmp_path}", "--samples_per_class=0"
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[worker 0] error: --samples_per_class must be" in result.stderr
    assert "error" not in result.stdout


def test_help_lists_every_training_flag_from_the_config_docstring():
    assert undocumented_fields(TrainConfig) == []  # Each new field needs an Attributes entry.
    docs = attribute_docs(TrainConfig)
    result = run_cli("train", "--help")
    assert result.returncode == 0 and result.stderr == "", result.stderr  # Native logs hidden.
    text = " ".join(result.stdout.split())  # Wrapped lines joined.
    for name, default in TrainConfig().__dict__.items():
        flag = f"--[no]{name}" if isinstance(default, bool) else f"--{name}"
        assert f"{flag} (" in text, name
        assert " ".join(docs[name].split()[:6]) in text, name
    assert "--workdir (string; default: none)" in text
    assert "default: triplet_hard" in text and "`eer`, `max_accuracy`" in text
    # absl's own flags stay in --helpfull.
    for internal in ("--logtostderr", "--verbosity", "--flagfile (", "--only_check_args"):
        assert internal not in text


def test_native_logs_shown_when_asked():
    loud = run_cli("evaluate", "--help", native_logs=True)
    assert loud.returncode == 0
    assert "0000 " in loud.stderr, loud.stderr  # absl's C++ log lines: I0000 / W0000 / E0000.


def test_attribute_docs_parses_google_style_sections():
    class Example:
        """Summary.

        Attributes:
          alpha: first line
            continued here.
          beta (int): typed entry.

        Raises:
          gamma: not an attribute.
        """

    assert attribute_docs(Example) == {
        "alpha": "first line continued here.",
        "beta": "typed entry.",
    }
