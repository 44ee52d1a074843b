"""A live watch's times, order and NaN scores: a variable-frame-rate file's events are timed by its timestamps (as
analyze-video times them) and its event clips keep them, the event a dropped stream closed reaches every sink
before its ``source_lost``, and a frame scored NaN counts as anomalous in events as ``Calibration.is_anomalous``
counts it, with every message valid JSON.

The variable-rate files are those of tests/test_video_timing.py (bursts of three frames 0.1 s apart, stating
10 fps); the model is the tiny image detector (tests/_tiny_detector.py) fitted on grey frames like theirs, its
threshold set between their scores and those of a red frame or one with a bright square, the anomalies. The sinks are real: events.jsonl, the webhook receiver and the
mosquitto broker of tests/_live_parts.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from _live_parts import Receiver, as_batch, free_port, read_jsonl, start_mosquitto, stop, wait_until
from anomalens.data.video_io import write_video
from anomalens.live import sources
from anomalens.live.events import EventTracker
from anomalens.live.settings import WatchSettings
from anomalens.live.sinks import MqttSink, WebhookSink
from anomalens.live.sources import Source, SourceBreak, SourceFrame, SourceGap, VideoFileSource
from anomalens.live.watcher import Watcher
from anomalens.metrics.events import detect_events
from anomalens.models.base import create_detector
from test_video_timing import RED, SIZE, TIMES, grey_frames, write_timed


@pytest.fixture()
def detector(tiny_model):
    frames = grey_frames(16, seed=20)
    model = create_detector(tiny_model, image_size=SIZE).fit(as_batch(frames[:10]), as_batch(frames[10:]))
    # its own threshold sits at the grey frames' noise, which the codec shifts; decoded grey frames score below 1,
    # red frames and bright squares about 20
    model.calibration_ = model.calibration_.with_threshold(5.0)
    return model


@pytest.fixture(scope="module")
def vfr_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("live_vfr")
    frames = grey_frames(len(TIMES), seed=1, red=RED)
    return {suffix: write_timed(folder / f"vfr.{suffix}", frames, TIMES) for suffix in ("mkv", "mp4")}


def strict_json(text: str) -> dict:
    """JSON as a strict receiver reads it: bare NaN or Infinity is refused."""
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def with_square(frame: np.ndarray) -> np.ndarray:
    frame = frame.copy()
    frame[12:36, 16:48] = 250
    return frame


# ---- 1. a variable-frame-rate file -------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["mkv", "mp4"])
def test_a_variable_rate_file_times_the_events_by_its_timestamps(detector, vfr_files, suffix, tmp_path):
    """The red frames 9-11 are at 2.0, 2.1 and 2.2 s and the frame after them at 3.0 s; at the 10 fps the file
    states (MP4: 24 frames / 6.3 s) frame / fps would put the event at 0.9-1.2 s (2.4-3.1 s)."""
    out = tmp_path / "out"
    status = Watcher(detector, str(vfr_files[suffix]), out, device="cpu").run()
    assert status["frames_scored"] == 24 and status["frames_dropped"] == 0
    messages = read_jsonl(out / "events.jsonl")
    [started] = [m for m in messages if m["type"] == "anomaly_started"]
    [event] = [m for m in messages if m["type"] == "anomaly"]
    assert (event["start_frame"], event["end_frame"]) == (RED[0], RED[-1])
    assert started["start_time"] == event["start_time"] == 2.0
    assert (event["end_time"], event["duration"]) == (3.0, 1.0)
    assert event["peak_time"] == TIMES[event["peak_frame"]]


def test_an_evenly_timed_file_keeps_frame_over_fps(detector, tmp_path):
    video = write_video(tmp_path / "even.mp4", grey_frames(24, seed=1, red=RED), fps=7.5)
    out = tmp_path / "out"
    Watcher(detector, str(video), out, device="cpu").run()
    [event] = [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"]
    assert (event["start_time"], event["end_time"]) == (round(9 / 7.5, 4), round(12 / 7.5, 4))
    assert event["peak_time"] == round(event["peak_frame"] / 7.5, 4)


def test_the_last_status_counts_the_timestamps_the_watch_repaired(detector, tmp_path):
    from test_video_io_timestamps import REPEATED, write_stamped

    stamps = list(TIMES)
    stamps[REPEATED] = TIMES[REPEATED - 1]  # one frame repeats the timestamp before it
    broken = write_stamped(tmp_path / "repeated.mkv", grey_frames(len(TIMES), seed=1), stamps)
    status = Watcher(detector, str(broken), tmp_path / "out", device="cpu").run()
    saved = json.loads((tmp_path / "out" / "status.json").read_text())
    assert (status["timestamps_repaired"], status["timestamp_restarts"]) == (1, 0)
    assert (saved["timestamps_repaired"], saved["timestamp_restarts"]) == (1, 0)
    # a file whose timestamps needed nothing says so
    even = write_video(tmp_path / "even.mp4", grey_frames(12, seed=1), fps=10)
    status = Watcher(detector, str(even), tmp_path / "even", device="cpu").run()
    assert (status["timestamps_repaired"], status["timestamp_restarts"]) == (0, 0)


def test_the_tracker_times_events_by_the_frames_own_times():
    scores = np.zeros(24)
    scores[list(RED)] = [2.0, 3.0, 2.5]
    tracker = EventTracker(1.0, 1.0, fps=10, close_after=1)
    closed = [t.event for i, s in enumerate(scores) for t in tracker.update(i, s, TIMES[i]) if t.kind == "closed"]
    # exactly detect_events' over the file's times, as analyze-video gives them
    assert closed == detect_events(scores, 1.0, fps=10, merge_gap=1, times=np.asarray(TIMES))
    assert (closed[0]["start_time"], closed[0]["peak_time"], closed[0]["end_time"]) == (2.0, 2.1, 3.0)
    # times within half a frame of frame / fps: the formulas, bit for bit
    fps = 29.97
    even = EventTracker(1.0, 1.0, fps=fps)
    jitter = [round(i / fps, 3) for i in range(10)]  # a millisecond clock
    [record] = [t.event for i in range(10) for t in even.update(i, 2.0 if i in (4, 5) else 0.0, jitter[i])
                if t.kind == "closed"]
    assert (record["start_time"], record["end_time"]) == (round(4 / fps, 4), round(6 / fps, 4))
    # the frame after the event was dropped: it ends a frame period after its last frame
    dropped = EventTracker(1.0, 1.0, fps=10, close_after=0)
    for i in (0, 1, 2, 4):
        dropped.update(i, [0.0, 5.0, 0.0, 0.0, 0.0][i], [0.0, 0.5, 0.9, 1.3, 1.7][i])
    dropped.update(5, 0.0, 1.9)
    dropped.update(6, 2.0, 2.0)
    [record] = [t.event for t in dropped.update(8, 0.0, 2.6) if t.kind == "closed"]  # frame 7 dropped
    assert (record["start_frame"], record["start_time"], record["end_time"]) == (6, 2.0, 2.1)


def test_a_variable_rate_file_played_in_real_time_keeps_its_timestamps(vfr_files, monkeypatch):
    """With ``realtime`` each frame comes when its timestamp says (2.2 s to frame 11, not 1.1 s), on a clock of
    the test's own: no sleeping, nothing measured."""
    clock = [0.0]

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return clock[0]

        time = staticmethod(time.time)

    class Waits:
        def wait(self, seconds: float) -> bool:
            clock[0] += seconds
            return False

        def is_set(self) -> bool:
            return False

    monkeypatch.setattr(sources, "time", Clock)
    source = VideoFileSource(vfr_files["mkv"], realtime=True)
    source.stopping = Waits()
    arrivals = []
    for frame in source.frames():
        arrivals.append(clock[0])
        assert frame.time == pytest.approx(arrivals[-1], abs=1e-9)
    np.testing.assert_allclose(arrivals, TIMES, atol=1e-3)


