"""Plots (matplotlib figures → PNG) and the embedding map / projector files."""

import os

import numpy as np
import pytest

from siamese_tf import embedding_map, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _pairs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    same = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(int)
    distances = np.where(same == 1, rng.normal(0.5, 0.2, n), rng.normal(1.2, 0.2, n))
    return distances, same


def _png_size(data: bytes) -> tuple[int, int]:
    # IHDR: width and height are the two big-endian uint32 after the 16-byte header.
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_roc_and_histogram_figures_render_to_png_and_refuse_one_class():
    distances, same = _pairs()
    roc = plots.to_png(plots.roc_figure(distances, same, threshold=0.85))
    hist = plots.to_png(plots.distance_histogram_figure(distances, same, threshold=0.85))
    for data in (roc, hist):
        assert data.startswith(PNG_MAGIC)
        assert _png_size(data) == (500, 400)  # 5 x 4 inches at 100 dpi.
    # The title carries the AUC, so a figure of other data is a different picture.
    assert plots.to_png(plots.roc_figure(distances[::-1], same)) != roc
    # Pairs of one class only are refused.
    with pytest.raises(ValueError, match="only class"):
        plots.roc_figure([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        plots.distance_histogram_figure([0.1, 0.2], [0, 0])


def test_embedding_map_figure_legend_and_colourbar(tmp_path):
    rng = np.random.default_rng(0)
    few = plots.embedding_map_figure(rng.normal(size=(30, 2)), np.arange(30) % 3, ["a", "b", "c"])
    assert [t.get_text() for t in few.axes[0].get_legend().get_texts()] == ["a", "b", "c"]
    many = plots.embedding_map_figure(rng.normal(size=(60, 2)), np.arange(60) % 30)
    assert many.axes[0].get_legend() is None and len(many.axes) == 2  # Scatter + colour bar.
    path = plots.save_png(few, str(tmp_path / "map.png"))
    assert open(path, "rb").read().startswith(PNG_MAGIC)
    assert not os.path.exists(f"{path}.tmp")
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        plots.embedding_map_figure(np.zeros((5, 3)), np.zeros(5))


def test_project_2d_tsne_then_pca_beyond_the_limit():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 10
    labels = np.arange(60) % 3
    x = centres[labels] + rng.normal(size=(60, 16))
    points, method = embedding_map.project_2d(x, seed=0)
    assert method == "tsne" and points.shape == (60, 2)
    again, _ = embedding_map.project_2d(x, seed=0)
    np.testing.assert_allclose(points, again)
    # Clusters stay apart: every point's nearest neighbour on the map shares its label.
    d = np.linalg.norm(points[:, None] - points[None], axis=-1) + np.eye(60) * 1e9
    assert np.all(labels[np.argmin(d, axis=1)] == labels)
    pca, method = embedding_map.project_2d(x, max_tsne_points=59)
    assert method == "pca" and pca.shape == (60, 2)
    tiny, method = embedding_map.project_2d(np.array([[0.0], [1.0]]), method="tsne")
    assert method == "pca" and tiny.shape == (2, 2)
    with pytest.raises(ValueError, match="unknown projection"):
        embedding_map.project_2d(x, method="umap")
    with pytest.raises(ValueError, match="NaN"):
        embedding_map.project_2d(np.full((5, 2), np.nan))


def test_write_projector_files(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(7, 4)).astype(np.float32)
    labels = np.array([0, 1, 2, 0, 1, 2, 1])
    images = rng.integers(0, 256, size=(7, 8, 6, 1), dtype=np.uint8)
    files = embedding_map.write_projector(
        str(tmp_path / "proj"), emb, labels, class_names=["zero", "o\tne", "two"], images=images
    )
    folder = tmp_path / "proj"
    np.testing.assert_allclose(np.loadtxt(folder / "embeddings.tsv"), emb, rtol=1e-5)
    np.testing.assert_array_equal(np.load(folder / "labels.npy"), labels)
    rows = (folder / "metadata.tsv").read_text().splitlines()
    assert rows[0] == "label\tclass" and rows[2] == "1\to ne" and len(rows) == 8
    config = (folder / "projector_config.pbtxt").read_text()
    paths = ['tensor_path: "embeddings.tsv"', 'metadata_path: "metadata.tsv"', "tensor_shape: 7"]
    for expected in [*paths, 'image_path: "sprite.png"', "single_image_dim: 6"]:
        assert expected in config
    sprite = (folder / "sprite.png").read_bytes()
    assert _png_size(sprite) == (3 * 6, 3 * 8)  # A 3 x 3 grid of 6-wide, 8-high cells.
    assert set(files) >= {"embeddings.tsv", "metadata.tsv", "projector_config.pbtxt", "sprite.png"}
    with pytest.raises(ValueError, match="labels"):
        embedding_map.write_projector(str(folder), emb, labels[:3])


def test_calibration_curves_figure_draws_the_logged_epochs():
    records = [
        {"epoch": e, "val_auc": 0.9 + e / 100, "val_eer": 0.1 - e / 100, "val_threshold": 1.0}
        for e in range(1, 4)
    ]
    records.append({"epoch": 4, "val_auc": "nan"})  # Non-finite values are logged as strings.
    figure = plots.calibration_curves_figure(records)
    assert [ax.get_title().split(" (")[0] for ax in figure.axes] == ["AUC", "EER", "threshold"]
    assert list(figure.axes[0].lines[0].get_xdata()) == [1.0, 2.0, 3.0]
    assert plots.to_png(figure).startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="no epoch record"):
        plots.calibration_curves_figure([{"epoch": 1, "loss": 0.3}])
