"""`launch.evaluate` and its recipe: protocols on a rebuilt split, plots, projector, bad input."""

import dataclasses
import json
import shutil
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from helpers import one_error_line, png_bytes, run_cli, tiny_config

from siamese_tf.data.images import decode_encoded_images
from siamese_tf.data.one_shot_runs import read_omniglot_runs
from siamese_tf.errors import InputError
from siamese_tf.evaluation import oneshot, retrieval
from siamese_tf.inference import embed
from trainers import eval_protocols, evaluation

TINY = tiny_config()
FAST = evaluation.EvalOptions(bootstrap=200, episodes=50, projection="pca")


@pytest.fixture
def workdir(finished_run, tmp_path):
    """A private copy of the run (evaluation writes eval/, plots/ and logs/ into it)."""
    copy = tmp_path / "run"
    copy.mkdir()
    for name in ("config.json", "model.keras", "report.json"):
        shutil.copy(finished_run / name, copy / name)
    return copy


def test_verification_reproduces_the_training_report(workdir):
    results = evaluation.evaluate(str(workdir), "verification", FAST)
    result = results["verification"]
    # Same split, same pair set, same calibrated threshold: the training report's numbers.
    trained = json.loads((workdir / "report.json").read_text())["test"]
    for key in ("auc", "eer", "accuracy", "threshold", "tp", "fp", "tn", "fn"):
        assert result["report"][key] == pytest.approx(trained[key], abs=1e-6), key
    low, high = result["bootstrap_ci95"]["auc"]
    assert low <= result["report"]["auc"] <= high
    assert result["data"]["split"] == "test" and result["data"]["num_classes"] == 10
    saved = json.loads((workdir / "eval" / "verification.json").read_text())
    assert saved["report"]["auc"] == result["report"]["auc"]
    for name in ("test_roc_curve.png", "test_distance_histograms.png", "test_embedding_map.png"):
        assert (workdir / "plots" / name).read_bytes().startswith(b"\x89PNG"), name
    assert set(saved["plots"]) == {"roc_curve", "distance_histograms", "embedding_map"}
    # On the calibration split the training pair set is the calibration one (its named seed).
    cal = evaluation.evaluate(
        str(workdir), "verification", dataclasses.replace(FAST, split="calibration", plots=False)
    )
    assert cal["verification"]["pairs"]["seed"] == TINY.seeds.calibration_pairs
    assert result["pairs"]["seed"] == TINY.seeds.test_pairs
    assert "optimistic" in cal["verification"]["note"]
    assert (workdir / "eval" / "verification_calibration.json").exists()
    assert json.loads((workdir / "eval" / "verification.json").read_text()) == saved


def test_oneshot_retrieval_clustering_share_one_embedding(workdir, finished_run):
    options = dataclasses.replace(FAST, ways=(5, 20), shots=(1, 3), plots=False)
    results = evaluation.evaluate(str(workdir), "oneshot,retrieval,clustering", options)
    episodes = results["oneshot"]["episodes"]
    assert "skipped" in episodes["20way_1shot"]  # The digits test split has 10 classes.
    assert 0.2 <= episodes["5way_1shot"]["accuracy"] <= 1.0
    assert episodes["5way_3shot"]["episodes"] == 50
    # Recall@1 in leave-one-out is 1-NN accuracy on the same split: recompute independently.
    run = evaluation.load_run(str(finished_run))
    data = evaluation.load_split(run, "test")
    emb = embed(run.model, data.images)
    expected = retrieval.nearest_neighbour_accuracy(emb, data.labels, None, None)
    assert results["retrieval"]["recall_at_k"][1] == pytest.approx(expected)
    assert results["retrieval"]["map_at_r"] <= results["retrieval"]["recall_at_k"][1] + 1e-9
    assert 0.0 <= results["clustering"]["ami"] <= results["clustering"]["nmi"] <= 1.0
    assert results["clustering"]["n_clusters"] == 10
    for protocol in ("oneshot", "retrieval", "clustering"):
        assert (workdir / "eval" / f"{protocol}.json").exists()
    assert not (workdir / "plots").exists()


