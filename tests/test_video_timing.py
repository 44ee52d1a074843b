"""Frame times of variable-frame-rate video: each frame is where the file's timestamps put it, in scores.csv,
events, the timeline and the side-by-side video; evenly timed video keeps ``frame / fps`` bit for bit.

The variable-rate files are written here with PyAV: bursts of three frames 0.1 s apart with gaps between them, as
a camera that records only while something moves, in Matroska (millisecond timestamps) and MP4 (B-frames: its
first frame is not at pts 0)."""

from __future__ import annotations

import csv
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from anomalens.data.preprocessing import Preprocessing
from anomalens.data.video_io import open_clip, probe_video, write_video
from anomalens.metrics.events import detect_events, event_record
from anomalens.models.base import MODEL_REGISTRY, create_detector
from anomalens.workflows.predict import analyze_video

# frame i is at TIMES[i] seconds; 24 frames over 6.3 s, while the file states 10 fps (2.4 s at that rate)
TIMES = [0.0, 0.1, 0.2, 0.5, 0.6, 0.7, 1.2, 1.3, 1.4, 2.0, 2.1, 2.2,
         3.0, 3.1, 3.2, 4.0, 4.1, 4.2, 5.0, 5.1, 5.2, 6.0, 6.1, 6.2]
RED = range(9, 12)  # the frames at 2.0, 2.1 and 2.2 s hold the anomaly
SIZE = (48, 64)
NATIVE = Preprocessing(image_size=None)


def grey_frames(n: int, seed: int, red: range = range(0)) -> list[np.ndarray]:
    """Noisy grey frames (colours the tiny detector learns as normal, all in one of its colour bins, 96-127, however
    the codec shifts them); ``red`` frames are red (never seen)."""
    rng = np.random.default_rng(seed)
    frames = [np.clip(rng.normal(112, 3, (*SIZE, 3)), 100, 124).astype(np.uint8) for _ in range(n)]
    for i in red:
        frames[i] = np.zeros_like(frames[i])
        frames[i][..., 0] = 220
    return frames


