"""Matplotlib figures of a verification run: ROC curve, distance histograms, 2-D embedding map.

matplotlib is a dependency of the package (plots are a promised output of a run); `available()`
still says whether it is importable, and every figure function raises `ImportError` without
it, so an install that lacks it loses the plots with a warning, not the run. Figures are built
on `matplotlib.figure.Figure` with the Agg canvas, never through `pyplot`: no global figure
registry, no GUI backend, safe in threads and in headless jobs. `to_png` turns a figure into
PNG bytes (for files and TensorBoard). Runs on host.
"""

from __future__ import annotations

import importlib.util
import io
import os

import numpy as np

from siamese_tf import evaluation as eval_metrics

# Above this many classes a legend is unreadable; the map then shows a colour bar of class ids.
_MAX_LEGEND_CLASSES = 20


def available() -> bool:
    """Whether matplotlib is installed (plots are skipped or refused without it)."""
    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float = 5.0, height: float = 4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="tight")
    FigureCanvasAgg(figure)  # Attaches the Agg canvas: PNG output without pyplot.
    return figure


def to_png(figure) -> bytes:
    """Renders a figure as PNG bytes.

    Args:
      figure: a `matplotlib.figure.Figure`.

    Returns:
      The PNG file's bytes.
    """
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def save_png(figure, path: str) -> str:
    """Writes a figure as a PNG file through a temporary file (no half-written plot).

    Args:
      figure: a `matplotlib.figure.Figure`.
      path: the destination `.png` path; its folder must exist.

    Returns:
      `path`.
    """
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(to_png(figure))
    os.replace(tmp, path)
    return path


