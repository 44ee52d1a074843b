"""Video metrics: anomalous events (intervals of frames) and frame-level AUROC.

An event is a run of frames whose score exceeds the threshold (or is NaN: anomalous, as
:func:`~anomalens.metrics.threshold.above_threshold` decides); runs separated by at most ``merge_gap``
normal frames are merged, runs shorter than ``min_length`` frames are dropped. Times are in seconds:
an event covers ``[start_frame / fps, (end_frame + 1) / fps)``, or, given a variable-rate video's own frame
``times`` (:meth:`~anomalens.data.video_io.VideoClip.frame_times`), its frames' times (:func:`frame_edges`).

Frame-level AUROC, as the literature reports it, pools every test frame of every clip into one ranking
(:func:`pooled_frame_auroc`). Per clip AUROC exists only for clips with both normal and anomalous frames.

>>> events = detect_events(np.array([0, 0, 2, 3, 0, 2, 0]), threshold=1.0, fps=10, merge_gap=1)
>>> [(e["start_frame"], e["end_frame"], e["peak_frame"]) for e in events]
[(2, 5, 3)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from anomalens.metrics.regions import event_regions, half_excess_level
from anomalens.metrics.threshold import Calibration, above_threshold


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True as ``(start, end)`` inclusive."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2])]


def detect_events(
    scores: np.ndarray,
    threshold: float,
    fps: float,
    min_length: int = 1,
    merge_gap: int = 0,
    normalized_scores: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> list[dict]:
    """Intervals where ``scores > threshold`` or NaN: start/end frame and time, duration, peak score and its frame.

    ``normalized_scores`` (optional, same length) adds the peak's normalised score (0.5 = threshold); ``times``
    (optional, same length) are the frames' own seconds, for a variable frame rate (None: frame ``t`` at ``t / fps``).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if min_length < 1 or merge_gap < 0:
        raise ValueError("min_length must be >= 1 and merge_gap >= 0")
    merged: list[list[int]] = []
    for start, end in runs(above_threshold(scores, threshold)):
        if merged and start - merged[-1][1] - 1 <= merge_gap:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    events = []
    for start, end in merged:
        if end - start + 1 < min_length:
            continue
        event = event_record(start, scores[start : end + 1], fps, times)
        if normalized_scores is not None:
            event["peak_normalized_score"] = float(np.asarray(normalized_scores).ravel()[event["peak_frame"]])
        events.append(event)
    return events


def frame_edges(times: np.ndarray, fps: float) -> np.ndarray:
    """When each frame of a variable-rate video starts (its ``times``, seconds) and when the last ends: a frame
    period ``1 / fps`` after it starts, as no later frame says when it ends."""
    times = np.asarray(times, dtype=np.float64).ravel()
    return np.append(times, times[-1] + 1.0 / fps) if times.size else np.zeros(1)


def peak_index(scores: np.ndarray) -> int:
    """The peak of an event's ``scores``: the first highest number; a NaN frame (anomalous, but no measure of how
    much) ranks below every number, so it is the peak only of an event of NaN frames alone."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    return int(np.argmax(np.where(np.isnan(scores), -np.inf, scores)))


def outranks(score: float, peak: float) -> bool:
    """Whether a later frame's ``score`` replaces ``peak`` as an event's peak, by :func:`peak_index`'s rule."""
    return not math.isnan(score) and (math.isnan(peak) or score > peak)


def event_record(start: int, scores: np.ndarray, fps: float, times: np.ndarray | None = None, first: int = 0) -> dict:
    """The fields of one event over frames ``start .. start + len(scores) - 1`` (its frames' scores), shared by
    the offline analysis and the live watcher, so that both describe an event the same way. ``times``: the
    frames' own seconds (a variable frame rate) from frame ``first`` on, at least to the event's end (one more:
    when the frame after it starts), else frame ``t`` is at ``t / fps``. ``peak_score`` is NaN only for an event
    of NaN frames alone (JSON writers make it ``null``)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    end = start + len(scores) - 1
    peak = start + peak_index(scores)
    if times is None:  # the formulas of before, so that evenly timed videos keep their times bit for bit
        start_time, end_time, duration, peak_time = start / fps, (end + 1) / fps, (end - start + 1) / fps, peak / fps
    else:
        edges = frame_edges(np.asarray(times, dtype=np.float64)[start - first : end - first + 2], fps)
        start_time, end_time, peak_time = float(edges[0]), float(edges[end - start + 1]), float(edges[peak - start])
        duration = end_time - start_time
    return {
        "start_frame": start,
        "end_frame": end,
        "start_time": round(start_time, 4),
        "end_time": round(end_time, 4),
        "duration": round(duration, 4),
        "frames": end - start + 1,
        "peak_frame": peak,
        "peak_time": round(peak_time, 4),
        "peak_score": float(scores[peak - start]),
    }


def event_flags(events: list[dict], num_frames: int) -> np.ndarray:
    """The frames covered by ``events`` as a boolean array."""
    flags = np.zeros(num_frames, dtype=bool)
    for event in events:
        flags[event["start_frame"] : event["end_frame"] + 1] = True
    return flags


def clip_frame_auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Frame AUROC within one clip, or None when the clip has only one class of frames."""
    labels = np.asarray(labels).ravel()
    if labels.size == 0 or labels.min() == labels.max():
        return None
    from anomalens.metrics.classification import image_auroc  # scipy, imported when needed: the torch-free runtime uses the events alone

    return image_auroc(labels, scores)


