"""A live watch under the faults of a real line: hot folders that reuse names, restart, grow large, receive files
still being written or named in Latin-1; a broker that stalls; a receiver that refuses one message; a stream that
drops with an event open or stalls; settings a hot folder cannot honour; a CSV between bursts; a wall clock that
steps; stream prefixes that a plain text comparison would get wrong.

The model is the tiny image detector (tests/_tiny_detector.py), fitted in milliseconds on flat grey frames with a
little noise; a bright square is the anomaly. Hot folders, the mosquitto broker, the RTSP server and the webhook
receiver are real and run on 127.0.0.1 (tests/_live_parts.py).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _live_parts import (Receiver, as_batch, free_port, read_jsonl, start_mosquitto, start_rtsp_server, stop,
                         wait_until)
from anomalens.data.video_io import probe_video, write_video
from anomalens.errors import ConfigError, DataError
from anomalens.live import sources
from anomalens.live.reader import FrameReader
from anomalens.live.settings import WatchSettings
from anomalens.live.sinks import MqttSink, WebhookSink
from anomalens.live.sources import STATE_FILE, FolderSource, Source, SourceFrame, missing_end
from anomalens.live.watcher import Watcher
from anomalens.models.base import create_detector

SIZE = (64, 64)


def normal_frames(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.full((*SIZE, 3), 120, np.uint8) + rng.integers(0, 6, (*SIZE, 3), dtype=np.uint8) for _ in range(n)]


def with_square(frame: np.ndarray) -> np.ndarray:
    frame = frame.copy()
    frame[20:40, 20:40] = 250
    return frame


def encoded(image: np.ndarray, format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=format)
    return buffer.getvalue()



@pytest.fixture()
def detector(tiny_model):
    frames = normal_frames(0, 12)
    return create_detector(tiny_model, image_size=SIZE).fit(as_batch(frames[:8]), as_batch(frames[8:]))



def csv_rows(out: Path, name: str = "frames_00001.csv") -> list[list[str]]:
    return [line.split(",") for line in (out / name).read_text(encoding="utf-8").splitlines()[1:]]


class Collector:
    """A source's frames on a thread of their own, as the watch's reader takes them."""

    def __init__(self, source: Source) -> None:
        self.source, self.frames = source, []
        self.thread = threading.Thread(target=lambda: self.frames.extend(f for f in source.frames()), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.source.stop()
        self.thread.join(30)


class Running:
    """A watch on a thread, stopped (and joined) on leaving the block."""

    def __init__(self, watcher: Watcher) -> None:
        self.watcher, self.status = watcher, None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        self.status = self.watcher.run()

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self.watcher

    def __exit__(self, *exc) -> None:
        self.watcher.stop()
        self.thread.join(60)


def save_atomically(path: Path | bytes, image: np.ndarray) -> None:
    """As a careful camera writes: a temporary name, then a rename (the watch never sees it half-written)."""
    folder, name = os.path.split(os.fsencode(path))
    temporary = os.path.join(folder, b"." + name + b".tmp")
    Image.fromarray(image).save(temporary, format="PNG")
    os.replace(temporary, os.path.join(folder, name))


# ---- 1. a name used again --------------------------------------------------------------------------------------
def test_a_name_used_again_is_a_new_image(tmp_path):
    """The file scored is moved away and a new image arrives under its name; then one is renamed over it; then it
    is rewritten in place: each time the new image is taken."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    images = normal_frames(1, 4)
    save_atomically(folder / "latest.png", images[0])
    collector = Collector(FolderSource(folder))
    try:
        assert wait_until(lambda: len(collector.frames) == 1, 20)
        shutil.move(folder / "latest.png", tmp_path / "archived.png")  # an archiver takes it away
        time.sleep(1.0)  # several polls without it
        save_atomically(folder / "latest.png", images[1])  # the camera's counter wrapped
        assert wait_until(lambda: len(collector.frames) == 2, 20)
        save_atomically(folder / "latest.png", images[2])  # renamed over the name while it is listed
        assert wait_until(lambda: len(collector.frames) == 3, 20)
        Image.fromarray(images[3]).save(folder / "latest.png", format="PNG")  # rewritten in place
        assert wait_until(lambda: len(collector.frames) == 4, 20)
        time.sleep(1.0)  # several more polls: nothing is taken twice
    finally:
        collector.close()
    assert len(collector.frames) == 4
    for frame, image in zip(collector.frames, images):
        assert np.array_equal(frame.image, image) and Path(frame.file).name == "latest.png"


