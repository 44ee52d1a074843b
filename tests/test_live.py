"""Watching live: causal scoring equals the offline scores, events equal analyze-video's, and the real parts
(a GStreamer RTSP server, a mosquitto broker, an HTTP receiver, a hot folder, SIGTERM) behave as documented.

The model is the default video model, small (96x128 frames) and trained once for the module on synthetic
conveyor clips; the watched video joins clips with known anomalies (a foreign object, a speed change).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _live_parts import Receiver, free_port, read_jsonl, start_mosquitto, start_rtsp_server, stop, wait_until
from anomalens.data.preprocessing import Preprocessing, to_float
from anomalens.data.synthetic_video import DEFAULT_VIDEO_CATEGORY, make_synthetic_video_dataset, synthetic_clip
from anomalens.data.video_io import probe_video, write_video
from anomalens.live.clips import ClipWriter
from anomalens.live.events import EventTracker
from anomalens.live.scoring import frame_scorer
from anomalens.live.settings import WatchSettings
from anomalens.live.sinks import MqttSink, WebhookSink
from anomalens.live.sources import Source, SourceFrame
from anomalens.live.watcher import Watcher
from anomalens.metrics.events import detect_events
from anomalens.models.base import create_detector
from anomalens.models.components import onnx_backbone
from anomalens.models.components.kernels import DelayedGaussian, gaussian_smooth_1d
from anomalens.models.video.stfeatures import typical_cell
from anomalens.workflows.predict import analyze_video
from anomalens.workflows.train import train_video_model

REPO = Path(__file__).resolve().parents[1]
SIZE = (96, 128)
LINE = [(50, None), (51, "foreign_object"), (52, None), (53, "speed_change"), (54, None)]


def frames_of(seed: int, n: int, anomaly: str | None = None) -> list[np.ndarray]:
    return synthetic_clip(seed, n_frames=n, size=SIZE, anomaly=anomaly)[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """stfeatures trained (as train-video does) on encoded synthetic clips: (detector, run folder)."""
    root = make_synthetic_video_dataset(tmp_path_factory.mktemp("live_data"), n_train=3, n_test=1, n_frames=80, size=SIZE)
    result = train_video_model(root, DEFAULT_VIDEO_CATEGORY, model="stfeatures", image_size=SIZE, device="cpu",
                               results_dir=tmp_path_factory.mktemp("live_runs"),
                               appearance_memory=512, motion_memory=64)
    return result.detector, result.run_dir


@pytest.fixture(scope="module")
def line_video(tmp_path_factory) -> Path:
    """300 frames at 10 fps: normal, a foreign object, normal, a speed change, normal."""
    frames = [f for seed, kind in LINE for f in frames_of(seed, 60, kind)]
    return write_video(tmp_path_factory.mktemp("line") / "line.mp4", frames, 10)


def iou(a: dict, b: dict) -> float:
    inter = min(a["end_frame"], b["end_frame"]) - max(a["start_frame"], b["start_frame"]) + 1
    union = max(a["end_frame"], b["end_frame"]) - min(a["start_frame"], b["start_frame"]) + 1
    return max(inter, 0) / union


# ---- the pieces --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.0, 0.7, 2.0])
def test_delayed_smoothing_equals_the_offline_smoothing(sigma):
    for n in (1, 2, 4, 6, 7, 15, 40):
        values = np.random.default_rng(n).normal(size=n)
        smoother = DelayedGaussian(sigma)
        out = [y for v in values for y in smoother.push(v)]
        assert len(out) == max(0, n - smoother.delay)  # each value comes `delay` values later
        out += smoother.finish()
        np.testing.assert_allclose(out, gaussian_smooth_1d(values, sigma), atol=1e-5)


def test_shorter_lookahead_answers_sooner():
    smoother = DelayedGaussian(2.0, lookahead=0)
    assert smoother.delay == 0 and smoother.push(1.0) == [1.0]
    step = [y for v in [0.0] * 10 + [1.0] for y in smoother.push(v)]
    assert 0 < step[-1] < 1  # one-sided: the step shows at once, damped by the past


def test_tracker_gives_the_offline_intervals():
    rng = np.random.default_rng(0)
    for _ in range(500):
        scores = (rng.random(rng.integers(1, 50)) < rng.random()) * 2.0
        gap, min_length = int(rng.integers(0, 4)), int(rng.integers(1, 4))
        tracker = EventTracker(1.0, 1.0, 10, gap, min_length)
        live = [t.event for i, s in enumerate(scores) for t in tracker.update(i, s) if t.kind == "closed"]
        live += [t.event for t in tracker.finish() if t.kind == "closed"]
        assert live == detect_events(scores, 1.0, 10, min_length=min_length, merge_gap=gap)


def test_hysteresis_keeps_an_event_open_above_the_lower_level():
    tracker = EventTracker(threshold=1.0, close_level=0.5, fps=10, close_after=0)
    closed = [t.event for i, s in enumerate([0, 2, 0.8, 0.7, 0.2, 0]) for t in tracker.update(i, s) if t.kind == "closed"]
    assert [(e["start_frame"], e["end_frame"]) for e in closed] == [(1, 3)]


class StatedClip(list):
    """Frames whose rate something states (as ``open_clip(..., fps=)`` does): what offline scoring rescales motion by."""

    def __init__(self, frames, fps: float) -> None:
        super().__init__(frames)
        self.stated_fps = fps


@pytest.mark.parametrize("case", ["as trained", "far above the ceiling", "about the ceiling", "at half the training rate"])
def test_causal_scores_equal_the_offline_scores(model, monkeypatch, case):
    """Also with the codec memories and the low-pass counting fully (a ceiling of 0: every frame far above it) and
    by a part (a ceiling at the clip's median typical cell: frames within it and a little above it side by side,
    so that some batches search the codec memories and others not), and for a stream at 5 fps scored by a model
    trained at 10 (motion_per_second: the flow halved)."""
    detector, _ = model
    prep = Preprocessing(image_size=SIZE)
    frames = [prep.prepare_array(f) for f in frames_of(60, 30, "stop")]
    fps, searched = None, []
    if case.endswith("ceiling"):
        assert detector.codec_index_ is not None and detector.codec_motion_memory_ is not None
        assert detector.config.above_ceiling_lowpass > 1 and math.isfinite(float(detector.appearance_ceiling_))
        typical = []  # each frame's typical appearance cell, as the ceiling sees it
        with monkeypatch.context() as patch:
            frame_scores = detector._frame_scores

            def recording(appearance, *rest):
                typical.extend(typical_cell(appearance.flatten(1)).tolist())
                return frame_scores(appearance, *rest)

            patch.setattr(detector, "_frame_scores", recording)
            as_trained = detector.predict_clip(frames, views=False)
        ceiling = 0.0 if case == "far above the ceiling" else float(np.median(typical))
        weights = np.clip((np.asarray(typical) - ceiling) / float(detector.standardisation_[1]), 0.0, 1.0)
        if ceiling:
            assert (weights == 0).sum() >= 10 and ((weights > 0.05) & (weights < 0.95)).sum() >= 3
        else:
            assert np.all(weights == 1.0)
        monkeypatch.setattr(detector, "appearance_ceiling_", torch.tensor([ceiling]))

        def recorded(name, original):
            def coded_map(*args):
                searched.append((name, original(*args)))
                return searched[-1][1]
            return coded_map

        for name in ("_coded_map", "_coded_motion_map"):  # each batch's codec-memory maps (None: not searched)
            monkeypatch.setattr(detector, name, recorded(name, getattr(detector, name)))
    elif case == "at half the training rate":
        assert detector.training_fps_ == 10.0 and detector.flow_scale(5.0) == 0.5
        as_trained = detector.predict_clip(frames, views=False)
        fps, frames = 5.0, StatedClip(frames, 5.0)
    offline = detector.predict_clip(frames)
    if case.endswith("ceiling"):
        assert {n for n, coded in searched if coded is not None} == {"_coded_map", "_coded_motion_map"}
        assert np.abs(offline.cues["appearance"] - as_trained.cues["appearance"]).max() > 0.1
    elif case == "at half the training rate":
        assert np.abs(offline.cues["motion"] - as_trained.cues["motion"]).max() > 0.1
    for batch in (1, 3):
        searched.clear()
        scorer = detector.causal_scorer(fps=fps) if batch == 1 else frame_scorer(detector)
        if batch == 3:  # as the watch gives it: the source's rate, set before the frames
            scorer.set_rate(fps)
        assert scorer.delay_frames == 8  # the kernel radius, round(4 * temporal_sigma 2)
        results = [r for i in range(0, len(frames), batch) for r in scorer.push(torch.stack(frames[i:i + batch]))]
        assert len(results) == len(frames) - 8
        results += scorer.finish()
        assert [r.index for r in results] == list(range(len(frames)))
        np.testing.assert_allclose([r.score for r in results], offline.scores, atol=1e-4)
        np.testing.assert_allclose([r.cues["motion"] for r in results], offline.cues["motion"], atol=1e-4)
        np.testing.assert_allclose([r.cues["appearance"] for r in results], offline.cues["appearance"], atol=1e-4)
        # the maps too (offline kept as float16), so that a live event's regions are analyze-video's
        np.testing.assert_allclose(np.stack([r.map for r in results]).astype(np.float32),
                                   offline.maps.astype(np.float32), rtol=1e-3, atol=1e-2)
        if case.endswith("ceiling"):  # the live scorer searched the codec memories too; about it, not every batch
            coded = [c is not None for n, c in searched if n == "_coded_map"]
            assert any(coded) and (all(coded) if case == "far above the ceiling" else not all(coded))


def test_a_streaming_scorer_keeps_the_runtimes_buffers_with_the_same_features(model, tmp_path, monkeypatch):
    """A live scorer runs a frame or two at a time: ONNX Runtime keeps its buffers (its arena) between calls, where
    offline scoring creates its session without; the features are the same."""
    pytest.importorskip("onnxscript", reason="onnxscript (needed by the ONNX exporter) is not installed")
    monkeypatch.setenv(onnx_backbone.CACHE_ENVIRONMENT, str(tmp_path))
    monkeypatch.setattr(onnx_backbone, "_runtime", "onnx")
    detector, _ = model
    frames = torch.stack([Preprocessing(image_size=SIZE).prepare_array(f) for f in frames_of(66, 8)[:2]])
    extractor = detector.extractor
    extractor.keep_buffers = False
    extractor.reset_runtime()
    offline = extractor(to_float(frames))
    runner = extractor._runners[SIZE]
    assert runner.engine == "onnx" and not runner.session.get_session_options().enable_cpu_mem_arena
    detector.causal_scorer()
    assert extractor.keep_buffers and SIZE not in extractor._runners  # a new session from the next frame on
    live = extractor(to_float(frames))
    assert extractor._runners[SIZE].session.get_session_options().enable_cpu_mem_arena
    assert torch.equal(live, offline)
    extractor.reset_runtime()  # the module's other tests run on the runtime of the test session


def test_motion_after_dropped_frames_comes_from_the_frame_decoded_just_before(model):
    """A scorer that skips frames but is given the frame decoded just before each one sees the same motion as a
    scorer that took every frame (maps are not smoothed in time, so they compare frame by frame)."""
    detector, _ = model
    prep = Preprocessing(image_size=SIZE)
    frames = [prep.prepare_array(f) for f in frames_of(61, 24, "speed_change")]
    every = detector.causal_scorer(0)
    full = {r.index: r.map for i in range(len(frames)) for r in every.push(frames[i][None])}
    kept = [0, 1, 2, 5, 6, 9, 10, 11, 15, 20, 21, 22, 23]
    gappy, across = detector.causal_scorer(0), detector.causal_scorer(0)
    with_before, divided = [], []
    for previous, index in zip([-1, *kept], kept):
        dropped = index - previous > 1
        with_before += gappy.push(frames[index][None], [index - previous], [frames[index - 1] if dropped else None])
        divided += across.push(frames[index][None], [index - previous])
    for k, result in enumerate(with_before):
        np.testing.assert_allclose(result.map, full[kept[k]], atol=1e-4)
    # without the frame before, motion across the gap differs (the flow of a jump, divided by its length)
    assert max(float(np.abs(r.map - full[kept[k]]).max()) for k, r in enumerate(divided)) > 0.05


def test_motion_after_a_break_in_the_source_starts_afresh(model):
    """After a reconnect (step 0) motion is not measured across the break: the frames after it get the maps of a
    scorer that started with them (the first borrows the second's motion); a one-frame segment before the break
    is still scored, without motion."""
    detector, _ = model
    prep = Preprocessing(image_size=SIZE)
    earlier = [prep.prepare_array(f) for f in frames_of(62, 8)[:5]]
    later = [prep.prepare_array(f) for f in frames_of(63, 8, "speed_change")]
    fresh_scorer = detector.causal_scorer(0)
    fresh = [r.map for frame in later for r in fresh_scorer.push(frame[None])]
    for first_segment in (earlier, earlier[:1]):
        resumed, across = detector.causal_scorer(0), detector.causal_scorer(0)
        results, spanning = [], []
        for frame in first_segment:
            results += resumed.push(frame[None])
            spanning += across.push(frame[None])
        for k, frame in enumerate(later):
            results += resumed.push(frame[None], [0 if k == 0 else 1])
            spanning += across.push(frame[None])
        assert [r.index for r in results] == list(range(len(first_segment) + len(later)))
        for result, expected in zip(results[len(first_segment):], fresh):
            np.testing.assert_allclose(result.map, expected, atol=1e-4)
        # measured across the break, the first frame's motion is the jump between two scenes
        assert float(np.abs(spanning[len(first_segment)].map - fresh[0]).max()) > 0.05


class _TwoSegments(Source):
    """A stream that breaks off after ``first`` frames and comes back (the next frame is marked ``resumed``); it
    waits for the scorer, so that no frame is dropped."""

    kind, live = "stream", False

    def __init__(self, frames: list[np.ndarray], first: int) -> None:
        super().__init__("two segments")
        self.images, self.first, self.stated_fps = frames, first, 10.0

    def frames(self):
        for i, image in enumerate(self.images):
            yield SourceFrame(image, time.time(), resumed=i == self.first)


def test_the_watch_scores_a_reconnected_stream_afresh_with_one_thread_per_library(model):
    """The frame after a break reaches the scorer with step 0 and no frame from before the break; every frame is
    scored once; the libraries run one thread each inside the watch and get their counts back after it."""
    detector, _ = model
    frames = frames_of(64, 8)[:6] + frames_of(65, 8, "foreign_object")[:6]
    watcher = Watcher(detector, _TwoSegments(frames, 6), None, device="cpu", settings=WatchSettings(batch_size=1))
    calls: list[tuple[list[int], bool, int]] = []
    features = watcher.scorer.features

    def recording(batch, steps=None, before=None):
        calls.append((list(steps), before[0] is not None, torch.get_num_threads()))
        return features(batch, steps, before)

    watcher.scorer.features = recording
    threads = torch.get_num_threads()
    status = watcher.run()
    assert status["frames_scored"] == status["frames_read"] == 12 and status["frames_dropped"] == 0
    assert [c[0] for c in calls] == [[1]] * 6 + [[0]] + [[1]] * 5
    assert not any(c[1] for c in calls) and {c[2] for c in calls} == {1}
    assert torch.get_num_threads() == threads


def test_clips_keep_the_source_timing_when_frames_are_left_out(tmp_path):
    """Frames 0..99 at 10 fps with every third one missing: the clip of an event at 40..50 runs from 20 (2 s
    before) to 70 (2 s after) with the missing frames' time kept, so it plays in real time."""
    writer = ClipWriter(10, before=2, after=2, max_seconds=60, lead=10, queue_seconds=100)  # nothing left out
    started = False
    for index in range(100):
        if index % 3 != 1:
            writer.add(index, np.full((48, 64, 3), index * 2, np.uint8))
        time.sleep(0.002)
        if index == 45 and not started:
            assert writer.start(1, tmp_path / "event.mp4", 40) == (tmp_path / "event.mp4", 20)
            started = True
        if index == 52:
            writer.end(1, 50)
    writer.close()
    import av

    with av.open(str(tmp_path / "event.mp4")) as container:
        times = [round(float(frame.time), 3) for frame in container.decode(video=0)]
    expected = [(i - 20) / 10 for i in range(20, 71) if i % 3 != 1]
    assert times == expected
    assert writer.stats()["clips_written"] == 1 and writer.stats()["clips_open"] == 0


def test_an_event_soon_after_another_joins_its_clip(tmp_path):
    """Events 2 s apart share one clip (one encoder), from 2 s before the first to 2 s after the second; an
    event long after gets its own."""
    writer = ClipWriter(10, before=2, after=2, max_seconds=60, lead=10, queue_seconds=100)  # nothing left out
    opened = []
    for index in range(200):
        writer.add(index, np.full((48, 64, 3), index, np.uint8))
        time.sleep(0.002)
        if index == 35:
            opened.append(writer.start(1, tmp_path / "one.mp4", 30))
        if index == 42:
            writer.end(1, 40)
        if index == 65:
            opened.append(writer.start(2, tmp_path / "two.mp4", 60))  # 2 s after the first: joins it
        if index == 72:
            writer.end(2, 70)
        if index == 155:
            opened.append(writer.start(3, tmp_path / "three.mp4", 150))
        if index == 162:
            writer.end(3, 160)
    writer.close()
    assert opened == [(tmp_path / "one.mp4", 10), (tmp_path / "one.mp4", 10), (tmp_path / "three.mp4", 130)]
    assert probe_video(tmp_path / "one.mp4")["frames"] == 90 - 10 + 1
    assert probe_video(tmp_path / "three.mp4")["frames"] == 180 - 130 + 1
    assert not (tmp_path / "two.mp4").exists() and writer.stats()["clips_written"] == 2


# ---- watch a file: the same events as analyze-video -------------------------------------------------------
def test_watch_finds_the_events_of_analyze_video(model, line_video, tmp_path):
    detector, _ = model
    offline = [dataclasses.asdict(e) for e in analyze_video(detector, line_video, tmp_path / "offline", device="cpu").events]
    out = tmp_path / "watch"
    status = Watcher(detector, str(line_video), out, device="cpu").run()
    assert status["frames_dropped"] == 0 and status["frames_scored"] == 300 and status["state"] == "stopped"
    messages = read_jsonl(out / "events.jsonl")
    live = [m for m in messages if m["type"] == "anomaly"]
    assert len(offline) >= 2 and len(live) == len(offline)
    same_peaks = 0
    for event, twin in zip(live, offline):
        assert iou(event, twin) >= 0.8
        assert set(twin) <= set(event)  # every field of analyze-video's events.json
        assert event["main_cue"] in ("appearance", "motion")
        # where: the peak frame's regions in the frame's pixels, as analyze-video gives them
        assert (event["image_height"], event["image_width"]) == SIZE and event["peak_regions"]
        if event["peak_frame"] == twin["peak_frame"]:
            assert event["peak_regions"] == twin["peak_regions"]
            same_peaks += 1
        clip = probe_video(out / event["clip"])
        assert clip["codec"] == "h264" and clip["frames"] >= event["frames"]
    assert same_peaks >= 1  # the regions were compared at least once
    # a foreign object is an appearance anomaly, a speed change a motion anomaly
    cues = {m["main_cue"] for m in live if m["frames"] > 5}
    assert cues == {"appearance", "motion"}
    started = [m for m in messages if m["type"] == "anomaly_started"]
    assert [m["start_frame"] for m in started] == [m["start_frame"] for m in live]
    rows = (out / "frames_00001.csv").read_text().splitlines()
    assert len(rows) == 301 and rows[0].startswith("frame,arrived,scored,score,normalized_score,anomalous,appearance,motion")
    assert json.loads((out / "status.json").read_text())["events"] == len(live)


# ---- a hot folder ------------------------------------------------------------------------------------------
def test_hot_folder_scores_each_dropped_image_once(tmp_path, tiny_model):
    from anomalens.models.base import create_detector as create

    rng = np.random.default_rng(0)
    normal = [np.full((64, 64, 3), 120, np.uint8) + rng.integers(0, 6, (64, 64, 3), dtype=np.uint8) for _ in range(12)]
    detector = create(tiny_model, image_size=(64, 64)).fit(torch.stack([torch.from_numpy(x).permute(2, 0, 1) for x in normal[:8]]),
                                                            torch.stack([torch.from_numpy(x).permute(2, 0, 1) for x in normal[8:]]))
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    Image.fromarray(normal[0]).save(folder / "a_000.png")  # already there when the watch starts
    watcher = Watcher(detector, str(folder), out, device="cpu")
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        defect = normal[1].copy()
        defect[20:40, 20:40] = 250
        Image.fromarray(normal[2]).save(folder / "a_001.png")
        Image.fromarray(defect).save(folder / "a_002.png")
        # a camera writing slowly: half the bytes, a pause of several polls, then the rest
        data = (folder / "a_001.png").read_bytes()
        with open(folder / "a_003.png", "wb") as slow:
            slow.write(data[: len(data) // 2])
            slow.flush()
            time.sleep(0.8)
            slow.write(data[len(data) // 2:])
        Image.fromarray(normal[3]).save(folder / "a_004.png")
        assert wait_until(lambda: watcher.scored >= 5, 20)
        time.sleep(0.6)  # several more polls: nothing is taken twice
    finally:
        watcher.stop()
        thread.join(30)
    rows = [line.split(",") for line in (out / "frames_00001.csv").read_text().splitlines()[1:]]
    assert sorted(Path(row[-1]).name for row in rows) == [f"a_00{i}.png" for i in range(5)]
    anomalous = {Path(row[-1]).name for row in rows if row[5] == "1"}
    assert anomalous == {"a_002.png"}
    (event,) = [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"]
    assert Path(event["file"]).name == "a_002.png"
    assert Image.open(out / event["overlay"]).size == (64, 64) and (out / event["image"]).is_file()


def test_an_image_model_event_says_where_in_the_frame(tmp_path, tiny_model):
    """The peak frame's defect regions travel with the event, in the pixels of the frame as it arrived (here
    96x128, the model sees 64x64)."""
    from anomalens.models.base import create_detector as create

    rng = np.random.default_rng(1)
    normal = [np.full((96, 128, 3), 120, np.uint8) + rng.integers(0, 6, (96, 128, 3), dtype=np.uint8) for _ in range(4)]
    train = [np.full((64, 64, 3), 120, np.uint8) + rng.integers(0, 6, (64, 64, 3), dtype=np.uint8) for _ in range(12)]
    tensors = torch.stack([torch.from_numpy(x).permute(2, 0, 1) for x in train])
    detector = create(tiny_model, image_size=(64, 64)).fit(tensors[:8], tensors[8:])
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    defect = normal[1].copy()
    defect[30:60, 80:112] = 250  # rows 30-59, columns 80-111 of the camera's 96x128
    for i, image in enumerate([normal[0], defect, normal[2]]):
        Image.fromarray(image).save(folder / f"b_{i:03d}.png")
    watcher = Watcher(detector, str(folder), out, device="cpu")
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        assert wait_until(lambda: watcher.scored >= 3, 20)
    finally:
        watcher.stop()
        thread.join(30)
    (event,) = [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"]
    assert Path(event["file"]).name == "b_001.png" and (event["image_height"], event["image_width"]) == (96, 128)
    top = event["peak_regions"][0]
    # the tiny model pools by 4 of its 64 pixels (6 x 8 of the camera's) and interpolates between pooled cells:
    # the box holds the defect and reaches at most two pooled cells beyond it
    assert 30 - 12 <= top["y"] <= 30 and 60 <= top["y"] + top["height"] <= 60 + 12
    assert 80 - 16 <= top["x"] <= 80 and 112 <= top["x"] + top["width"] <= 112 + 16
    assert 30 <= top["peak_y"] < 60 and 80 <= top["peak_x"] < 112


# ---- sinks against real receivers --------------------------------------------------------------------------
def test_webhook_delivers_once_the_receiver_is_up(tmp_path):
    port = free_port()
    sink = WebhookSink(f"http://127.0.0.1:{port}/events", timeout=1.0)
    for n in range(3):
        sink.send({"type": "anomaly", "id": n})
    time.sleep(1.0)  # the receiver is down: the sink retries with back-off and never blocks send()
    assert sink.failures >= 1 and sink.delivered == 0
    receiver = Receiver(port)
    try:
        assert wait_until(lambda: len(receiver.messages) == 3, 15)
        assert [m["id"] for m in receiver.messages] == [0, 1, 2]
    finally:
        sink.close(2)
        receiver.close()


def test_webhook_queue_is_bounded(tmp_path):
    sink = WebhookSink(f"http://127.0.0.1:{free_port()}/", queue_size=2, timeout=0.5)
    started = time.monotonic()
    for n in range(10):
        sink.send({"id": n})
    assert time.monotonic() - started < 0.5  # never blocks
    assert sink.stats()["queued"] <= 2 and sink.dropped >= 7
    sink.close(0.5)


@pytest.fixture()
def subscriber():
    import paho.mqtt.client as mqtt

    received: list = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"anomalens-test-{os.getpid()}", clean_session=False)
    client.on_message = lambda c, u, message: received.append(message)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.received, client.subscribed = received, subscribed
    yield client
    client.loop_stop()
    client.disconnect()


def test_mqtt_events_arrive_with_qos_1_also_across_a_broker_restart(model, line_video, tmp_path, subscriber):
    detector, _ = model
    port = free_port()
    broker = start_mosquitto(port, tmp_path / "broker")
    try:
        subscriber.connect("127.0.0.1", port)
        subscriber.subscribe("line/events", qos=1)
        subscriber.loop_start()
        assert subscriber.subscribed.wait(10)
        sink = MqttSink(f"127.0.0.1:{port}", "line/events")
        status = Watcher(detector, str(line_video), None, sinks=[sink], device="cpu").run()
        events = [json.loads(m.payload) for m in subscriber.received]
        assert {m["type"] for m in events} == {"anomaly_started", "anomaly"}
        assert sum(m["type"] == "anomaly" for m in events) == status["events"] >= 2
        assert all(m.qos == 1 for m in subscriber.received)

        # the broker restarts while the sink holds a message: it arrives after the reconnect
        sink = MqttSink(f"127.0.0.1:{port}", "line/events")
        assert wait_until(sink.connected.is_set, 10)
        stop(broker)
        sink.send({"type": "anomaly", "id": "while-down"})
        time.sleep(1.0)
        broker = start_mosquitto(port, tmp_path / "broker")
        assert wait_until(lambda: any(b"while-down" in m.payload for m in subscriber.received), 30)
        sink.close(2)
    finally:
        stop(broker)


# ---- a real RTSP stream that drops and comes back -------------------------------------------------------
@pytest.mark.slow
def test_rtsp_stream_loss_is_logged_and_the_watch_reconnects(model, tmp_path):
    detector, _ = model
    video = write_video(tmp_path / "stream.mp4", frames_of(70, 400), 25)  # 16 s at 25 fps (then it ends: another gap)
    port = free_port()
    server = start_rtsp_server(port, video)
    out = tmp_path / "out"
    watcher = Watcher(detector, f"rtsp://127.0.0.1:{port}/live", out, device="cpu")
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        assert wait_until(lambda: watcher.scored >= 20, 30), "no frames from the RTSP server"
        stop(server)
        lost_at, scored_at = watcher.read, watcher.scored
        time.sleep(1.5)
        server = start_rtsp_server(port, video)
        assert wait_until(lambda: watcher.read >= lost_at + 20, 30), "no frames after the server came back"
        assert wait_until(lambda: watcher.scored >= scored_at + 10, 30), "no frames scored after the reconnect"
    finally:
        watcher.stop()
        thread.join(30)
        stop(server)
    lost = [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "source_lost"][0]
    assert lost["reconnected"] and 1.0 <= lost["seconds"] < 5.0
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "stopped" and status["fps_in"] >= 0 and status["frames_scored"] >= scored_at + 10


# ---- the command: SIGTERM mid-event loses nothing -------------------------------------------------------
@pytest.mark.slow
def test_sigterm_closes_the_open_event_and_flushes(model, tmp_path):
    _, folder = model
    # a long stop of the belt from frame 20 on, played in real time
    frames = frames_of(80, 40) + [frames_of(80, 40)[-1]] * 200
    video = write_video(tmp_path / "stopped.mp4", frames, 25)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "anomalens", "watch", "--checkpoint", str(folder), "--source", str(video), "--realtime",
         "--output", str(out), "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = lambda: (out / "events.jsonl").is_file() and "anomaly_started" in (out / "events.jsonl").read_text()  # noqa: E731
        assert wait_until(started, 60), process.stderr.read() if process.poll() is not None else "no event started"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 0, stderr
    (event,) = [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"]
    assert event["closed_by"] == "stop" and event["end_frame"] >= event["start_frame"]
    assert probe_video(out / event["clip"])["codec"] == "h264"
    assert json.loads((out / "status.json").read_text())["state"] == "stopped"
    assert "1 event(s)" in stdout


def test_http_stream_is_read_through_pyav(model, line_video, tmp_path):
    """An http:// source (here a plain web server handing out the file): frames arrive and are scored; when the
    stream ends, the watcher treats it as a loss and reconnects, as for a camera."""
    import functools
    import http.server

    detector, _ = model
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(line_video.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    watcher = Watcher(detector, f"http://127.0.0.1:{server.server_address[1]}/{line_video.name}", tmp_path / "out", device="cpu")
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        assert wait_until(lambda: watcher.read > 300, 60), "the HTTP stream was not read again after it ended"
    finally:
        watcher.stop()
        thread.join(30)
        server.shutdown()
        server.server_close()
    assert watcher.scored > 0 and watcher.source.connections >= 2
    messages = read_jsonl(tmp_path / "out" / "events.jsonl")
    assert any(m["type"] == "source_lost" and m["reason"] == "the stream ended" for m in messages)


# ---- the command's user errors, the UI's source confinement ---------------------------------------------------
def test_watch_help_and_user_errors_exit_2_with_one_line(model, tmp_path, capsys):
    from anomalens.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["watch", "--help"])
    assert exit_info.value.code == 0 and "anomalens watch --checkpoint" in capsys.readouterr().out
    _, run = model
    for flags, expected in [
        (["--source", str(tmp_path / "missing.mp4"), "--output", str(tmp_path / "o")], "source not found"),
        (["--source", str(tmp_path), "--mqtt", "127.0.0.1"], "--mqtt must be HOST:PORT"),
        (["--source", str(tmp_path), "--webhook", "ftp://x"], "--webhook must be an http"),
        (["--source", str(tmp_path)], "nowhere to send events"),
        (["--source", str(tmp_path), "--output", str(tmp_path / "o"), "--close-level", "0.7"], "--close-level"),
    ]:
        assert main(["watch", "--checkpoint", str(run), *flags, "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert expected in err, err


def test_ui_live_sources_are_confined(tmp_path):
    from anomalens.errors import DataError
    from anomalens.ui.common import UISettings
    from anomalens.ui.tabs.live import resolve_source

    (tmp_path / "data" / "cam").mkdir(parents=True)
    settings = UISettings(results_dir=tmp_path / "results", data_roots=[tmp_path / "data"])
    assert resolve_source(settings, "cam", {}) == str((tmp_path / "data" / "cam").resolve())
    allowed = {"ANOMALENS_UI_STREAMS": "rtsp://127.0.0.1:8554/, /dev/video0"}
    assert resolve_source(settings, "rtsp://127.0.0.1:8554/live", allowed) == "rtsp://127.0.0.1:8554/live"
    for text, env in [("../../etc", {}), ("/etc/passwd", allowed), ("rtsp://10.0.0.9/live", allowed),
                      ("rtsp://127.0.0.1:8554/live", {}), ("/dev/video1", allowed), ("", allowed)]:
        with pytest.raises(DataError):
            resolve_source(settings, text, env)


def test_frames_that_cannot_be_scored_in_time_are_dropped_and_counted(model, tmp_path):
    """A camera does not wait: 300 frames played at 300 fps are more than the scorer takes, so the queue stays
    bounded, frames are dropped (and counted), and each scored frame keeps its own number."""
    detector, _ = model
    video = write_video(tmp_path / "fast.mp4", [f for seed, kind in LINE for f in frames_of(seed, 60, kind)], 300)
    out = tmp_path / "out"
    status = Watcher(detector, str(video), out, device="cpu", settings=WatchSettings(realtime=True, queue_size=4)).run()
    assert status["frames_read"] == 300 and status["frames_dropped"] > 0
    assert status["frames_scored"] + status["frames_dropped"] == 300
    numbers = [int(line.split(",")[0]) for line in (out / "frames_00001.csv").read_text().splitlines()[1:]]
    assert len(numbers) == status["frames_scored"] and numbers == sorted(set(numbers)) and numbers[-1] <= 299
    # clips take every decoded frame at its own time, scored or not: they last what the event lasted
    for event in (m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"):
        clip = probe_video(out / event["clip"])
        last = min(299, event["end_frame"] + 3 * 300)  # 3 s after, at most to the end of the video
        assert clip["frames"] >= (last - event["clip_first_frame"] + 1) * 0.9


def _rss_mb() -> float:
    return int(next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file() or sys.platform != "linux", reason="needs Linux's /proc (glibc)")
def test_the_watch_hands_back_frames_freed_on_another_thread():
    """Frames (1 MB) allocated on one thread and freed on another, the last one kept, leave 200 MB of free heap
    that glibc keeps; the watch's once-a-second release hands it back to the system."""
    from anomalens.errors import ConfigError
    from anomalens.live.reader import steady_memory

    release = steady_memory()
    with pytest.raises(ConfigError, match="memory setting"):
        steady_memory("none")
    frames: list[np.ndarray] = []

    def reader() -> None:
        first = np.ones(1 << 20, np.uint8)
        del first  # the first free raises glibc's mmap threshold above a frame
        frames.extend(np.ones(1 << 20, np.uint8) for _ in range(200))  # written: resident

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join()
    before = _rss_mb()
    del frames[:-1]  # freed on this thread; the last frame pins the heap's top
    freed = _rss_mb()
    release()
    released = _rss_mb()
    assert before - freed < 50 < freed - released, (before, freed, released)
