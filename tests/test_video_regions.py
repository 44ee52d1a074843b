"""Where a video event is: the default video model's maps peak at the frame's score where the evidence is, and
every path (analyze-video, the torch-free runtime, the watch) gives each event's regions in the video's own pixels.

Known inputs: a synthetic conveyor (data/synthetic_video.py) whose foreign object is a dark blue blob, found in the
frames by its colour; the test video is the same footage at twice the model's size.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from anomalens.data.preprocessing import Preprocessing
from anomalens.data.synthetic_video import _FOREIGN_RGB, synthetic_clip
from anomalens.data.video_io import write_video
from anomalens.errors import CheckpointError, ConfigError
from anomalens.metrics.drift import assess_drift
from anomalens.metrics.regions import half_excess_level
from anomalens.models.base import create_detector, load_detector
from anomalens.models.video.stfeatures import UNUSUAL_CUE, shortfall_map
from anomalens.workflows.predict import analyze_video

SIZE = (96, 128)
SETTINGS = dict(image_size=SIZE, appearance_memory=512, motion_memory=64, batch_size=4, training_degradations=(),
                codec_memory=(), motion_codec_memory=())


def test_the_map_peaks_at_the_unusual_cue_with_the_frames_score():
    """One frame: an ordinary look everywhere (its strongest appearance cell 0.5 standard units, at the top left) and
    one cell moving far too fast (6.0, at row 2, column 3). The frame scores 6.5; the map's highest cell is 6.5 at
    the fast cell, and the look's strongest cell stays far below (it is not the anomaly). The summed map of older
    models had 3.0 at the fast cell (its ordinary look pulled it down), below a threshold of 5."""
    appearance = torch.full((1, 4, 5), -3.0)
    appearance[0, 0, 0] = 0.5
    motion = torch.full((1, 4, 5), -2.0)
    motion[0, 2, 3] = 6.0
    score, a_value, m_value = torch.tensor([6.5]), torch.tensor([0.5]), torch.tensor([6.0])
    got = shortfall_map(score, appearance, motion, a_value, m_value)[0]
    assert float(got.max()) == pytest.approx(6.5) and divmod(int(got.argmax()), 5) == (2, 3)
    assert float(got[0, 0]) == pytest.approx(6.5 - 8.0)  # the motion cue's shortfall there: 6 - (-2)
    assert float((appearance + motion)[0, 2, 3]) == pytest.approx(3.0)
    # a cart, unusual in look and in motion (both at least UNUSUAL_CUE) at the same cell: the summed maps, peaking
    # there at the frame's score
    appearance[0, 2, 3] = 4.0
    cart = shortfall_map(torch.tensor([10.0]), appearance, motion, torch.tensor([4.0]), m_value)[0]
    assert torch.allclose(cart, (appearance + motion)[0]) and float(cart[2, 3]) == pytest.approx(10.0)
    assert 4.0 >= UNUSUAL_CUE
    # both unusual in different places (a cyclist, and an odd look elsewhere): the map still peaks at the score,
    # so the flagged frame has a region, at the stronger evidence
    appearance[0, 2, 3], motion[0] = -1.0, torch.full((4, 5), -1.0)
    appearance[0].fill_(-1.0)
    appearance[0, 0, 0], motion[0, 2, 3] = 3.0, 3.5
    apart = shortfall_map(torch.tensor([6.5]), appearance, motion, torch.tensor([3.0]), torch.tensor([3.5]))[0]
    assert float(apart.max()) == pytest.approx(6.5) and divmod(int(apart.argmax()), 5) == (2, 3)
    assert float(apart[0, 0]) == pytest.approx(6.0)
    appearance[0].fill_(-3.0)
    appearance[0, 0, 0] = 0.5
    motion[0].fill_(-2.0)
    motion[0, 2, 3] = 6.0
    # a frame where neither cue is unusual: the stronger one places it
    quiet = shortfall_map(torch.tensor([1.0]), appearance, motion, torch.tensor([0.5]), torch.tensor([0.4]))[0]
    assert divmod(int(quiet.argmax()), 5) == (0, 0) and float(quiet.max()) == pytest.approx(1.0)


def test_event_regions_are_cut_at_half_the_peaks_excess_over_the_threshold():
    assert half_excess_level(np.array([[1.0, 10.0]]), 2.0) == 6.0
    assert half_excess_level(np.array([[1.0, 1.5]]), 2.0) == 2.0  # nothing above: the threshold itself


@pytest.fixture(scope="module")
def fitted():
    prep = Preprocessing(image_size=SIZE)
    clips = [[prep.prepare_array(f) for f in synthetic_clip(seed, n_frames=40, size=SIZE)[0]] for seed in (0, 1, 2, 3, 10)]
    return create_detector("stfeatures", **SETTINGS).fit_clips(clips[:4], clips[4:])


@pytest.fixture(scope="module")
def blob_video(tmp_path_factory):
    """A foreign object riding the belt, written at twice the model's size: (video, frames as written)."""
    frames, labels = synthetic_clip(101, n_frames=60, size=SIZE, anomaly="foreign_object")
    big = [np.asarray(Image.fromarray(f).resize((SIZE[1] * 2, SIZE[0] * 2), Image.NEAREST)) for f in frames]
    return write_video(tmp_path_factory.mktemp("blob") / "blob.mp4", big, 10), big, labels


