"""The timeline of a video: score per frame against time, the threshold, detected events and ground truth.

Time runs in seconds along the x axis (frame ``t`` is drawn at ``t / fps``, or at its own time in a variable-rate
video's ``times``); detected events are shaded
red, ground-truth anomalous frames (when known) are shaded grey underneath, so misses and false alarms
are visible at a glance. Matplotlib's object API only (safe in worker threads); written atomically.

>>> plot_timeline(scores, threshold=1.2, fps=25, path="timeline.png", events=events)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomalens.metrics.events import frame_edges, runs
from anomalens.runtime import atomic_path

SCORE_COLOR = "#2b83ba"
THRESHOLD_COLOR = "#d7191c"
EVENT_COLOR = "#d7191c"
TRUTH_COLOR = "#7f7f7f"


def plot_timeline(
    scores: np.ndarray,
    threshold: float | None,
    fps: float,
    path: str | Path,
    events: list[dict] | None = None,
    ground_truth: np.ndarray | None = None,
    title: str = "Anomaly score per frame",
    times: np.ndarray | None = None,
) -> Path:
    """Draw the per-frame ``scores`` over time into a PNG at ``path`` and return the path; ``times``: each frame's
    own seconds (a variable frame rate, see ``VideoClip.frame_times``), else frame ``t`` is at ``t / fps``."""
    from matplotlib.figure import Figure

    scores = np.asarray(scores, dtype=np.float64).ravel()
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    times = np.arange(scores.size) / fps if times is None else np.asarray(times, dtype=np.float64).ravel()
    if times.size != scores.size:
        raise ValueError(f"{times.size} frame times for {scores.size} scores")
    edges = frame_edges(times, fps)  # when each frame starts, and when the last one ends
    frame_span = 1.0 / fps
    fig = Figure(figsize=(10, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    if ground_truth is not None:
        truth = np.asarray(ground_truth).ravel().astype(bool)
        for i, (start, end) in enumerate(runs(truth)):
            ax.axvspan(edges[start], edges[end + 1], color=TRUTH_COLOR, alpha=0.25, lw=0,
                       label="ground truth: anomalous" if i == 0 else None)
    for i, event in enumerate(events or []):
        ax.axvspan(edges[event["start_frame"]], edges[event["end_frame"] + 1], color=EVENT_COLOR, alpha=0.18, lw=0,
                   label="detected interval" if i == 0 else None)
    # Each frame's score is drawn over its own time span, so a one-frame event is visible too
    ax.step(edges if scores.size else times,
            np.append(scores, scores[-1]) if scores.size else scores,
            where="post", color=SCORE_COLOR, lw=1.2, label="score")
    if threshold is not None:
        ax.axhline(threshold, color=THRESHOLD_COLOR, lw=1, ls="--", label=f"threshold {threshold:.4g}")
    ax.set_xlim(0, max(float(edges[-1]), frame_span))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("anomaly score")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
