"""SavedModel export: serves without siamese_tf, matches the Keras model, resizes raw images."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import cli_env, run_cli, summary_of
from tensorflow.core.protobuf import saved_model_pb2

from siamese_tf.errors import InputError
from siamese_tf.export import export_saved_model

# Runs in a process that cannot import siamese_tf: `-I` drops PYTHONPATH, the user site and the
# script's folder from sys.path, and the cwd is outside the repository.
LOAD_AND_SERVE = """
import importlib.abc, json, sys


class NoSiameseTf(importlib.abc.MetaPathFinder):  # CI installs the package: refuse the import
    def find_spec(self, name, path=None, target=None):
        if name == "siamese_tf" or name.startswith("siamese_tf."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, NoSiameseTf())
import numpy as np
import tensorflow as tf
try:
    import siamese_tf
    importable = True
except ImportError:
    importable = False
loaded = tf.saved_model.load(sys.argv[1])
data = np.load(sys.argv[2])
embed = loaded.signatures["embed"]
verify = loaded.signatures["verify"]
out = {
    "siamese_tf_importable": importable,
    "siamese_tf_loaded": any(m.startswith("siamese_tf") for m in sys.modules),
    "signatures": sorted(loaded.signatures.keys()),
    "threshold": float(loaded.threshold.numpy()),
    "image_shape": loaded.image_shape.numpy().tolist(),
    "embeddings": embed(images=tf.constant(data["a"]))["embeddings"].numpy().tolist(),
    "large_rgb": embed(images=tf.constant(data["large_rgb"]))["embeddings"].numpy().tolist(),
}
result = verify(images_a=tf.constant(data["a"]), images_b=tf.constant(data["b"]))
out["distance"] = result["distance"].numpy().tolist()
out["same"] = result["same"].numpy().tolist()
print("RESULT " + json.dumps(out))
"""


def _images(seed, shape):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_cli_export_serves_without_siamese_tf(run, finished_run, tmp_path):
    out = tmp_path / "served"
    env = cli_env()
    result = run_cli("export", f"--workdir={finished_run}", f"--out={out}", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = summary_of(result.stdout)
    assert summary["signatures"] == ["embed", "verify"]
    assert summary["threshold"] == pytest.approx(run.threshold)

    a, b = _images(0, (6, 8, 8, 1)), _images(1, (6, 8, 8, 1))
    b[:3] = a[:3]  # Three identical pairs: distance 0, "same".
    large_rgb = _images(2, (3, 24, 20, 3))  # Another size and RGB: converted inside.
    np.savez(tmp_path / "inputs.npz", a=a, b=b, large_rgb=large_rgb)
    isolated = tmp_path / "elsewhere"
    isolated.mkdir()
    clean_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    command = [sys.executable, "-I", "-c", LOAD_AND_SERVE, str(out), str(tmp_path / "inputs.npz")]
    options = dict(cwd=isolated, env=clean_env, capture_output=True, text=True, timeout=240)
    served = subprocess.run(command, **options)
    assert served.returncode == 0, served.stderr[-3000:]
    got = json.loads(served.stdout.split("RESULT ", 1)[1])
    assert not got["siamese_tf_importable"] and not got["siamese_tf_loaded"]
    assert got["signatures"] == ["embed", "verify"]
    assert got["threshold"] == pytest.approx(run.threshold)
    assert got["image_shape"] == [8, 8, 1]

    model = run.model
    np.testing.assert_allclose(got["embeddings"], model(a, training=False), atol=1e-5)
    distances, same = model.verify(a, b)
    np.testing.assert_allclose(got["distance"], distances, atol=1e-5)
    assert got["same"] == list(np.asarray(same)) and got["same"][:3] == [True] * 3
    # Raw images of another size and channel count: gray + the training pipeline's resize.
    from siamese_tf.data import images as images_lib

    expected = images_lib.resize_uint8(tf.image.rgb_to_grayscale(large_rgb), (8, 8))
    np.testing.assert_allclose(got["large_rgb"], model(expected, training=False), atol=1e-5)


def test_export_refuses_uncalibrated_and_existing_output(run, tmp_path):
    model = run.model
    calibrated = float(model.threshold.numpy())
    try:
        model.threshold.assign(-1.0)
        with pytest.raises(InputError, match="uncalibrated"):
            export_saved_model(model, str(tmp_path / "x"))
        assert not (tmp_path / "x").exists()
    finally:
        model.threshold.assign(calibrated)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        export_saved_model(model, str(tmp_path / "full"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        export_saved_model(model, str(tmp_path / "file"))
    # Overwriting replaces the folder, and nothing temporary is left beside it.
    export_saved_model(model, str(tmp_path / "full"), overwrite=True)
    assert (tmp_path / "full" / "saved_model.pb").exists()
    assert not (tmp_path / "full" / "keep.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["file", "full"]
    # The module saves its own pieces only, never the Keras model (no Keras objects inside).
    graph = saved_model_pb2.SavedModel.FromString(
        (tmp_path / "full" / "saved_model.pb").read_bytes()
    )
    root = graph.meta_graphs[0].object_graph_def.nodes[0]
    names = {child.local_name for child in root.children}
    assert names == {"model_variables", "threshold", "image_shape", "embed", "verify", "signatures"}
    shutil.rmtree(tmp_path / "full")
