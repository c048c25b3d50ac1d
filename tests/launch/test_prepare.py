"""`python -m launch.prepare`: writes a prepared store; bad input is one error line and exit 2."""

import json

from helpers import run_cli, summary_of, write_flat_pngs


def run_prepare(*args, timeout=180):
    return run_cli("prepare", *args, timeout=timeout)


def write_images(root, broken=False):
    write_flat_pngs(root, size=5)
    if broken:
        (root / "c1" / "9.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")


def error_lines(stderr):
    # TensorFlow's C++ start-up may log before absl does; the job's own output is what we check.
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_cli_writes_a_store(tmp_path):
    write_images(tmp_path / "img")
    result = run_prepare(
        f"--dataset=folder:{tmp_path / 'img'}", f"--out={tmp_path / 'out'}", "--shard_mb=1"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = summary_of(result.stdout)
    assert summary["examples"] == 12 and summary["classes"] == 3 and summary["shards"] == 1
    assert summary["train_with"] == f"--dataset=prepared:{tmp_path / 'out'}"
    meta = json.loads((tmp_path / "out" / "store.json").read_text())
    assert meta["class_names"] == ["c0", "c1", "c2"] and meta["encoded"]


def test_cli_refuses_a_store_as_input_a_busy_output_and_no_dataset(tmp_path):
    write_images(tmp_path / "img")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("not a store")
    result = run_prepare(f"--dataset=folder:{tmp_path / 'img'}", f"--out={tmp_path / 'busy'}")
    assert result.returncode == 2 and "is not empty" in error_lines(result.stderr)[0]
    result = run_prepare(f"--dataset=prepared:{tmp_path / 'x'}", f"--out={tmp_path / 'y'}")
    assert result.returncode == 2 and "already prepared" in error_lines(result.stderr)[0]
    result = run_prepare("--out=/tmp/never_written")
    assert result.returncode == 2 and "--dataset is required" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_undecodable_image_is_one_line_exit_2_and_no_output(tmp_path):
    write_images(tmp_path / "img", broken=True)
    result = run_prepare(f"--dataset=folder:{tmp_path / 'img'}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "cannot decode image" in lines[0] and "c1/9.png" in lines[0]
    assert result.stderr.rstrip().endswith(lines[0])
    assert not (tmp_path / "out").exists()
