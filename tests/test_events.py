"""Events from frame scores, and frame-level AUROC pooled and per clip."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.metrics.events import (
    clip_frame_auroc,
    detect_events,
    event_flags,
    minmax_per_clip_frame_auroc,
    pooled_frame_auroc,
    video_auroc,
)


def test_events_have_frames_times_and_peaks():
    scores = np.array([0.1, 0.9, 0.95, 0.2, 0.1, 0.1, 0.8, 0.1])
    events = detect_events(scores, threshold=0.5, fps=4)
    assert [(e["start_frame"], e["end_frame"]) for e in events] == [(1, 2), (6, 6)]
    first = events[0]
    assert first["start_time"] == 0.25 and first["end_time"] == 0.75 and first["duration"] == 0.5
    assert first["peak_frame"] == 2 and first["peak_score"] == pytest.approx(0.95) and first["peak_time"] == 0.5


def test_merge_gap_and_min_length():
    scores = np.array([1, 1, 0, 1, 0, 0, 0, 1, 0], dtype=float)
    assert len(detect_events(scores, 0.5, fps=1)) == 3
    merged = detect_events(scores, 0.5, fps=1, merge_gap=1)
    assert [(e["start_frame"], e["end_frame"]) for e in merged] == [(0, 3), (7, 7)]
    assert [(e["start_frame"], e["end_frame"]) for e in detect_events(scores, 0.5, fps=1, min_length=2)] == [(0, 1)]
    assert event_flags(merged, 9).tolist() == [1, 1, 1, 1, 0, 0, 0, 1, 0]


def test_no_events_on_normal_scores_and_event_at_the_end():
    assert detect_events(np.zeros(10), 0.5, fps=10) == []
    events = detect_events(np.array([0, 0, 1.0]), 0.5, fps=10)
    assert events[0]["end_frame"] == 2 and events[0]["end_time"] == pytest.approx(0.3)


def test_frame_auroc_pooled_per_clip_and_video():
    labels = [np.array([0, 0, 1, 1]), np.array([0, 0, 0])]
    scores = [np.array([0.1, 0.2, 0.9, 0.8]), np.array([0.3, 0.1, 0.95])]
    assert clip_frame_auroc(labels[0], scores[0]) == 1.0
    assert clip_frame_auroc(labels[1], scores[1]) is None  # one class only
    # 0.95 (a normal frame) outranks both anomalous frames: 2 of 10 pairs wrong
    assert pooled_frame_auroc(labels, scores) == pytest.approx(0.8)
    assert minmax_per_clip_frame_auroc(labels, scores) < 1.0
    assert video_auroc([1, 0], [0.9, 0.95]) == 0.0


def test_the_main_cue_is_the_largest_number_and_never_a_nan():
    """``max`` over a dict with a NaN value answered whichever cue came first; a NaN share now ranks below every
    number, and an event whose cues are all NaN names none."""
    from anomalens.metrics.events import attach_peak_cues, main_cue

    assert main_cue({"appearance": float("nan"), "motion": 0.3}) == "motion"
    assert main_cue({"appearance": 2.0, "motion": float("nan")}) == "appearance"
    assert main_cue({"appearance": -1.0, "motion": -0.5}) == "motion"
    assert main_cue({"appearance": float("nan")}) is None
    [event] = attach_peak_cues([{"peak_frame": 1}], {"appearance": np.array([0.0, np.nan]), "motion": np.array([0.0, 0.2])})
    assert event["main_cue"] == "motion"