# ---- 5. a restarted watch --------------------------------------------------------------------------------------
def test_a_restarted_hot_folder_watch_scores_only_new_or_changed_files(detector, tmp_path):
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    images = normal_frames(2, 6)
    for i in range(3):
        save_atomically(folder / f"part_{i:03d}.png", images[i])
    with Running(Watcher(detector, str(folder), out, device="cpu")) as watcher:
        assert wait_until(lambda: watcher.scored == 3, 20)
    state = json.loads((out / STATE_FILE).read_text())
    assert state["folder"] == str(folder.resolve()) and sorted(state["files"]) == [f"part_{i:03d}.png" for i in range(3)]

    (folder / "part_000.png").unlink()  # taken away: the state forgets it
    save_atomically(folder / "part_001.png", images[4])  # changed while the watch was down: scored again
    save_atomically(folder / "part_003.png", images[3])  # new
    with Running(Watcher(detector, str(folder), out, device="cpu")) as watcher:
        assert wait_until(lambda: watcher.scored == 2, 20)
        time.sleep(1.0)  # several more polls: part_002 stays unscored
    assert watcher.scored == 2
    assert sorted(Path(row[-1]).name for row in csv_rows(out, "frames_00002.csv")) == ["part_001.png", "part_003.png"]
    state = json.loads((out / STATE_FILE).read_text())
    assert sorted(state["files"]) == ["part_001.png", "part_002.png", "part_003.png"]
    stat = (folder / "part_001.png").stat()
    assert state["files"]["part_001.png"] == [stat.st_size, stat.st_mtime_ns]


def test_a_state_file_that_cannot_be_read_is_named_and_ignored(detector, tmp_path):
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    out.mkdir()
    (out / STATE_FILE).write_text('{"folder": "x", "files": {"a.png": "big"}}')
    save_atomically(folder / "a.png", normal_frames(3, 1)[0])
    logged: list[str] = []
    with Running(Watcher(detector, str(folder), out, device="cpu", log=logged.append)) as watcher:
        assert wait_until(lambda: watcher.scored == 1, 20)
    assert any(STATE_FILE in line and "'files'" in line for line in logged), logged


