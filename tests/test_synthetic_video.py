"""The synthetic conveyor: deterministic, labelled where the anomaly really is, readable by discovery."""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.data.preprocessing import Preprocessing
from anomalens.data.synthetic_video import ANOMALY_TYPES, make_synthetic_video_dataset, synthetic_clip
from anomalens.data.video_datasets import discover_video_category
from anomalens.data.video_io import probe_video


def test_clip_is_deterministic_and_normal_clips_vary():
    a, la = synthetic_clip(3, n_frames=20)
    b, _ = synthetic_clip(3, n_frames=20)
    c, _ = synthetic_clip(4, n_frames=20)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert la.sum() == 0 and a[0].shape == (96, 128, 3) and a[0].dtype == np.uint8


def _motion(frames):
    return np.array([np.abs(frames[t].astype(float) - frames[t - 1]).mean() for t in range(1, len(frames))])


def test_stop_and_speed_change_show_in_motion_where_labelled():
    frames, labels = synthetic_clip(1, n_frames=40, anomaly="stop")
    motion = _motion(frames)
    inside = labels[1:].astype(bool) & labels[:-1].astype(bool)
    assert motion[inside].mean() < 0.5 * motion[~labels[1:].astype(bool)].mean()
    frames, labels = synthetic_clip(1, n_frames=40, anomaly="speed_change")
    normal, _ = synthetic_clip(1, n_frames=40)
    assert labels.sum() > 0
    assert _motion(frames)[labels[1:] == 1].mean() > 1.2 * _motion(normal)[labels[1:] == 1].mean()


@pytest.mark.parametrize("anomaly", ["foreign_object", "colour_change"])
def test_appearance_anomaly_labelled_only_while_visible(anomaly):
    frames, labels = synthetic_clip(2, n_frames=40, anomaly=anomaly)
    normal, _ = synthetic_clip(2, n_frames=40)
    target = np.array([40, 52, 120]) if anomaly == "foreign_object" else np.array([96, 176, 70])
    def near(frame):
        return int((np.abs(frame.astype(int) - target).sum(axis=2) < 40).sum())
    visible = np.array([near(f) for f in frames])
    assert labels.sum() > 0
    assert visible[labels == 1].min() > 0 and (visible[labels == 0] < 6).all()
    assert max(near(f) for f in normal) == 0


def test_dataset_layout_files_and_frames(tmp_path):
    root = make_synthetic_video_dataset(tmp_path / "a", n_train=2, n_test=5, n_frames=16, size=(48, 64))
    category = discover_video_category(root, "synthetic_conveyor")
    assert len(category.train) == 2
    assert sorted(c.anomaly_type for c in category.test) == sorted([*ANOMALY_TYPES, "normal"])
    assert all(c.has_frame_labels for c in category.test)
    info = probe_video(category.train[0].path)
    assert info["frames"] == 16 and info["fps"] == pytest.approx(10) and info["codec"] == "h264"
    root = make_synthetic_video_dataset(tmp_path / "b", n_train=1, n_test=2, n_frames=12, size=(48, 64), as_files=False)
    category = discover_video_category(root, "synthetic_conveyor")
    assert all(len(c.frame_labels) == 12 for c in category.test)
    assert category.train[0].open(Preprocessing(image_size=(32, 32))).fps == 10  # from labels_frame.json's _meta