def _runs_zip(path, num_runs=2, n_way=4):
    """A zip in the layout of Lake et al.'s all_runs.zip; each query copies its class image."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        for run in range(1, num_runs + 1):
            name = f"run{run:02d}"
            lines = []
            order = rng.permutation(n_way)
            for k in range(n_way):
                # 1-bit strokes: black blobs on white, 105 x 105 like the originals.
                pixels = np.full((105, 105), 255, np.uint8)
                y, x = rng.integers(0, 70, 2)
                pixels[y : y + 35, x : x + 35] = 0
                png = png_bytes(pixels > 0)  # a boolean array is saved as a 1-bit image
                archive.writestr(f"{name}/training/class{k + 1:02d}.png", png)
                item = f"{name}/test/item{order[k] + 1:02d}.png"
                archive.writestr(item, png)
                lines.append(f"{item} {name}/training/class{k + 1:02d}.png")
            archive.writestr(f"{name}/class_labels.txt", "\n".join(lines) + "\n")


def test_omniglot_runs_from_the_zip(workdir, tmp_path):
    _runs_zip(tmp_path / "all_runs.zip")
    runs = read_omniglot_runs(str(tmp_path / "all_runs.zip"))
    assert [r.name for r in runs] == ["run01", "run02"] and len(runs[0].queries) == 4
    # 1-bit PNGs decode to 0 (stroke) / 255 (background): the TFDS Omniglot polarity.
    decoded = decode_encoded_images(runs[0].support[:1], (105, 105, 1), ["x"])
    assert set(np.unique(decoded)) == {0, 255} and decoded.mean() > 128
    options = dataclasses.replace(FAST, runs_zip=str(tmp_path / "all_runs.zip"))
    result = evaluation.evaluate(str(workdir), "omniglot_runs", options)["omniglot_runs"]
    # Every query is its class image: the nearest support is always right.
    assert result["accuracy"] == 1.0 and result["trials"] == 8 and result["n_way"] == 4
    assert result["per_run_accuracy"] == {"run01": 1.0, "run02": 1.0}
    assert result["image_shape"] == [8, 8, 1]  # Resized to the model's input.
    saved = json.loads((workdir / "eval" / "omniglot_runs.json").read_text())
    assert saved["accuracy"] == 1.0


def test_bad_input_raises_input_error(workdir, tmp_path):
    with pytest.raises(InputError, match="unknown protocol"):
        evaluation.evaluate(str(workdir), "accuracy")
    with pytest.raises(InputError, match="runs_zip"):
        evaluation.evaluate(str(workdir), "omniglot_runs")
    missing_zip = dataclasses.replace(FAST, runs_zip=str(tmp_path / "none.zip"))
    with pytest.raises(InputError, match="not found"):
        evaluation.evaluate(str(workdir), "omniglot_runs", missing_zip)
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable zip"):
        read_omniglot_runs(str(tmp_path / "bad.zip"))
    config = json.loads((workdir / "config.json").read_text())
    config["split_sizes"]["test"] += 1
    (workdir / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="the data changed"):
        evaluation.evaluate(str(workdir), "retrieval", FAST)
    (workdir / "model.keras").unlink()
    with pytest.raises(InputError, match="has no model.keras"):
        evaluation.load_run(str(workdir))
    with pytest.raises(InputError, match="no config.json"):
        evaluation.load_run(str(tmp_path))
    with pytest.raises(InputError, match="does not exist"):
        evaluation.load_run(str(tmp_path / "missing"))


def test_split_all_scores_a_whole_other_dataset(workdir, tmp_path):
    # "Unseen classes": digits 5-9 of load_digits, saved as another dataset (8x8, as trained).
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = digits.target >= 5
    images = np.round(digits.images[keep] * (255.0 / 16.0)).astype(np.uint8)
    np.savez(tmp_path / "unseen.npz", images=images, labels=digits.target[keep])
    options = dataclasses.replace(
        FAST, split="all", dataset=f"npz:{tmp_path / 'unseen.npz'}", ways=(5,), plots=False
    )
    results = evaluation.evaluate(str(workdir), "verification,oneshot", options)
    data = results["oneshot"]["data"]
    assert data["split"] == "all" and data["dataset"] == options.dataset
    assert data["num_examples"] == int(keep.sum()) and data["num_classes"] == 5
    assert results["verification"]["pairs"]["num_pairs"] == TINY.test_pairs
    assert 0.2 <= results["oneshot"]["episodes"]["5way_1shot"]["accuracy"] <= 1.0
    # Reports off the test split do not overwrite the test ones.
    assert (workdir / "eval" / "oneshot_all.json").exists()
    assert not (workdir / "eval" / "oneshot.json").exists()
    # The embedded images are exactly the file's: recompute one episode set's inputs.
    run = evaluation.load_run(str(workdir))
    split = evaluation.load_split(run, "all", dataset=options.dataset)
    np.testing.assert_array_equal(split.images[..., 0], images)
    with pytest.raises(InputError, match="needs --dataset"):
        evaluation.evaluate(str(workdir), "oneshot", dataclasses.replace(FAST, split="all"))
    with pytest.raises(InputError, match="needs --split=all"):
        evaluation.evaluate(str(workdir), "oneshot", dataclasses.replace(options, split="test"))
    with pytest.raises(InputError, match="training dataset"):
        evaluation.evaluate(str(workdir), "oneshot", dataclasses.replace(options, dataset="digits"))


def test_uncalibrated_model_refuses_verification(finished_run, workdir):
    run = evaluation.load_run(str(finished_run))
    run.model.threshold.assign(-1.0)
    run.model.save(workdir / "model.keras")
    with pytest.raises(InputError, match="uncalibrated"):
        evaluation.evaluate(str(workdir), "verification", FAST)
    # Threshold-free protocols still work.
    result = evaluation.evaluate(str(workdir), "clustering", dataclasses.replace(FAST, plots=False))
    assert result["clustering"]["model"]["threshold"] is None


def test_cli_writes_reports_plots_and_projector(workdir):
    flags = "--protocol=verification,retrieval --projector --bootstrap=100 --projection=pca"
    result = run_cli("evaluate", f"--workdir={workdir}", *flags.split())
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [
        json.loads(line.split("summary: ", 1)[1])
        for line in result.stdout.splitlines()
        if line.startswith("summary: ")
    ]
    assert [s["protocol"] for s in summaries] == ["verification", "retrieval"]
    assert 0.0 <= summaries[0]["auc"] <= 1.0 and len(summaries[0]["auc_ci95"]) == 2
    assert 0.0 <= summaries[1]["recall_at_1"] <= 1.0
    projector = workdir / "logs" / "projector"
    config = (projector / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "test_embeddings"' in config and "sprite" in config
    labels = np.load(projector / "labels.npy")
    assert np.loadtxt(projector / "embeddings.tsv").shape == (labels.size, 64)
    assert len((projector / "metadata.tsv").read_text().splitlines()) == labels.size + 1
    verification = json.loads((workdir / "eval" / "verification.json").read_text())
    assert verification["projector"] == str(projector)


def test_cli_tta_shift_embeds_translations_beside_the_plain_report(workdir, finished_run):
    result = run_cli("evaluate", f"--workdir={workdir}", "--protocol=retrieval", "--tta_shift=1")
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((workdir / "eval" / "retrieval_tta1.json").read_text())
    assert saved["tta_shift"] == 1 and not (workdir / "eval" / "retrieval.json").exists()
    # The flag reaches the embeddings: recall@1 is the 1-NN accuracy of the averaged views.
    run = evaluation.load_run(str(finished_run))
    data = evaluation.load_split(run, "test")
    augmented = embed(run.model, data.images, tta_shift=1)
    expected = retrieval.nearest_neighbour_accuracy(augmented, data.labels, None, None)
    assert saved["recall_at_k"]["1"] == pytest.approx(expected)
    # Verification's threshold was calibrated without it: refused, as is a shift the 8x8 run's
    # images cannot hold.
    refused = run_cli("evaluate", f"--workdir={workdir}", "--tta_shift=1")
    assert "--tta_shift does not apply to verification" in one_error_line(refused)
    too_far = dataclasses.replace(FAST, tta_shift=4)
    with pytest.raises(InputError, match="use a smaller --tta_shift"):
        evaluation.evaluate(str(workdir), "retrieval", too_far)


def test_pair_head_models_score_episodes_with_their_own_distance(monkeypatch):
    class HeadModel:
        """A pair-head model whose "1 - p(same)" happens to be the Euclidean distance."""

        head = object()

        def pair_distances(self, a, b):
            return tf.norm(a - b, axis=-1)

    rng = np.random.default_rng(0)
    support = rng.normal(size=(7, 4, 3, 5))
    query = rng.normal(size=(7, 8, 5))
    targets = rng.integers(0, 4, size=(7, 8))
    monkeypatch.setattr(eval_protocols, "_MAX_HEAD_PAIRS", 2 * 8 * 4 * 3)  # Chunks of 2 episodes.
    got = eval_protocols.episode_accuracies(HeadModel(), support, query, targets)
    expected = oneshot.episode_accuracies(support, query, targets, metric="euclidean")
    np.testing.assert_allclose(got, expected)


def test_each_protocol_runs_on_its_own(workdir):
    # 50-way episodes need 50 classes (digits: 10): oneshot fails alone, retrieval completes.
    options = dataclasses.replace(FAST, ways=(50,), plots=False)
    results = evaluation.evaluate(str(workdir), "oneshot,retrieval", options)
    assert results["oneshot"]["status"] == "failed"
    assert "use --ways=10 (or fewer; asked: 50)" in results["oneshot"]["error"]
    assert results["retrieval"]["status"] == "ok" and "map_at_r" in results["retrieval"]
    saved = json.loads((workdir / "eval" / "oneshot.json").read_text())
    assert saved["status"] == "failed" and saved["error"] == results["oneshot"]["error"]
    assert evaluation.headline("oneshot", saved) == {"status": "failed", "error": saved["error"]}
    # Every protocol failed: bad input, after their reports were written.
    (workdir / "eval" / "oneshot.json").unlink()
    with pytest.raises(InputError, match="oneshot: no one-shot episodes fit"):
        evaluation.evaluate(str(workdir), "oneshot", options)
    assert (workdir / "eval" / "oneshot.json").exists()
    with pytest.raises(InputError, match="--ways must be >= 2"):
        evaluation.evaluate(str(workdir), "oneshot", dataclasses.replace(FAST, ways=(1, 5)))


def test_protocols_share_one_interface_and_evaluate_names_none(workdir, monkeypatch):
    for name, protocol in eval_protocols.PROTOCOLS.items():
        assert protocol.name == name and isinstance(protocol, eval_protocols.EvalProtocol)

    class Count(eval_protocols.EvalProtocol):
        """A protocol `evaluate` has never heard of: registered, it runs like the others."""

        name = "count"

        def run(self, context):
            return {"examples": int(len(context.data.labels))}

        def headline(self, result):
            return {"examples": result["examples"]}

    monkeypatch.setitem(eval_protocols.PROTOCOLS, "count", Count())
    options = dataclasses.replace(FAST, plots=False)
    result = evaluation.evaluate(str(workdir), "count,clustering", options)["count"]
    assert result["status"] == "ok" and result["examples"] == result["data"]["num_examples"]
    assert evaluation.headline("count", result) == {"examples": result["examples"]}
    assert (workdir / "eval" / "count.json").exists()
