"""Figures of an evaluation report: ROC curve, score distribution per defect type, and sample rows.

Matplotlib's object API (``Figure``) is used without pyplot, so figures can be drawn from worker threads
(the UI) and no global state leaks between them. Every file is written atomically.

>>> path = plot_roc(np.array([0, 0, 1]), np.array([0, 1, 1]), 1.0, "/tmp/roc.png")   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from anomalens.runtime import atomic_path
from anomalens.visualization.overlays import anomaly_contours, draw_contours, heatmap_rgb, overlay, to_hwc

NORMAL_COLOR = "#2b83ba"
THRESHOLD_COLOR = "#d7191c"


def _figure(width: float, height: float):  # -> matplotlib.figure.Figure, imported lazily
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def plot_roc(fpr: np.ndarray, tpr: np.ndarray, auroc: float, path: str | Path, title: str = "Image-level ROC", marker: tuple[float, float] | None = None) -> Path:
    """The ROC curve with its AUROC; ``marker`` = (fpr, tpr) of the model's own threshold, if given."""
    fig = _figure(5, 5)
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color=NORMAL_COLOR, lw=2, drawstyle="default", label=f"AUROC = {auroc:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="chance")
    if marker is not None:
        ax.plot([marker[0]], [marker[1]], "o", color=THRESHOLD_COLOR, label="model threshold")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="false positive rate (normal images flagged)",
           ylabel="true positive rate (defects found)", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_score_distribution(
    scores: np.ndarray, defect_types: Sequence[str], threshold: float, path: str | Path, normal_type: str = "good",
    title: str = "Image scores by type",
) -> Path:
    """One row per type (normal first): each image a dot, a box for the spread, the threshold as a red line."""
    scores = np.asarray(scores, dtype=np.float64)
    types = [normal_type] if normal_type in defect_types else []
    types += sorted({t for t in defect_types if t != normal_type})
    fig = _figure(7, 1.2 + 0.55 * len(types))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)  # fixed jitter: the same report every time
    data = []
    for row, name in enumerate(types):
        values = scores[np.asarray([t == name for t in defect_types])]
        data.append(values)
        color = NORMAL_COLOR if name == normal_type else "#fdae61"
        ax.scatter(values, row + rng.uniform(-0.18, 0.18, values.size), s=16, color=color, edgecolor="black",
                   linewidth=0.4, zorder=3)
    box_style = dict(positions=range(len(types)), widths=0.6, showfliers=False, medianprops={"color": "black"},
                     boxprops={"color": "grey"}, whiskerprops={"color": "grey"}, capprops={"color": "grey"})
    try:
        ax.boxplot(data, orientation="horizontal", **box_style)
    except TypeError:  # matplotlib < 3.10
        ax.boxplot(data, vert=False, **box_style)
    ax.axvline(threshold, color=THRESHOLD_COLOR, lw=1.5, ls="--", label=f"threshold {threshold:.4g}")
    ax.set_yticks(range(len(types)), [f"{t} ({len(d)})" for t, d in zip(types, data)])
    ax.invert_yaxis()
    ax.set(xlabel="anomaly score (raw)", title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


@dataclass
class SampleRow:
    """One row of the samples figure; arrays are RGB ``uint8`` (H, W, 3) or maps (H, W)."""

    title: str
    image: np.ndarray
    normalized_map: np.ndarray
    view: np.ndarray | None = None  # reconstruction / model view, if the model has one
    mask: np.ndarray | None = None  # ground truth, None when unknown


def plot_samples(rows: Sequence[SampleRow], path: str | Path, view_label: str = "reconstruction") -> Path:
    """Rows of original | reconstruction or model view | heatmap | overlay | ground truth.

    Without a reconstruction the second column shows the image with the regions above the model's
    threshold outlined ("detected region"). Heatmaps share one fixed 0..1 scale (0.5 = threshold).
    """
    if not rows:
        raise ValueError("no samples to draw")
    has_view = any(r.view is not None for r in rows)
    headers = ["original", view_label if has_view else "detected region (> threshold)", "heatmap (0.5 = threshold)",
               "overlay", "ground truth"]
    fig = _figure(2.2 * len(headers), 2.3 * len(rows) + 0.4)
    axes = fig.subplots(len(rows), len(headers), squeeze=False)
    for r, row in enumerate(rows):
        image = to_hwc(row.image)
        view = to_hwc(row.view) if row.view is not None else anomaly_contours(image, row.normalized_map, color=(255, 40, 40))
        if row.mask is None:
            truth = np.full_like(image, 200)
        else:
            truth = draw_contours(np.repeat((np.asarray(row.mask, bool) * 255).astype(np.uint8)[:, :, None], 3, 2),
                                  row.mask, color=(255, 40, 40))
        panels = [image, view, heatmap_rgb(row.normalized_map), overlay(image, row.normalized_map, 0.45), truth]
        for c, panel in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(headers[c], fontsize=9)
            if c == 0:
                ax.set_ylabel(row.title, fontsize=8)
            if c == 4 and row.mask is None:
                ax.text(0.5, 0.5, "no mask", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    return _save(fig, path)