def roc_figure(distances, same, threshold: float | None = None, title: str = "ROC curve"):
    """The ROC curve of pair distances, with the operating point of a threshold marked.

    Args:
      distances: pair distances [n] (smaller = more similar).
      same: 0/1 labels [n].
      threshold: the distance threshold whose (FPR, TPR) point is marked; None marks nothing.
      title: the axes title (the AUC and EER are appended).

    Returns:
      A `matplotlib.figure.Figure`.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: see `siamese_tf.evaluation.roc_curve`.
    """
    curve = eval_metrics.roc_curve(distances, same)
    auc = eval_metrics.roc_auc(distances, same)
    eer, _ = eval_metrics.equal_error_rate(distances, same)
    figure = _figure()
    ax = figure.add_subplot()
    ax.plot(curve.fpr, curve.tpr, color="tab:blue", lw=1.5, label="ROC")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":", label="chance")
    ax.plot([0, 1], [1, 0], color="tab:green", lw=0.8, ls="--", label=f"EER = {eer:.3f}")
    if threshold is not None and np.isfinite(threshold):
        point = eval_metrics.pair_classification_metrics(distances, same, threshold)
        ax.plot(
            point["far"], point["tar"], "o", color="tab:red", label=f"threshold {threshold:.4g}"
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false acceptance rate (FPR)")
    ax.set_ylabel("true acceptance rate (TPR)")
    ax.set_title(f"{title}: AUC {auc:.4f}")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return figure


def distance_histogram_figure(
    distances, same, threshold: float | None = None, title: str = "Pair distances", bins: int = 50
):
    """Histograms of positive and negative pair distances, with the threshold as a line.

    Args:
      distances: pair distances [n].
      same: 0/1 labels [n]; both classes must be present.
      threshold: the distance threshold to draw; None draws none.
      title: the axes title.
      bins: number of bins shared by both histograms.

    Returns:
      A `matplotlib.figure.Figure`.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: see `siamese_tf.evaluation.distance_statistics`.
    """
    stats = eval_metrics.distance_statistics(distances, same)
    d = np.asarray(distances, np.float64).reshape(-1)
    s = np.asarray(same).reshape(-1).astype(bool)
    edges = np.histogram_bin_edges(d, bins=bins)
    figure = _figure()
    ax = figure.add_subplot()
    # Densities, so a 10:1 class imbalance does not flatten the smaller histogram.
    ax.hist(
        d[s],
        bins=edges,
        density=True,
        alpha=0.55,
        color="tab:blue",
        label=f"same (n={int(s.sum())}, mean {stats['mean_positive_distance']:.3g})",
    )
    ax.hist(
        d[~s],
        bins=edges,
        density=True,
        alpha=0.55,
        color="tab:orange",
        label=f"different (n={int((~s).sum())}, mean {stats['mean_negative_distance']:.3g})",
    )
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="tab:red", lw=1.5, ls="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel("distance")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize="small")
    return figure


def calibration_curves_figure(records, title: str = "Calibration per epoch"):
    """The per-epoch calibration figures of a run: AUC, EER and the threshold, by epoch.

    Args:
      records: one mapping per epoch (e.g. the lines of `metrics.jsonl`) with `epoch` and any of
        `val_auc`, `val_eer`, `val_threshold`; missing or non-numeric values are left out.
      title: the figure title.

    Returns:
      A `matplotlib.figure.Figure` of three panels sharing the epoch axis.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: no record has an epoch and one of the three values.
    """
    series = {}
    for name in ("val_auc", "val_eer", "val_threshold"):
        points = [
            (float(r["epoch"]), float(r[name]))
            for r in records
            if "epoch" in r and isinstance(r.get(name), (int, float)) and np.isfinite(r[name])
        ]
        if points:
            series[name] = np.asarray(points)
    if not series:
        raise ValueError("no epoch record holds val_auc, val_eer or val_threshold")
    figure = _figure(9.0, 3.2)
    labels = {"val_auc": "AUC", "val_eer": "EER", "val_threshold": "threshold"}
    colours = {"val_auc": "tab:blue", "val_eer": "tab:orange", "val_threshold": "tab:red"}
    axes = figure.subplots(1, len(series), squeeze=False)[0]
    for ax, (name, points) in zip(axes, series.items(), strict=True):
        ax.plot(points[:, 0], points[:, 1], "o-", ms=3, lw=1.2, color=colours[name])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(_integer_locator())
        ax.set_title(f"{labels[name]} (last {points[-1, 1]:.4g})", fontsize="medium")
        ax.grid(alpha=0.3)
    figure.suptitle(title)
    return figure


def embedding_map_figure(points, labels, class_names=None, title: str = "Embedding map"):
    """A 2-D scatter of projected embeddings coloured by class.

    Args:
      points: [n, 2] projected embeddings (see `siamese_tf.embedding_map.project_2d`).
      labels: [n] integer labels.
      class_names: optional name of each label value (index = label), for the legend.
      title: the axes title.

    Returns:
      A `matplotlib.figure.Figure`; a legend when there are at most 20 classes, else a colour
      bar of class ids.

    Raises:
      ImportError: matplotlib is not installed.
      ValueError: `points` is not [n, 2] or `labels` does not match it.
    """
    points = np.asarray(points, np.float64)
    labels = np.asarray(labels).reshape(-1)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be a non-empty [n, 2] array, got shape {points.shape}")
    if labels.shape[0] != points.shape[0]:
        raise ValueError(f"labels must have {points.shape[0]} entries, got {labels.shape[0]}")
    classes = np.unique(labels)
    figure = _figure(6.0, 5.0)
    ax = figure.add_subplot()
    size = max(2.0, min(20.0, 4000.0 / points.shape[0]))
    if classes.size <= _MAX_LEGEND_CLASSES:
        cmap = _colormap("tab10" if classes.size <= 10 else "tab20")
        for i, c in enumerate(classes):
            mask = labels == c
            name = _class_name(c, class_names)
            ax.scatter(
                points[mask, 0],
                points[mask, 1],
                s=size,
                color=cmap(i % cmap.N),
                label=name,
                alpha=0.8,
                linewidths=0,
            )
        ax.legend(
            loc="best", fontsize="x-small", markerscale=2.0, ncol=2 if classes.size > 10 else 1
        )
    else:
        # Many classes: spread class ids over a cyclic colour map; the legend would be noise.
        scatter = ax.scatter(
            points[:, 0],
            points[:, 1],
            s=size,
            c=np.searchsorted(classes, labels),
            cmap="hsv",
            alpha=0.8,
            linewidths=0,
        )
        figure.colorbar(scatter, ax=ax, label="class index")
    ax.set_title(f"{title} ({points.shape[0]} points, {classes.size} classes)")
    ax.set_xticks([])
    ax.set_yticks([])
    return figure


def _integer_locator():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


def _class_name(label, class_names) -> str:
    if class_names is not None and 0 <= int(label) < len(class_names):
        return str(class_names[int(label)])
    return str(label)
