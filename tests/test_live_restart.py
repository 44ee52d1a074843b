"""A watch restarted into the same output folder keeps the earlier watch's evidence; a hot folder watched with a
video model saves each event's peak image; the final status gives the rates over the whole watch.

The model is the tiny image detector (tests/_tiny_detector.py), fitted in milliseconds on flat grey frames with a
little noise; a bright square is the anomaly.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _live_parts import as_batch, read_jsonl, wait_until
from _tiny_detector import TinyDetector
from anomalens.data.video_io import write_video
from anomalens.live.sinks import last_event_id
from anomalens.live.status import WatchFigures
from anomalens.live.watcher import Watcher
from anomalens.models.base import create_detector

SIZE = (64, 64)


def normal_frames(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.full((*SIZE, 3), 120, np.uint8) + rng.integers(0, 6, (*SIZE, 3), dtype=np.uint8) for _ in range(n)]


def with_square(frame: np.ndarray, level: int = 250) -> np.ndarray:
    frame = frame.copy()
    frame[20:40, 20:40] = level
    return frame



@pytest.fixture()
def detector(tiny_model):
    frames = normal_frames(0, 12)
    return create_detector(tiny_model, image_size=SIZE).fit(as_batch(frames[:8]), as_batch(frames[8:]))



def test_a_restarted_watch_numbers_its_events_after_the_earlier_ones(detector, tmp_path):
    """Two watches of a file with one anomaly each into one folder: events 1 and 2, two clips, the first unchanged."""
    frames = normal_frames(1, 20) + [with_square(f) for f in normal_frames(2, 5)] + normal_frames(3, 15)
    video = write_video(tmp_path / "line.mp4", frames, 10)
    out = tmp_path / "out"
    Watcher(detector, str(video), out, device="cpu").run()
    first_clip = (out / "events" / "event_00001.mp4").read_bytes()
    status = Watcher(detector, str(video), out, device="cpu").run()
    ended = [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"]
    assert [m["id"] for m in ended] == [1, 2]
    assert [m["clip"] for m in ended] == ["events/event_00001.mp4", "events/event_00002.mp4"]
    assert (out / "events" / "event_00001.mp4").read_bytes() == first_clip
    assert (out / "events" / "event_00002.mp4").is_file()
    assert status["events"] == 1  # this watch's own events
    assert (out / "frames_00001.csv").is_file() and (out / "frames_00002.csv").is_file()


def test_event_numbers_continue_after_the_log_and_the_files(tmp_path):
    assert last_event_id(tmp_path) == 0
    (tmp_path / "events").mkdir()
    (tmp_path / "events.jsonl").write_text('{"type":"anomaly","id":4}\n{"type":"source_lost"}\n{"id": tru\n')
    assert last_event_id(tmp_path) == 4
    (tmp_path / "events" / "event_00007_overlay.png").write_bytes(b"")  # its log line lost (a crash)
    (tmp_path / "events" / ".event_00009.mp4.pid1.x.tmp").write_bytes(b"")  # a temporary file is no event
    assert last_event_id(tmp_path) == 7


class FramesAsVideo(TinyDetector):
    """The tiny detector presented as a video model: the watcher treats it as one (events span frames; no
    image-by-image events), so it shows what a hot folder saves for a video model."""

    kind = "video"


def test_a_hot_folder_watched_with_a_video_model_saves_the_peak_image(tmp_path):
    frames = normal_frames(0, 12)
    detector = FramesAsVideo(FramesAsVideo.config_class(image_size=SIZE)).fit(as_batch(frames[:8]), as_batch(frames[8:]))
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    watcher = Watcher(detector, str(folder), out, device="cpu")
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        peak = with_square(frames[1], 255)  # brighter than the event's first image: its peak
        for name, image in [("a_000", frames[0]), ("a_001", with_square(frames[2], 200)), ("a_002", peak),
                            ("a_003", frames[3])]:
            Image.fromarray(image).save(folder / f"{name}.png")
        assert wait_until(lambda: watcher.scored >= 4, 20)
        time.sleep(0.3)
    finally:
        watcher.stop()
        thread.join(30)
    (event,) = [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"]
    assert Path(event["file"]).name == "a_001.png" and Path(event["peak_file"]).name == "a_002.png"
    assert (event["image"], event["overlay"]) == ("events/event_00001.png", "events/event_00001_overlay.png")
    assert np.array_equal(np.asarray(Image.open(out / event["image"])), peak)
    assert Image.open(out / event["overlay"]).size == SIZE


def test_the_final_status_gives_the_rates_over_the_whole_watch():
    """Frames all read in the first second of a three-second watch: the final report says 10 per second."""
    figures = WatchFigures(started=0.0)
    first = figures.report(read=30, scored=15, pushed_out=0, too_late=0, now=1.0)
    assert (first["fps_in"], first["fps_scored"]) == (30.0, 15.0)
    final = figures.report(read=30, scored=30, pushed_out=0, too_late=0, now=3.0, whole_run=True)
    assert (final["fps_in"], final["fps_scored"]) == (10.0, 10.0)