def pooled_frame_auroc(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> float:
    """Frame AUROC over all frames of all clips pooled into one ranking (the literature's figure)."""
    from anomalens.metrics.classification import image_auroc  # scipy, imported when needed: the torch-free runtime uses the events alone

    return image_auroc(np.concatenate([np.ravel(x) for x in labels]), np.concatenate([np.ravel(s) for s in scores]))


def minmax_per_clip_frame_auroc(labels: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> float:
    """Pooled frame AUROC after min-max scaling each clip's scores to [0, 1].

    Many video papers report this variant. It uses each test clip's own score range, which an online
    system does not know, so we report it beside the plain pooled figure, never instead of it.
    """
    scaled = []
    for s in scores:
        s = np.asarray(s, dtype=np.float64).ravel()
        span = s.max() - s.min() if s.size else 0.0
        scaled.append((s - s.min()) / span if span > 0 else np.zeros_like(s))
    return pooled_frame_auroc(labels, scaled)


def video_auroc(video_labels: Sequence[int], clip_scores: Sequence[float]) -> float:
    """Clip-level AUROC from one score per clip (we use each clip's highest frame score)."""
    from anomalens.metrics.classification import image_auroc  # scipy, imported when needed: the torch-free runtime uses the events alone

    return image_auroc(np.asarray(video_labels), np.asarray(clip_scores, dtype=np.float64))


EVENT_MERGE_SECONDS = 0.2  # events closer than this are one event (a one-frame dip does not split it)


def calibrated_events(
    scores: np.ndarray, calibration: Calibration, fps: float, normalized_scores: np.ndarray | None = None,
    times: np.ndarray | None = None,
) -> list[dict]:
    """The events of a clip at a model's own threshold, merging runs closer than :data:`EVENT_MERGE_SECONDS`
    (counted in frames at ``fps``); ``times`` as :func:`detect_events`."""
    merge_gap = max(1, int(round(EVENT_MERGE_SECONDS * fps)))
    return detect_events(scores, calibration.threshold, fps, merge_gap=merge_gap, normalized_scores=normalized_scores,
                         times=times)


def attach_peak_cues(events: list[dict], cues: dict[str, np.ndarray]) -> list[dict]:
    """Add to each event which cue made its peak (models that add several cues): ``peak_cues``, each cue's share
    of the score at the peak frame (e.g. ``{"appearance": 0.4, "motion": 7.9}`` for a speeding bike), and
    ``main_cue``, the largest. Events change in place; returned for convenience."""
    for event in events:
        event["peak_cues"] = {name: round(float(values[event["peak_frame"]]), 4) for name, values in cues.items()}
        if cues:
            event["main_cue"] = main_cue(event["peak_cues"])
    return events


def main_cue(cues: dict[str, float]) -> str | None:
    """The cue with the largest share (None when none is a number): a NaN share ranks below every number, where
    ``max`` would have picked whichever cue came first."""
    finite = {name: value for name, value in cues.items() if not math.isnan(value)}
    return max(finite, key=finite.__getitem__) if finite else None


def attach_peak_regions(events: list[dict], maps: np.ndarray, threshold: float, frame_size: tuple[int, int] | None) -> list[dict]:
    """Add to each event where it is (:func:`~anomalens.metrics.regions.event_regions`): the regions of its peak
    frame's raw map ``maps[peak_frame]`` above half its excess over ``threshold`` (:func:`half_excess_level`,
    saved as ``region_level``), in pixels of frames of ``frame_size`` (H, W). Only for maps whose highest cell is
    the frame's score (a video model's anomaly map), so that a frame above the threshold has a region; one lifted
    over it only by its neighbours' smoothing in time may have none. Events change in place; returned for
    convenience."""
    for event in events:
        event.update(video_event_regions(maps[event["peak_frame"]], threshold, frame_size))
    return events


def video_event_regions(peak_map: np.ndarray, threshold: float, frame_size: tuple[int, int] | None) -> dict[str, Any]:
    """A video event's ``peak_regions`` (its peak frame's map ``(h, w)`` cut at :func:`half_excess_level`), the
    frame's size and ``region_level``, the level used."""
    peak_map = np.asarray(peak_map, dtype=np.float32)
    level = half_excess_level(peak_map, threshold)
    return {**event_regions(peak_map, level, frame_size), "region_level": round(level, 6)}


@dataclass(frozen=True)
class Event:
    """One anomalous interval of a video, as :func:`detect_events` describes it (typed, for code that shows it).

    ``peak_cues``/``main_cue``: for models that add several cues, each cue's share of the score at the peak
    and the largest of them (why the moment was flagged). ``peak_regions``: where, the regions of the peak frame
    (dicts as :class:`~anomalens.metrics.regions.Region` gives them) in pixels of a frame of ``image_height`` x
    ``image_width``; empty for models whose map cannot place an event (stfeatures saved before ``anomaly_map``).
    """

    start_frame: int
    end_frame: int
    start_time: float
    end_time: float
    duration: float
    frames: int
    peak_frame: int
    peak_time: float
    peak_score: float
    peak_normalized_score: float | None = None
    peak_cues: dict[str, float] = field(default_factory=dict)
    main_cue: str | None = None
    peak_regions: list[dict[str, Any]] = field(default_factory=list)
    region_level: float | None = None  # the map value the regions were cut at (half the peak's excess)
    image_height: int | None = None
    image_width: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
