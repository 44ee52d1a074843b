"""benchmarks/reencode.py's split of the flagged normal frames, on known scores and labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reencode import flagged_places  # noqa: E402


def test_flagged_normal_frames_are_split_by_their_distance_to_an_anomaly():
    scores = np.array([0, 2, 0, 2, 2, 2, 0, 0, 0, 2, 0, 2], float)
    labels = np.array([0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0])
    # flagged normal frames 1, 3, 9, 11; anomalous 4-5 (flagged, not counted); within 2 frames: only 3
    assert flagged_places(scores, labels, 1.0, reach=2) == {"near_anomaly": 1, "elsewhere_in_anomaly_clips": 3}
    # within 4 frames: 1 and 9 too
    assert flagged_places(scores, labels, 1.0, reach=4) == {"near_anomaly": 3, "elsewhere_in_anomaly_clips": 1}
    # a score equal to the threshold is not flagged (the benchmark flags scores above it)
    assert flagged_places(scores, labels, 2.0, reach=2) == {"near_anomaly": 0, "elsewhere_in_anomaly_clips": 0}


def test_a_clip_without_anomalous_frames_counts_as_normal_footage():
    assert flagged_places(np.array([0.0, 3.0, 3.0]), np.zeros(3, int), 1.0, reach=8) == {"normal_clips": 2}