# ---- 2. the event a drop closed comes before the drop's source_lost --------------------------------------------
class DropsMidEvent(Source):
    """A stream whose frames 6-9 show the defect; it drops after frame 9 (the event still open) and is back at
    once, reporting the gap before its next frame, while the scorer has not reached the drop yet."""

    kind, live = "stream", False

    def __init__(self) -> None:
        super().__init__("drops mid-event")
        self.stated_fps = 10.0
        self.on_lost = lambda gap: None
        self.gap_reported = threading.Event()
        frames = grey_frames(14, seed=30)
        self.images = frames[:6] + [with_square(f) for f in frames[6:10]] + frames[10:]

    def frames(self):
        for image in self.images[:10]:
            yield SourceFrame(image, time.time())
        lost_at = time.time()
        yield SourceBreak(lost_at, "the stream broke off (test)")
        self.on_lost(SourceGap(lost_at, time.time(), "the stream broke off (test)", 1, after_frame=9))
        self.gap_reported.set()
        for i, image in enumerate(self.images[10:]):
            yield SourceFrame(image, time.time(), resumed=i == 0)


def test_the_event_a_drop_closed_reaches_every_sink_before_its_source_lost(detector, tmp_path):
    import paho.mqtt.client as mqtt

    port, hook_port = free_port(), free_port()
    broker = start_mosquitto(port, tmp_path / "broker")
    receiver = Receiver(hook_port)
    mqtt_received: list[dict] = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    subscriber.on_message = lambda client, userdata, message: mqtt_received.append(json.loads(message.payload))
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *args: subscribed.set()
    try:
        subscriber.connect("127.0.0.1", port)
        subscriber.subscribe("line/events", qos=1)
        subscriber.loop_start()
        assert subscribed.wait(10)
        source = DropsMidEvent()
        sinks = [WebhookSink(f"http://127.0.0.1:{hook_port}/events"), MqttSink(f"127.0.0.1:{port}", "line/events")]
        watcher = Watcher(detector, source, tmp_path / "out", sinks=sinks, device="cpu",
                          settings=WatchSettings(batch_size=1))
        source.on_lost = watcher.gaps.put  # as open_source wires a stream's
        take = watcher.reader.take

        def behind(limit):
            """The scorer reaches the drop only once the stream reported it back (a scorer some frames behind)."""
            frames, ended, lost = take(limit)
            if lost is not None:
                assert source.gap_reported.wait(10)
            return frames, ended, lost

        watcher.reader.take = behind
        watcher.run()
        assert wait_until(lambda: len(mqtt_received) >= 3, 10)
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
        receiver.close()
        stop(broker)
    kinds = ["anomaly_started", "anomaly", "source_lost"]
    for messages in (read_jsonl(tmp_path / "out" / "events.jsonl"), receiver.messages, mqtt_received):
        assert [m["type"] for m in messages] == kinds
        _, event, lost = messages
        assert event["closed_by"] == "source_lost" and (event["start_frame"], event["end_frame"]) == (6, 9)
        assert lost["after_frame"] == 9 and lost["reconnected"]