def _blob_pixels(frame: np.ndarray) -> np.ndarray:
    return np.linalg.norm(frame.astype(float) - _FOREIGN_RGB, axis=2) < 60


def _on_the_blob(region: dict, frame: np.ndarray) -> bool:
    blob = _blob_pixels(frame)
    return bool(blob[region["y"]:region["y"] + region["height"], region["x"]:region["x"] + region["width"]].any())


def test_analyze_video_says_where_each_event_is_in_the_videos_own_pixels(fitted, blob_video, tmp_path):
    video, frames, labels = blob_video
    analysis = analyze_video(fitted, video, tmp_path / "analysis", device="cpu")
    saved = json.loads(analysis.events_json.read_text())
    events = saved["events"]
    on_blob = [e for e in events if labels[e["peak_frame"]] and _blob_pixels(frames[e["peak_frame"]]).any()]
    assert on_blob, events
    for event in on_blob:
        assert (event["image_height"], event["image_width"]) == (SIZE[0] * 2, SIZE[1] * 2)
        largest = event["peak_regions"][0]
        assert _on_the_blob(largest, frames[event["peak_frame"]]), (largest, event["peak_frame"])
        # small, as the blob is: not the belt, not the frame
        assert largest["area"] < 0.1 * SIZE[0] * SIZE[1] * 4
        assert event["region_level"] >= saved["threshold"]  # half the peak's excess over it
    typed = analysis.events[events.index(on_blob[0])]
    assert typed.peak_regions == on_blob[0]["peak_regions"] and typed.image_width == SIZE[1] * 2


def test_the_map_rule_changes_neither_scores_nor_drift_and_older_models_give_no_regions(fitted, blob_video, tmp_path):
    """A model saved before ``anomaly_map`` (its config without the field) loads with the summed map: the same
    scores and drift to the last bit, and events without regions (that map cannot place them)."""
    video, frames, _ = blob_video
    fitted.save(tmp_path / "model")
    config_path = tmp_path / "model" / "config.json"
    meta = json.loads(config_path.read_text())
    assert meta["config"]["anomaly_map"] == "shortfall"
    del meta["config"]["anomaly_map"]
    config_path.write_text(json.dumps(meta))
    older = load_detector(tmp_path / "model", kind="video")
    assert older.config.anomaly_map == "sum" and not older.map_places_events and fitted.map_places_events
    prep = Preprocessing(image_size=SIZE)
    clip = [prep.prepare_array(np.asarray(Image.fromarray(f).resize(SIZE[::-1], Image.BILINEAR))) for f in frames]
    now, then = fitted.predict_clip(clip, views=False), older.predict_clip(clip, views=False)
    assert np.array_equal(now.scores, then.scores)
    assert np.array_equal(now.typical_cells(), then.typical_cells())
    assert assess_drift(now, fitted.drift_reference_) == assess_drift(then, older.drift_reference_)
    # the summed map is what older models drew and measured drift on
    assert np.array_equal(then.typical_cells(), np.median(then.maps.astype(np.float32).reshape(len(clip), -1), axis=1))
    assert not np.array_equal(now.maps, then.maps)
    # the new map's highest cell is the frame's score before smoothing in time: the smoothed score stays near it
    peaks = now.maps.astype(np.float32).reshape(len(clip), -1).max(axis=1)
    assert np.median(np.abs(peaks - now.scores)) < 0.5 * fitted.calibration_.scale + 1.0
    events = json.loads(analyze_video(older, video, tmp_path / "older", device="cpu").events_json.read_text())["events"]
    assert events and all("peak_regions" not in e for e in events)


def test_the_map_rule_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="anomaly_map"):
        create_detector("stfeatures", anomaly_map="max")