# ---- 6. a large folder -----------------------------------------------------------------------------------------
def test_polling_a_large_folder_looks_only_at_files_not_taken(tmp_path, monkeypatch):
    """With every file taken and the folder unchanged, a poll neither lists the folder again nor sorts a name;
    a new file is seen through the folder's modification time."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    data = encoded(normal_frames(4, 1)[0], "PNG")
    for i in range(2000):
        (folder / f"cam1_{i:07d}.png").write_bytes(data)
    stamps = {e.name: (e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder)}
    hour_ago = time.time() - 3600
    os.utime(folder, (hour_ago, hour_ago))  # an old folder time: it is trusted at once
    sorted_names: list[str] = []
    original = sources.natural_key
    monkeypatch.setattr(sources, "natural_key", lambda path: sorted_names.append(path.name) or original(path))
    source = FolderSource(folder, poll=0.05, relist=3600.0)  # only a changed folder is listed again
    source.skip_unchanged(stamps)  # scored by an earlier watch
    collector = Collector(source)
    try:
        assert wait_until(lambda: len(source.taken) == 2000, 30)
        sorted_names.clear()
        polls, listings = source.polls, source.listings
        assert wait_until(lambda: source.polls >= polls + 20, 30)
        assert sorted_names == [] and source.listings == listings and collector.frames == []
        save_atomically(folder / "cam1_9999999.png", normal_frames(5, 1)[0])
        assert wait_until(lambda: len(collector.frames) == 1, 20)
    finally:
        collector.close()
    assert Path(collector.frames[0].file).name == "cam1_9999999.png" and set(sorted_names) == {"cam1_9999999.png"}


# ---- 2. files still being written ------------------------------------------------------------------------------
@pytest.mark.parametrize("format, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_a_preallocated_file_has_no_end_marker_until_it_is_complete(tmp_path, format, suffix):
    data = encoded(normal_frames(6, 1)[0], format)
    path = tmp_path / f"part{suffix}"
    path.write_bytes(data[: len(data) // 2] + b"\0" * (len(data) - len(data) // 2))  # preallocated, half written
    assert "end" in missing_end(str(path), path.stat().st_size)
    path.write_bytes(data)
    assert missing_end(str(path), len(data)) is None
    path.write_bytes(data + b"\0" * 100)  # zero padding after the end marker, as some cameras write
    assert missing_end(str(path), len(data) + 100) is None


def test_a_preallocated_png_is_taken_once_complete_not_while_half_zeros(tmp_path):
    """A copier that preallocates the file and pauses mid-copy for longer than the settle time: the file is not
    scored while half of it is zeros (it decodes), and is scored once, complete, when the copy ends."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    image = normal_frames(7, 1)[0]
    data = encoded(image, "PNG")
    collector = Collector(FolderSource(folder))
    try:
        with open(folder / "part_001.png", "wb") as copy:
            copy.truncate(len(data))
            copy.write(data[: len(data) // 2])
            copy.flush()
            time.sleep(2.0)  # the link stalls: four settle times
            copy.write(data[len(data) // 2:])
        assert wait_until(lambda: len(collector.frames) == 1, 20)
        time.sleep(1.0)
    finally:
        collector.close()
    (frame,) = collector.frames
    assert np.array_equal(frame.image, image)


def test_temporary_names_are_left_alone_and_broken_files_are_reported_once(tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    logged: list[str] = []
    collector = Collector(FolderSource(folder, give_up=1.0, log=logged.append))
    good = encoded(normal_frames(8, 1)[0], "PNG")
    try:
        for name in (".a.png", "b.png.part", "c.png.tmp", "d.png~", "e.png.crdownload"):
            (folder / name).write_bytes(good)
        (folder / "broken.png").write_bytes(b"not an image at all" + good[-12:])  # ends like a PNG, is none
        (folder / "cut.jpg").write_bytes(encoded(normal_frames(9, 1)[0], "JPEG")[:300])  # never finished
        # complete, with data after the end marker (some cameras append theirs): scored once it stays unchanged
        (folder / "trailer.jpg").write_bytes(encoded(normal_frames(10, 1)[0], "JPEG") + b"CAMERA-TRAILER" * 4)
        assert wait_until(lambda: len(logged) == 3, 20)
        os.replace(folder / "b.png.part", folder / "b.png")  # the copy is complete: renamed
        assert wait_until(lambda: len(collector.frames) == 2, 20)
        time.sleep(1.5)  # more polls: nothing is logged again, nothing else is taken
    finally:
        collector.close()
    assert sorted(Path(f.file).name for f in collector.frames) == ["b.png", "trailer.jpg"]
    assert len(logged) == 3 and collector.source.unreadable == 2
    (late,) = [line for line in logged if "trailer.jpg" in line]
    assert "JPEG end marker" in late and "readable: scored" in late
    (broken,) = [line for line in logged if "broken.png" in line]
    (cut,) = [line for line in logged if "cut.jpg" in line]
    assert "not a readable image" in broken and "JPEG end marker" in cut


# ---- 3. a file name that is not UTF-8 --------------------------------------------------------------------------
def test_a_file_name_that_is_not_utf8_is_scored_and_reported_escaped(detector, tmp_path):
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    frames = normal_frames(10, 3)
    save_atomically(folder / "a_000.png", frames[0])
    save_atomically(os.fsencode(folder) + b"/a_001_caf\xe9.png", with_square(frames[1]))  # Latin-1, from a share
    save_atomically(folder / "a_002.png", frames[2])
    with Running(Watcher(detector, str(folder), out, device="cpu")) as watcher:
        assert wait_until(lambda: watcher.scored == 3, 20)
    shown = "a_001_caf\\xe9.png"  # the byte that is not UTF-8 as \xNN: the same in the CSV and the messages
    assert [Path(row[-1]).name for row in csv_rows(out)] == ["a_000.png", shown, "a_002.png"]
    (event,) = [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"]
    assert Path(event["file"]).name == shown and Path(event["peak_file"]).name == shown
    assert json.loads((out / "status.json").read_text())["frames_scored"] == 3


# ---- 4. a broker that stalls -----------------------------------------------------------------------------------
def test_a_stalled_broker_gets_each_message_once(tmp_path):
    """The broker stops answering (SIGSTOP: no reset, the TCP link stays) for longer than the sink waits: the
    sink waits on the message it published instead of publishing copies of it."""
    import paho.mqtt.client as mqtt

    port = free_port()
    broker = start_mosquitto(port, tmp_path / "broker")
    received: list[dict] = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    subscriber.on_message = lambda client, userdata, message: received.append(json.loads(message.payload))
    subscribed = threading.Event()
    subscriber.on_subscribe = lambda *args: subscribed.set()
    sink = None
    try:
        subscriber.connect("127.0.0.1", port)
        subscriber.subscribe("line/events", qos=1)
        subscriber.loop_start()
        assert subscribed.wait(10)
        sink = MqttSink(f"127.0.0.1:{port}", "line/events", timeout=0.5)
        assert wait_until(sink.connected.is_set, 10)
        sink.send({"type": "anomaly", "id": 1, "message_id": "m1"})
        assert wait_until(lambda: len(received) == 1, 10)
        os.kill(broker.pid, signal.SIGSTOP)
        try:
            sink.send({"type": "anomaly", "id": 2, "message_id": "m2"})
            assert wait_until(lambda: sink.failures >= 3, 20)  # it waited (and timed out) three times or more
        finally:
            os.kill(broker.pid, signal.SIGCONT)
        sink.send({"type": "anomaly", "id": 3, "message_id": "m3"})
        assert wait_until(lambda: sink.delivered == 3, 30)
        time.sleep(1.0)  # copies, if any were published, arrive meanwhile
    finally:
        if sink is not None:
            sink.close(2)
        subscriber.loop_stop()
        subscriber.disconnect()
        stop(broker)
    assert [m["message_id"] for m in received] == ["m1", "m2", "m3"]


# ---- 7 and 8. a stream that drops with an event open, and one that stalls ---------------------------------------
def iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.slow
def test_a_stream_that_stalls_closes_the_open_event_during_the_outage(detector, tmp_path):
    """Every frame has the defect, so an event is open when the RTSP server stalls (SIGSTOP: a pulled cable, no
    reset). The event is closed and published while the server is still stopped, ending at the last frame before
    the gap; ``source_lost`` names that frame and the time the frames stopped (not when the 5 s read timeout
    noticed); after the server comes back a new event starts, and no clip spans the outage."""
    rng = np.random.default_rng(11)
    frames = [with_square(np.full((*SIZE, 3), 120, np.uint8) + rng.integers(0, 6, (*SIZE, 3), dtype=np.uint8))
              for _ in range(1000)]
    video = write_video(tmp_path / "defect.mp4", frames, 25)  # 40 s: it does not end during the test
    port = free_port()
    server = start_rtsp_server(port, video)
    out = tmp_path / "out"
    try:
        running = Running(Watcher(detector, f"rtsp://127.0.0.1:{port}/live", out, device="cpu"))
        with running as watcher:
            assert wait_until(lambda: watcher.scored >= 25, 30), "no frames from the RTSP server"
            os.kill(server.pid, signal.SIGSTOP)
            stalled_at = time.time()
            try:
                closed = lambda: [m for m in read_jsonl(out / "events.jsonl") if m["type"] == "anomaly"]  # noqa: E731
                assert wait_until(closed, 30), "the open event was not closed during the outage"
            finally:
                os.kill(server.pid, signal.SIGCONT)
            read_before = watcher.read
            assert wait_until(lambda: watcher.read >= read_before + 25 and watcher.event_count >= 2, 60)
    finally:
        stop(server)
    messages = read_jsonl(out / "events.jsonl")
    lost = [m for m in messages if m["type"] == "source_lost"][0]
    first, second = [m for m in messages if m["type"] == "anomaly"][:2]
    assert first["closed_by"] == "source_lost" and first["end_frame"] <= lost["after_frame"] < second["start_frame"]
    if running.status["frames_dropped"] == 0:  # the last frame before the gap was scored: the event ends there
        assert first["end_frame"] == lost["after_frame"] and second["start_frame"] == lost["after_frame"] + 1
    assert lost["reconnected"] and abs(iso(lost["lost_at"]) - stalled_at) < 1.5  # the read timeout is 5 s
    assert first["ended_at"] == lost["lost_at"]
    assert probe_video(out / first["clip"])["frames"] <= lost["after_frame"] - first["clip_first_frame"] + 1
    assert len({m["message_id"] for m in messages}) == len(messages)


# ---- 9. a receiver that refuses a message ----------------------------------------------------------------------
def test_a_message_the_webhook_refuses_is_dropped_and_the_rest_go_on(tmp_path):
    """A 400 for message 2 is for good (logged once, counted, dropped); a 429 for message 4 and a 401 for message 5
    (expired credentials: the receiver's fault, not the message's) are retried."""
    port = free_port()
    asked: list[int] = []

    def answer(message: dict) -> int:
        if message["id"] == 2:
            return 400
        if message["id"] in (4, 5) and message["id"] not in asked:
            asked.append(message["id"])
            return 429 if message["id"] == 4 else 401
        return 204

    receiver = Receiver(port, answer=answer)
    logged: list[str] = []
    sink = WebhookSink(f"http://127.0.0.1:{port}/events", timeout=2.0, log=logged.append)
    try:
        for n in range(1, 6):
            sink.send({"type": "anomaly", "id": n, "message_id": f"m{n}"})
        assert wait_until(lambda: sink.delivered == 4, 30)
    finally:
        sink.close(2)
        receiver.close()
    assert [m["id"] for m in receiver.messages] == [1, 3, 4, 5]
    assert sink.stats()["rejected"] == 1 and sink.stats()["queued"] == 0
    (refused,) = [line for line in logged if "dropped" in line]
    assert "m2" in refused and "HTTP 400" in refused


# ---- 10. settings a hot folder cannot honour -------------------------------------------------------------------
def test_event_settings_a_hot_folder_cannot_honour_are_refused(detector, tmp_path, capsys):
    folder = tmp_path / "incoming"
    folder.mkdir()
    with pytest.raises(ConfigError, match="min_length 2"):
        Watcher(detector, str(folder), tmp_path / "out", device="cpu", settings=WatchSettings(min_length=2))
    with pytest.raises(ConfigError, match="close_after 1"):
        Watcher(detector, str(folder), tmp_path / "out", device="cpu", settings=WatchSettings(close_after=1.0))
    from anomalens.cli import main

    run = detector.save(tmp_path / "run")
    code = main(["watch", "--checkpoint", str(run), "--source", str(folder), "--output", str(tmp_path / "out"),
                 "--device", "cpu", "--min-length", "2"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "--min-length 2" in err and "hot folder" in err, err


# ---- 11. the CSV between bursts --------------------------------------------------------------------------------
def test_the_per_frame_csv_reaches_the_disk_without_a_later_row(detector, tmp_path):
    folder, out = tmp_path / "incoming", tmp_path / "out"
    folder.mkdir()
    with Running(Watcher(detector, str(folder), out, device="cpu")) as watcher:
        images = normal_frames(12, 3)
        images[2] = with_square(images[2])  # one anomalous part: its messages carry ids
        for i, image in enumerate(images):
            save_atomically(folder / f"part_{i:03d}.png", image)
        assert wait_until(lambda: watcher.scored == 3, 20)
        assert wait_until(lambda: (out / "frames_00001.csv").is_file() and len(csv_rows(out)) == 3, 10)
    messages = read_jsonl(out / "events.jsonl")
    assert {m["type"] for m in messages} >= {"anomaly_started", "anomaly"}
    assert all(len(m["message_id"]) == 32 for m in messages) and len({m["message_id"] for m in messages}) == len(messages)


# ---- monotonic ages --------------------------------------------------------------------------------------------
class _SteppedClock(Source):
    """A camera whose frames are stamped by a wall clock that just stepped an hour back."""

    kind, live = "stream", True

    def __init__(self) -> None:
        super().__init__("stepped clock")

    def frames(self):
        for image in normal_frames(13, 3):
            yield SourceFrame(image, time.time() - 3600)


def test_a_wall_clock_step_does_not_make_frames_too_late():
    reader = FrameReader(_SteppedClock(), lambda image: torch.from_numpy(image), queue_size=4, max_latency=1.0)
    reader.run()
    frames, ended, lost = reader.take(4)
    assert len(frames) == 3 and reader.too_late == 0


# ---- the UI's stream prefixes ----------------------------------------------------------------------------------
def test_ui_stream_prefixes_are_compared_parsed(tmp_path):
    from anomalens.ui.common import UISettings
    from anomalens.ui.tabs.live import resolve_source

    settings = UISettings(results_dir=tmp_path / "results", data_roots=[tmp_path])
    allowed = {"ANOMALENS_UI_STREAMS": "http://cam.local, rtsp://127.0.0.1:8554/cams, /dev/video0"}
    for text in ["http://cam.local/video.mjpg", "http://cam.local:80/x", "HTTP://CAM.LOCAL/x",
                 "rtsp://127.0.0.1:8554/cams/line3", "rtsp://user:pw@127.0.0.1:8554/cams/a", "/dev/video0"]:
        assert resolve_source(settings, text, allowed) == text
    for text in ["http://cam.local@evil/x", "http://cam.local.evil/", "http://cam.local:8080/", "https://cam.local/",
                 "http://cam.local\\@evil/", "http://cam.local#@evil/", "rtsp://127.0.0.1:8554/camsX",
                 "rtsp://127.0.0.1:8554/cams/../secret", "rtsp://127.0.0.1:8554/cams/%2e%2e/secret",
                 "rtsp://127.0.0.1:8555/cams/a", "/dev/video01", "http://cam.local:abc/"]:
        with pytest.raises(DataError, match="not allowed"):
            resolve_source(settings, text, allowed)
