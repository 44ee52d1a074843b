"""The label-free proxy's own parts (benchmarks/heldout_clips.py, benchmarks/cue_cells.py) on known inputs: the share
found at a false-alarm rate, the inserted fast person, and the frame-score rules compared offline."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from cue_cells import aggregate, scale  # noqa: E402
from heldout_clips import PERSON_SPEED, cut_person, found_at_fpr, insert_fast_person  # noqa: E402


def test_found_at_a_false_alarm_rate_uses_the_lowest_threshold_within_it():
    normal = np.arange(100, dtype=float)  # 0..99
    anomalous = np.array([97.5, 98.5, 50.0, 99.5])
    # at most 1% of 100 flagged: only 99 may pass, so the threshold is 98 and 98.5, 99.5 are found
    assert found_at_fpr(normal, anomalous, 0.01) == 0.5
    # at most 5%: 95..99 may pass, threshold 94; 97.5 joins them
    assert found_at_fpr(normal, anomalous, 0.05) == 0.75
    # none may pass: the threshold is the highest normal score
    assert found_at_fpr(normal, anomalous, 0.0) == 0.25


def _scene(n: int, person_at: int | None = None) -> list[torch.Tensor]:
    """Grey 120x180 frames; with ``person_at``, a dark 20x10 person standing at that column in every 3rd frame."""
    frames = []
    for t in range(n):
        frame = torch.full((3, 120, 180), 150, dtype=torch.uint8)
        if person_at is not None and t % 3 == 0:
            frame[:, 50:70, person_at : person_at + 10] = 40
        frames.append(frame)
    return frames


def test_a_person_is_cut_without_labels_and_crosses_another_clip_fast():
    donor = _scene(30, person_at=100)
    patch, mask, top, left = cut_person(donor, np.random.default_rng(0))
    assert (top, left) == (50, 100) and mask.shape == (20, 10) and mask.all() and int(patch.float().mean()) == 40
    frames, labels = insert_fast_person(_scene(60), np.random.default_rng(1), donor=donor)
    assert len(frames) == 60 and labels[: 60 // 6].sum() == 0 and labels.sum() > 0
    columns = [np.flatnonzero((frames[t][0, 60] == 40).numpy()) for t in np.flatnonzero(labels)]
    centres = [c.mean() for c in columns if len(c) == 10]  # frames where the whole person is inside
    steps = np.diff(centres)
    # it moves at the stated speed (scaled to the frame's width), one way
    np.testing.assert_allclose(np.abs(steps), PERSON_SPEED * 180 / 360, atol=1.0)
    assert (np.sign(steps) == np.sign(steps[0])).all()
    assert all(frames[t][0, 60].min() == 150 for t in np.flatnonzero(labels == 0))  # the rest is untouched


def test_frame_score_rules_on_known_cell_maps():
    cells = np.zeros((1, 4, 4), np.float32)
    cells[0, 0, 0], cells[0, 3, 3], cells[0, 3, 2] = 8.0, 4.0, 4.0
    assert aggregate(cells, "max")[0] == 8.0
    assert aggregate(cells, "window2")[0] == 2.0  # the best 2x2 mean: 8/4, or (4+4)/4
    assert aggregate(cells, "top3")[0] == 16.0 / 3
    normal = np.arange(101, dtype=float)
    assert scale(normal, "std") == (50.0, float(normal.std()))
    assert scale(normal, "tail90") == (50.0, 40.0)  # median, 90th percentile minus median