def test_a_bundle_says_whether_its_maps_place_events_and_refuses_a_wrong_value(fitted, blob_video, tmp_path):
    from anomalens.export import export_model
    from anomalens.inference import VideoInferencer

    video, _, _ = blob_video
    fitted.save(tmp_path / "model")
    bundle = export_model(tmp_path / "model", "onnx", "fp32", tmp_path / "bundle")
    meta = json.loads((bundle.folder / "bundle.json").read_text())
    assert meta["video"]["map_places_events"] is True
    expected = analyze_video(fitted, video, tmp_path / "analysis", device="cpu").events
    got = VideoInferencer.load(bundle.folder).predict_video(video).events
    assert [(e["peak_frame"], [r["x"] for r in e["peak_regions"]], e["image_width"]) for e in got] == \
        [(e.peak_frame, [r["x"] for r in e.peak_regions], e.image_width) for e in expected]
    meta["video"]["map_places_events"] = "yes"
    (bundle.folder / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="map_places_events"):
        VideoInferencer.load(bundle.folder)


@pytest.mark.parametrize("combination", ["sum", "tail", "sum+tail"])
def test_the_map_measures_each_cell_in_the_scores_own_units(combination):
    """One cell moving 10 standard units too fast, everything else ordinary: whatever the cues' combination (the
    tail surprise counts about z^2 / 2), the map peaks at the frame's score and the event's region is that one
    cell. Measured in standard units under "tail", every cell stood far above the cut and the region was the
    whole frame."""
    from anomalens.metrics.regions import find_regions

    detector = create_detector("stfeatures", image_size=SIZE, cue_combination=combination)
    detector.standardisation_ = torch.tensor([0.0, 1.0, 0.0, 1.0])  # raw distances are standard units here
    h, w = detector.grid
    appearance, motion = torch.zeros((1, h, w)), torch.zeros((1, h, w))
    motion[0, 5, 7] = 10.0
    a_score, m_score = torch.tensor([0.0]), torch.tensor([10.0])
    got = detector._anomaly_map(appearance, motion, a_score, m_score)[0].numpy()
    score = float(detector._combined(a_score, m_score)[0])
    assert float(got.max()) == pytest.approx(score, rel=1e-5) and divmod(int(got.argmax()), w) == (5, 7)
    regions = find_regions(got, half_excess_level(got, 5.0))
    assert len(regions) == 1 and regions[0].area == 1


def test_the_side_by_side_outlines_what_the_events_regions_hold():
    """A frame whose map peaks at one cell (normalised 0.99) while its top row spills just above the threshold
    (0.6): outlined at the threshold, the top row is outlined too; at the level an event's regions are cut at, only
    the peak's cell is."""
    from anomalens.visualization.video_render import TITLE_HEIGHT, SideBySideRenderer

    renderer = SideBySideRenderer((96, 128), view_label=None)
    h, w = renderer.panel
    frame = np.full((96, 128, 3), 90, np.uint8)
    heat = np.full((12, 16), 0.1, np.float32)
    heat[0, :] = 0.6
    heat[6, 8] = 0.99

    def outlined(level: float) -> tuple[int, int]:
        canvas = renderer.render(frame, heat, None, 9.0, 0.99, 0, 25.0, contour_level=level)
        blended = canvas[TITLE_HEIGHT:TITLE_HEIGHT + h, 2 * w:3 * w]
        white = (blended == 255).all(axis=2)
        return int(white[: h // 6].sum()), int(white[h // 3:].sum())  # the top row's band, the rest with the peak

    top, rest = outlined(0.5)
    assert top > 0 and rest > 0
    top, rest = outlined(0.8)
    assert top == 0 and rest > 0


def test_the_video_bar_shows_a_frame_that_could_not_be_scored_as_anomalous():
    # the verdict of a NaN score is anomalous everywhere (metrics.threshold.above_threshold), the rendered bar too
    from anomalens.visualization.video_render import ANOMALY_RGB, BAR_HEIGHT, NORMAL_RGB, SideBySideRenderer

    renderer = SideBySideRenderer((64, 96))

    frame, heat = np.zeros((64, 96, 3), np.uint8), np.zeros((8, 12), np.float32)

    def colours(score: float, normalized: float, anomalous: bool | None = None) -> set[tuple[int, int, int]]:
        canvas = renderer.render(frame, heat, None, score, normalized, 0, 25.0, anomalous=anomalous)
        bar = canvas[-BAR_HEIGHT:]  # the bar at the bottom
        return {tuple(int(v) for v in pixel) for pixel in bar.reshape(-1, 3)}

    assert ANOMALY_RGB in colours(float("nan"), float("nan")) and NORMAL_RGB not in colours(float("nan"), float("nan"))
    assert NORMAL_RGB in colours(0.5, 0.3) and ANOMALY_RGB not in colours(0.5, 0.3)
    assert ANOMALY_RGB in colours(2.0, 0.8)
    # a raw score just above the threshold can normalise (float32) to exactly 0.5: the calibration's verdict decides
    assert ANOMALY_RGB in colours(1.0000001, 0.5, anomalous=True) and NORMAL_RGB not in colours(1.0000001, 0.5, anomalous=True)