def write_timed(path: Path, frames: list[np.ndarray], times: list[float], rate: int = 10) -> Path:
    """Frames at their own ``times`` (seconds), on a millisecond clock; the stream states ``rate``."""
    clock = Fraction(1, 1000)
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = SIZE[1], SIZE[0], "yuv420p"
        stream.options = {"threads": "1", "crf": "10"}
        stream.codec_context.time_base = clock
        for frame, seconds in zip(frames, times):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = round(seconds * 1000), clock
            for packet in stream.encode(video_frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return path


def decoded_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(frame.time) for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def vfr_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("vfr")
    frames = grey_frames(len(TIMES), seed=1, red=RED)
    return {suffix: write_timed(folder / f"vfr.{suffix}", frames, TIMES) for suffix in ("mkv", "mp4")}


@pytest.mark.parametrize("suffix", ["mkv", "mp4"])
def test_a_variable_rate_file_gives_each_frame_its_own_time(vfr_files, suffix):
    clip = open_clip(vfr_files[suffix], NATIVE)
    # what the file states: Matroska the stream's nominal 10 (24 frames at it would last 2.4 s), MP4 frames / duration
    assert clip.fps == pytest.approx(10.0 if suffix == "mkv" else 24 / 6.3)
    times = clip.frame_times()
    assert times is not None and times.shape == (24,)
    np.testing.assert_allclose(times, TIMES, atol=1e-3)
    assert times[0] == 0.0  # from the stream's first frame, wherever its pts starts (B-frames in MP4)
    segment = clip.segment(12, 18)  # a segment's times count from its own first frame
    np.testing.assert_allclose(segment.frame_times(), np.subtract(TIMES[12:18], TIMES[12]), atol=1e-3)
    # a segment asked first, before any full pass (its pass stops at its end): once a TypeError
    fresh = open_clip(vfr_files[suffix], NATIVE).segment(2, 10)
    np.testing.assert_allclose(fresh.frame_times(), np.subtract(TIMES[2:10], TIMES[2]), atol=1e-3)


def test_evenly_timed_sources_are_at_frame_over_fps(vfr_files, tmp_path):
    """None means frame t at t / fps exactly: a constant-rate file, a frame folder, or a rate the user states."""
    constant = write_video(tmp_path / "cfr.mp4", grey_frames(12, seed=2), fps=12)
    clip = open_clip(constant, NATIVE)
    assert clip.frame_times() is None and clip.fps == pytest.approx(12)
    assert open_clip(vfr_files["mkv"], NATIVE, fps=4).frame_times() is None  # --fps overrides the file's timing
    folder = tmp_path / "frames"
    folder.mkdir()
    from PIL import Image

    for i, frame in enumerate(grey_frames(3, seed=3)):
        Image.fromarray(frame).save(folder / f"{i}.png")
    assert open_clip(folder, NATIVE).frame_times() is None


def test_write_video_with_times_plays_as_long_as_its_source(tmp_path):
    frames = grey_frames(len(TIMES), seed=4)
    path = write_video(tmp_path / "timed.mp4", frames, fps=10, times=TIMES)
    np.testing.assert_allclose(decoded_times(path), TIMES, atol=1e-4)
    info = probe_video(path)
    assert info["frames"] == 24 and info["codec"] == "h264" and info["faststart"]
    with av.open(str(path)) as container:
        assert container.duration / 1e6 == pytest.approx(6.3, abs=0.01)  # the last frame shows for 1 / fps
    # without times: one frame per period, as before
    np.testing.assert_allclose(decoded_times(write_video(tmp_path / "even.mp4", frames, fps=10)), np.arange(24) / 10)


def test_events_take_the_frames_own_times_and_even_ones_keep_the_old_formulas():
    scores = np.zeros(24)
    scores[[9, 10, 11]] = [2.0, 3.0, 2.5]
    times = np.asarray(TIMES)
    [event] = detect_events(scores, 1.0, fps=10, times=times)
    assert (event["start_frame"], event["end_frame"], event["peak_frame"]) == (9, 11, 10)
    # the event lasts until the frame after it starts, as [start / fps, (end + 1) / fps) does at an even rate
    assert (event["start_time"], event["peak_time"], event["end_time"], event["duration"]) == (2.0, 2.1, 3.0, 1.0)
    last = event_record(22, np.array([5.0, 6.0]), 10, times)  # the last frame lasts a period: 1 / fps
    assert (last["start_time"], last["end_time"], last["peak_time"]) == (6.1, 6.3, 6.2)
    fps = 29.97  # no times: exactly the formulas of before
    even = event_record(7, np.array([1.0, 3.0, 2.0]), fps)
    assert (even["start_time"], even["end_time"], even["duration"], even["peak_time"]) == (
        round(7 / fps, 4), round(10 / fps, 4), round(3 / fps, 4), round(8 / fps, 4))


@pytest.fixture(scope="module")
def detector():
    """The colour-rarity detector of tests/test_video_workflow.py (named, not imported here, so that its module's
    autouse fixture stays there), fitted on grey clips: red frames score high."""
    MODEL_REGISTRY["tinyvideo"] = "test_video_workflow:TinyVideoDetector"
    try:
        model = create_detector("tinyvideo", image_size=SIZE)
        train = [[torch.from_numpy(f.transpose(2, 0, 1).copy()) for f in grey_frames(12, seed)] for seed in (10, 11)]
        validation = [[torch.from_numpy(f.transpose(2, 0, 1).copy()) for f in grey_frames(12, 12)]]
        yield model.fit_clips(train, validation)
    finally:
        MODEL_REGISTRY.pop("tinyvideo", None)


def test_analyze_video_times_a_variable_rate_video_by_its_timestamps(detector, vfr_files, tmp_path):
    from anomalens.progress import Reporter

    lines: list[str] = []
    analysis = analyze_video(detector, vfr_files["mkv"], tmp_path / "out", device="cpu",
                             reporter=Reporter(show_tqdm=False, callback=lambda message, *_: lines.append(message)))
    rows = list(csv.DictReader(open(analysis.scores_csv)))
    assert [float(row["time"]) for row in rows] == TIMES  # frame 23 at 6.2 s, not 2.3 s
    # the user is told that motion between frames does not follow the timestamps
    assert any("variable frame rate (frames 100-800 ms apart)" in line and "after long gaps" in line for line in lines)
    payload = json.loads(analysis.events_json.read_text())
    assert payload["fps"] == 10.0 and payload["variable_frame_rate"] is True
    [event] = payload["events"]
    assert (event["start_frame"], event["end_frame"]) == (RED[0], RED[-1])
    assert (event["start_time"], event["end_time"], event["duration"]) == (2.0, 3.0, 1.0)
    assert event["peak_time"] == TIMES[event["peak_frame"]]
    # the side-by-side video shows each frame when the source did: 6.3 s, not 24 frames at 10 fps (2.4 s)
    np.testing.assert_allclose(decoded_times(analysis.side_by_side_path), TIMES, atol=1e-4)
    assert analysis.timeline_path.is_file()


def test_analyze_video_of_an_even_rate_keeps_frame_over_fps(detector, tmp_path):
    video = write_video(tmp_path / "even.mp4", grey_frames(24, seed=5, red=RED), fps=7.5)
    analysis = analyze_video(detector, video, tmp_path / "out", device="cpu")
    rows = list(csv.DictReader(open(analysis.scores_csv)))
    assert [row["time"] for row in rows] == [f"{t / 7.5:.4f}" for t in range(24)]
    payload = json.loads(analysis.events_json.read_text())
    assert payload["variable_frame_rate"] is False
    [event] = payload["events"]
    assert (event["start_time"], event["end_time"]) == (round(9 / 7.5, 4), round(12 / 7.5, 4))
    np.testing.assert_allclose(decoded_times(analysis.side_by_side_path), np.arange(24) / 7.5, atol=1e-4)
