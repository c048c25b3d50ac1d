"""`launch.predict` and its recipe: pairs, gallery matching, clustering of image files."""

import csv
import re

import numpy as np
import pytest
from helpers import png_bytes, run_cli

from siamese_tf.errors import InputError
from trainers import evaluation, prediction

# TensorFlow's C++ start-up lines (absl logging in TF 2.21, which TF_CPP_MIN_LOG_LEVEL does not
# reach) are not the program's own output; silencing them belongs to launch/common.py.
_TF_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog)")


def own_lines(stderr: str) -> list:
    """The non-empty stderr lines the program wrote (TensorFlow's start-up lines left out)."""
    return [line for line in stderr.splitlines() if line.strip() and not _TF_NOISE.match(line)]


def _save(path, pixels, fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels, fmt))
    return str(path)


@pytest.fixture(scope="module")
def files(run, tmp_path_factory):
    """Digits of the test split as files: a gallery of 3 classes × 4 images, and queries."""
    root = tmp_path_factory.mktemp("images")
    data = evaluation.load_split(run, "test")
    gallery, queries = {}, {}
    for label in (0, 1, 7):
        rows = np.flatnonzero(data.labels == label)
        gallery[label] = [
            _save(root / "gallery" / f"digit_{label}" / f"{i}.png", data.images[r])
            for i, r in enumerate(rows[:4])
        ]
        queries[label] = _save(root / "queries" / f"q{label}.png", data.images[rows[4]])
    # The same digit as a larger RGB JPEG: converted to gray and resized to 8 x 8.
    big = np.repeat(np.kron(data.images[rows[4]], np.ones((4, 4, 1), np.uint8)), 3, axis=-1)
    big_jpeg = _save(root / "queries" / "big.jpg", big, fmt="JPEG")
    return {"root": root, "gallery": gallery, "queries": queries, "big_jpeg": big_jpeg}


def test_pair_same_image_and_resized_rgb(run, files):
    a = files["gallery"][7][0]
    same = prediction.predict_pair(run, a, a)
    assert same["same"] and same["distance"] == pytest.approx(0.0, abs=1e-3)
    assert same["threshold"] == pytest.approx(run.threshold)
    # A bigger RGB JPEG of one digit against its own 8 x 8 PNG: close, not identical.
    resized = prediction.predict_pair(run, files["big_jpeg"], files["queries"][7])
    direct = prediction.predict_pair(run, files["big_jpeg"], files["gallery"][0][0])
    assert resized["distance"] < direct["distance"]
    never = prediction.predict_pair(run, a, files["gallery"][0][0], threshold=-0.5)
    assert not never["same"] and never["threshold"] == -0.5


def test_gallery_matches_and_unknown(run, files):
    gallery = str(files["root"] / "gallery")
    exact = prediction.match_gallery(run, gallery, [files["gallery"][1][2]])
    assert exact[0]["match"] == "digit_1" and exact[0]["distance"] == pytest.approx(0, abs=1e-3)
    queries = [files["queries"][label] for label in (0, 1, 7)]
    loose = prediction.match_gallery(run, gallery, queries, threshold=10.0)
    assert [r["match"] for r in loose] == [r["nearest"] for r in loose]
    strict = prediction.match_gallery(run, gallery, queries, threshold=1e-9)
    assert [r["match"] for r in strict] == [None, None, None]
    assert [r["nearest"] for r in strict] == [r["nearest"] for r in loose]


def test_cluster_folder_writes_csv(run, files, tmp_path):
    out = tmp_path / "out" / "clusters.csv"
    rows = prediction.cluster_folder(run, str(files["root"] / "gallery"), 3, str(out))
    with open(out, newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["file", "cluster"] and len(table) == 13
    assert [(f, int(c)) for f, c in table[1:]] == rows
    assert {c for _, c in rows} <= {0, 1, 2}
    with pytest.raises(InputError, match="--k must be in"):
        prediction.cluster_folder(run, str(files["root"] / "gallery"), 13, str(out))


def test_bad_input_raises_input_error(run, files, tmp_path):
    gallery = str(files["root"] / "gallery")
    with pytest.raises(InputError, match="does not exist"):
        prediction.predict_pair(run, str(tmp_path / "nope.png"), files["queries"][0])
    with pytest.raises(InputError, match="does not exist"):
        prediction.match_gallery(run, gallery, [str(tmp_path / "nope.png")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        prediction.match_gallery(run, str(tmp_path / "empty"), [files["queries"][0]])
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match="notes.txt"):
        prediction.predict_pair(run, str(tmp_path / "notes.txt"), files["queries"][0])
    with pytest.raises(InputError, match="no image files"):
        prediction.cluster_folder(run, str(tmp_path / "empty"), 2, str(tmp_path / "c.csv"))
    calibrated = float(run.model.threshold.numpy())
    try:
        run.model.threshold.assign(-1.0)
        with pytest.raises(InputError, match="uncalibrated"):
            prediction.predict_pair(run, files["queries"][0], files["queries"][1])
    finally:
        run.model.threshold.assign(calibrated)


def test_cli_pair(run, finished_run, files):
    a, b = files["gallery"][0][0], files["gallery"][0][0]
    result = run_cli("predict", f"--workdir={finished_run}", "--pair", a, b)
    assert result.returncode == 0, result.stderr[-3000:]
    verdict, distance, threshold = result.stdout.split()
    assert verdict == "same" and float(distance.split("=")[1]) == pytest.approx(0.0, abs=1e-3)
    assert float(threshold.split("=")[1]) == pytest.approx(run.threshold, abs=1e-6)


def test_cli_missing_query_is_one_line_exit_2(finished_run, files, tmp_path):
    missing = tmp_path / "missing.png"
    gallery = f"--gallery={files['root'] / 'gallery'}"
    result = run_cli(
        "predict", f"--workdir={finished_run}", gallery, "--query", files["queries"][0], missing
    )
    lines = own_lines(result.stderr)
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert f"{missing} does not exist" in lines[0] and "Traceback" not in result.stderr
