"""Finding video clips and their frame labels in both layouts, and refusing inconsistent labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anomalens.data.video_datasets import discover_video_category, is_video_category, label_intervals
from anomalens.data.video_io import write_video
from anomalens.errors import DataError


def _frame_folder(folder, n, size=(24, 32)):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((*size, 3), i, np.uint8)).save(folder / f"{i:03d}.png")


def _video(path, n):
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, [np.full((24, 32, 3), 8 * i, np.uint8) for i in range(n)], fps=10)


def test_frames_layout_with_labels_json_and_npy(tmp_path):
    root = tmp_path / "ped"
    _frame_folder(root / "training" / "frames" / "01", 5)
    _frame_folder(root / "training" / "frames" / "02", 4)
    _frame_folder(root / "testing" / "frames" / "01", 6)
    _frame_folder(root / "testing" / "frames" / "02", 3)
    _frame_folder(root / "testing" / "frames" / "03", 3)
    (root / "labels_frame.json").write_text(json.dumps({"_meta": {"x": 1}, "01": [0, 0, 1, 1, 0, 0]}))
    (root / "test_label").mkdir()
    np.save(root / "test_label" / "02.npy", np.array([0, 0, 0]))
    assert is_video_category(tmp_path, "ped")
    category = discover_video_category(tmp_path, "ped")
    assert category.layout == "frames"
    assert [c.name for c in category.train] == ["01", "02"]
    by_name = {c.name: c for c in category.test}
    assert by_name["01"].frame_labels.tolist() == [0, 0, 1, 1, 0, 0] and by_name["01"].video_label == 1
    assert by_name["02"].frame_labels.tolist() == [0, 0, 0] and by_name["02"].video_label == 0
    assert by_name["03"].frame_labels is None and by_name["03"].video_label == -1


def test_original_layout_with_sidecar_csv_and_video_level_only(tmp_path):
    root = tmp_path / "line"
    _video(root / "train" / "normal" / "a.mp4", 6)
    _frame_folder(root / "train" / "normal" / "b", 6)
    _video(root / "test" / "normal" / "n.mp4", 6)
    _video(root / "test" / "jam" / "j.mp4", 8)
    (root / "test" / "jam" / "j.labels.csv").write_text("start_frame,end_frame\n2,3\n6,7\n")
    _video(root / "test" / "smoke" / "s.mp4", 5)
    category = discover_video_category(tmp_path, "line")
    assert category.layout == "original" and len(category.train) == 2
    by_name = {c.name: c for c in category.test}
    assert by_name["j"].frame_labels.tolist() == [0, 0, 1, 1, 0, 0, 1, 1]
    assert by_name["n"].video_label == 0 and by_name["n"].labels_for(6).tolist() == [0] * 6
    assert by_name["s"].anomaly_type == "smoke" and by_name["s"].video_label == 1
    assert by_name["s"].labels_for(5) is None  # video-level only


def test_label_length_mismatch_is_a_clear_error(tmp_path):
    root = tmp_path / "ped"
    _frame_folder(root / "training" / "frames" / "01", 3)
    _frame_folder(root / "testing" / "frames" / "07", 4)
    (root / "labels_frame.json").write_text(json.dumps({"07": [0, 1, 1]}))
    with pytest.raises(DataError, match=r"07.*3 entries.*4 frames"):
        discover_video_category(tmp_path, "ped")


def test_sidecar_interval_outside_clip_names_the_file(tmp_path):
    root = tmp_path / "line"
    _video(root / "train" / "normal" / "a.mp4", 4)
    _video(root / "test" / "jam" / "j.mp4", 4)
    (root / "test" / "jam" / "j.labels.csv").write_text("start_frame,end_frame\n2,9\n")
    with pytest.raises(DataError, match=r"j\.labels\.csv.*outside"):
        discover_video_category(tmp_path, "line")


def test_missing_category_and_image_category(tmp_path):
    (tmp_path / "bottle" / "train" / "good").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "bottle" / "train" / "good" / "0.png")
    assert not is_video_category(tmp_path, "bottle")
    with pytest.raises(DataError, match="no normal training clips"):
        discover_video_category(tmp_path, "bottle")
    with pytest.raises(DataError, match="'nope' not found"):
        discover_video_category(tmp_path, "nope")


def test_label_intervals():
    assert label_intervals(np.array([0, 1, 1, 0, 1])) == [(1, 2), (4, 4)]
    assert label_intervals(np.zeros(3)) == []


def test_real_ped2_layout(ped2_root):
    category = discover_video_category(ped2_root, "ucsd_ped2")
    assert len(category.train) == 16 and len(category.test) == 12
    assert sum(len(c.frame_labels) for c in category.test) == 2010
    assert all(c.frame_labels is not None for c in category.test)


@pytest.mark.parametrize("meta", [{"fps": 1e9}, {"fps": -5}, {"fps": 0}, {"fps": "25"}, {"fps": True},
                                  {"fps": float("nan")}, [25]])
def test_a_bad_meta_fps_names_labels_frame_json_and_its_field(tmp_path, meta):
    """A bad rate in labels_frame.json was reported as a bad --fps, a flag the user never passed."""
    root = tmp_path / "ped"
    _frame_folder(root / "training" / "frames" / "01", 3)
    _frame_folder(root / "testing" / "frames" / "07", 3)
    (root / "labels_frame.json").write_text(json.dumps({"_meta": meta, "07": [0, 1, 1]}))
    with pytest.raises(DataError, match="_meta") as error:
        discover_video_category(tmp_path, "ped")
    assert error.value.path == root / "labels_frame.json" and "--fps" not in str(error.value)
    assert "\n" not in str(error.value)


def test_a_good_or_absent_meta_fps_states_the_folders_rate(tmp_path):
    root = tmp_path / "ped"
    _frame_folder(root / "training" / "frames" / "01", 3)
    (root / "labels_frame.json").write_text(json.dumps({"_meta": {"fps": 12.5}}))
    assert discover_video_category(tmp_path, "ped").train[0].fps == 12.5
    (root / "labels_frame.json").write_text(json.dumps({"_meta": {"fps": None, "x": 1}}))
    assert discover_video_category(tmp_path, "ped").train[0].fps is None


def test_train_video_with_a_bad_meta_fps_exits_2_naming_the_file(tmp_path, capsys):
    from anomalens.cli import main

    root = tmp_path / "ped"
    _frame_folder(root / "training" / "frames" / "01", 3)
    (root / "labels_frame.json").write_text(json.dumps({"_meta": {"fps": 1e9}}))
    assert main(["train-video", "--data-dir", str(tmp_path), "--category", "ped", "--results-dir",
                 str(tmp_path / "results"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "labels_frame.json" in err and "_meta.fps" in err and "--fps" not in err