# ---- 3. NaN scores ----------------------------------------------------------------------------------------------
def test_a_nan_frame_counts_as_above_the_threshold_in_events():
    nan = math.nan
    [alone] = detect_events(np.array([0, nan, nan, 0]), 1.0, fps=10)
    assert (alone["start_frame"], alone["end_frame"], alone["peak_frame"]) == (1, 2, 1)
    assert math.isnan(alone["peak_score"])  # no number to report: JSON writers make it null
    # a NaN extends an event, and the peak is its highest number
    [mixed] = detect_events(np.array([0, 2, nan, 3, nan, 0]), 1.0, fps=10)
    assert (mixed["start_frame"], mixed["end_frame"], mixed["peak_frame"], mixed["peak_score"]) == (1, 4, 3, 3.0)
    # live: the same events (peaks included), with gaps and a minimum length
    rng = np.random.default_rng(3)
    for _ in range(500):
        n = int(rng.integers(1, 40))
        scores = np.where(rng.random(n) < 0.3, 2.0 + rng.random(n), rng.random(n))
        scores[rng.random(n) < 0.2] = nan
        gap, min_length = int(rng.integers(0, 3)), int(rng.integers(1, 3))
        tracker = EventTracker(1.0, 1.0, 10, gap, min_length)
        live = [t.event for i, s in enumerate(scores) for t in tracker.update(i, s) if t.kind == "closed"]
        live += [t.event for t in tracker.finish() if t.kind == "closed"]
        offline = detect_events(scores, 1.0, 10, min_length=min_length, merge_gap=gap)
        assert json.dumps(live) == json.dumps(offline)  # NaN equals NaN in the text


def test_the_tracker_keeps_the_data_of_the_event_s_peak():
    """A frame's data is the peak's only if the frame is part of the event: quiet frames after an event of NaN
    frames (numbers, so they would outrank NaN) are not."""
    tracker = EventTracker(1.0, 1.0, fps=10, close_after=2)
    scores = [0.0, math.nan, math.nan, 0.5, 0.4, 0.3]
    transitions = [t for i, s in enumerate(scores) for t in tracker.update(i, s, data=f"frame {i}")]
    assert [t.kind for t in transitions] == ["started", "closed"]
    closed = transitions[-1]
    assert closed.event["peak_frame"] == 1 and closed.open_event.peak_data == "frame 1"
    # a quiet frame between two NaN frames is part of the event, and its number is the peak
    fresh = EventTracker(1.0, 1.0, fps=10, close_after=2)
    for i, s in enumerate([math.nan, 0.5, math.nan, 0.0, 0.0, 0.0]):
        out = fresh.update(i, s, data=f"frame {i}")
    [closed] = [t for t in out if t.kind == "closed"]
    assert closed.event["peak_frame"] == 1 and closed.open_event.peak_data == "frame 1"


class Frames(Source):
    """Frames that wait for the scorer (no drop), at 10 fps."""

    kind, live = "stream", False

    def __init__(self, images: list[np.ndarray]) -> None:
        super().__init__("frames")
        self.images, self.stated_fps = images, 10.0

    def frames(self):
        for image in self.images:
            yield SourceFrame(image, time.time())


def test_frames_scored_nan_make_events_and_every_message_is_json(detector, tmp_path):
    """Frames 4-5 score NaN (the model could not say), frame 12 shows the defect and 13 scores NaN: two events,
    both announced; the first has no number for its peak (null), the second's peak is frame 12 with its regions."""
    frames = grey_frames(20, seed=40)
    frames[12] = with_square(frames[12])
    out = tmp_path / "out"
    watcher = Watcher(detector, Frames(frames), out, device="cpu", settings=WatchSettings(batch_size=1))
    push = watcher.scorer.push

    def scores_nan(batch, steps=None, before=None):
        results = push(batch, steps, before)
        return [dataclasses.replace(r, score=math.nan) if r.index in (4, 5, 13) else r for r in results]

    watcher.scorer.push = scores_nan
    watcher.run()
    lines = (out / "events.jsonl").read_text(encoding="utf-8").splitlines()
    messages = [strict_json(line) for line in lines]
    assert [m["type"] for m in messages] == ["anomaly_started", "anomaly", "anomaly_started", "anomaly"]
    first, second = messages[1], messages[3]
    assert (first["start_frame"], first["end_frame"], first["peak_frame"]) == (4, 5, 4)
    assert first["peak_score"] is None and first["peak_normalized_score"] is None
    assert (second["start_frame"], second["end_frame"], second["peak_frame"]) == (12, 13, 12)
    assert second["peak_score"] > detector.calibration_.threshold and second["peak_regions"]
    rows = [line.split(",") for line in (out / "frames_00001.csv").read_text().splitlines()[1:]]
    assert [int(row[0]) for row in rows if row[5] == "1"] == [4, 5, 12, 13]


def test_a_variable_rate_file_s_event_clip_keeps_its_frame_times(detector, vfr_files, tmp_path):
    """The clip of the red frames' event shows each frame when the source did, a burst of frames 0.1 s apart and the
    gaps between them, not frames at the stated 10 fps; and it spans seconds by those times: 3 s before the event (the
    file's start), to the first frame 3 s or more past its end (5.2 s, where 3 s at 10 fps would be the whole file)."""
    out = tmp_path / "out"
    Watcher(detector, str(vfr_files["mkv"]), out, device="cpu").run()
    [event] = [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"]
    assert event["clip_first_frame"] == 0
    with av.open(str(out / event["clip"])) as container:
        times = [float(frame.time) for frame in container.decode(video=0)]
    end = next(i for i, t in enumerate(TIMES) if t >= TIMES[event["end_frame"]] + 3.0 - 1e-6)
    assert event["end_frame"] == 11 and end == 20
    np.testing.assert_allclose(times, TIMES[: end + 1], atol=1e-4)


def test_the_frame_log_leaves_the_cells_of_a_nan_frame_empty(detector, tmp_path):
    """A frame that could not be scored: its score, normalised score and cues are empty cells in the frame log, as
    in every CSV (``score_cell``), not the text "nan"; its verdict is anomalous and its event's message valid JSON.
    Scored frames print as before."""
    out = tmp_path / "out"
    watcher = Watcher(detector, Frames(grey_frames(6, seed=41)), out, device="cpu", settings=WatchSettings(batch_size=1))
    assert watcher.frame_log is not None
    watcher.frame_log.columns[-1:-1] = ["appearance", "motion"]  # the tiny model gives no cues: give it two
    push = watcher.scorer.push

    def with_cues(batch, steps=None, before=None):
        return [dataclasses.replace(r, score=math.nan, cues={"appearance": math.nan, "motion": 0.123456789})
                if r.index == 3 else dataclasses.replace(r, cues={"appearance": 0.25, "motion": 0.75})
                for r in push(batch, steps, before)]

    watcher.scorer.push = with_cues
    watcher.run()
    text = (out / "frames_00001.csv").read_text(encoding="utf-8")
    header, *rows = [line.split(",") for line in text.splitlines()]
    assert header[3:9] == ["score", "normalized_score", "anomalous", "appearance", "motion", "file"]
    assert [int(row[0]) for row in rows] == list(range(6)) and "nan" not in text.lower()
    assert rows[3][3:8] == ["", "", "1", "", "0.123457"]
    for row in rows[:3] + rows[4:]:
        score = float(row[3])
        assert row[3] == f"{score:.6g}" and row[5] == "0" and row[6:8] == ["0.25", "0.75"]
        assert len(row[4].split(".")[1]) == 4  # ".4f"
    assert all(strict_json(line) for line in (out / "events.jsonl").read_text(encoding="utf-8").splitlines())
