"""One policy for a file's broken timestamps (:class:`~anomalens.data.video_io.FrameTimer`): a frame keeps its own
timestamp when it is later than the last one kept, any other is a frame period after the frame before, and a file
without timestamps stays at frame / fps. analyze-video (``VideoClip.frame_times``, after its pass) and a live watch
on the file (``VideoFileSource``, frame by frame) give every frame the same time.

The real file is a variable-rate Matroska file of tests/test_video_timing.py (bursts of three frames 0.1 s apart,
stating 10 fps) whose frame 15 (at 4.0 s) is stamped with frame 14's time, as a muxer that repeats a timestamp
does; Matroska accepts the repeat, so the decoder hands it on."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from anomalens.data.video_io import FrameTimer, VideoClip, _Source, open_clip
from anomalens.live import sources
from anomalens.live.sources import VideoFileSource
from anomalens.progress import Reporter
from anomalens.workflows.predict import analyze_video
from test_video_timing import NATIVE, RED, SIZE, TIMES, detector, grey_frames  # noqa: F401 - detector: a fixture

REPEATED = 15  # the frame stamped with the time of the frame before it


def test_only_the_frames_with_broken_timestamps_are_placed_a_period_after_the_one_before():
    def timed(stamps: list[float | None], fps: float = 4) -> list[float | None]:
        timer = FrameTimer(fps)
        return [timer(stamp) for stamp in stamps]

    # one missing in the middle of a variable rate: the frames around it keep their own times
    assert timed([0.0, 0.25, 1.0, None, 2.0, 2.125]) == [0.0, 0.25, 1.0, 1.25, 2.0, 2.125]
    # a repeated timestamp and one that steps back: each a period after the frame before, the rest their own
    assert timed([0.0, 1.0, 1.0, 0.5, 3.0]) == [0.0, 1.0, 1.25, 1.5, 3.0]
    # a guess that the next real time falls behind (a burst): the real one a tick after the guess, then its own
    burst = timed([0.0, 0.125, None, 0.25, 0.375, 1.0])
    assert burst[:3] == [0.0, 0.125, 0.375] and 0.375 < burst[3] < burst[4] < 0.3751 and burst[5] == 1.0
    # none at all: frame / fps (None), for the whole pass too
    timer = FrameTimer(4)
    assert [timer(None) for _ in range(5)] == [None] * 5 and timer.times() is None
    # the first frames without one: at frame / fps, and the first timestamped frame a period after them
    timer = FrameTimer(4)
    assert [timer(stamp) for stamp in (None, None, 0.0, 0.25, 1.0)] == [None, None, 0.5, 0.75, 1.5]
    assert timer.times().tolist() == [0.0, 0.25, 0.5, 0.75, 1.5] and timer.times(3).tolist() == [0.0, 0.25, 0.5]
    assert timer.times(2) is None  # a segment that ends before the first timestamp: frame / fps


class Stamped(_Source):
    """Stands in for the decoder of a file whose frames carry these timestamps (seconds; None: none)."""

    def __init__(self, stamps: list[float | None], fps: float) -> None:
        self.stamps, self.stated_fps = stamps, fps
        self.frame_size, self.num_frames = (4, 4), len(stamps)

    def frames(self, warn):
        for stamp in self.stamps:
            yield np.zeros((4, 4, 3), np.uint8), stamp


GAP = [0.0, 0.1, 0.5, None, 1.5, 1.6, 2.0, 2.1]  # a variable rate, frame 3 without a timestamp
CASES = {
    "gap in the middle": (GAP, [0.0, 0.1, 0.5, 0.6, 1.5, 1.6, 2.0, 2.1]),
    "all missing": ([None] * 8, None),
    "first missing": ([None, *[t - 0.1 for t in GAP[1:3]], None, *[t - 0.1 for t in GAP[4:]]],
                      [0.0, 0.1, 0.5, 0.6, 1.5, 1.6, 2.0, 2.1]),
}


@pytest.mark.parametrize("case", CASES)
def test_analyze_video_and_the_watch_time_the_frames_alike(case, monkeypatch):
    stamps, expected = CASES[case]

    def clip(path, preprocessing=NATIVE):
        return VideoClip(path, preprocessing, _source=Stamped(stamps, fps=10))

    analyzed = clip(Path("stand-in.mkv")).frame_times()
    monkeypatch.setattr(sources, "open_clip", clip)
    watched = [frame.time for frame in VideoFileSource(Path("stand-in.mkv")).frames()]
    if expected is None:
        assert analyzed is None and watched == [None] * len(stamps)
        return
    np.testing.assert_allclose(analyzed, expected, atol=1e-9)
    assert analyzed.tolist() == [i / 10 if t is None else t for i, t in enumerate(watched)]  # bit for bit


def write_stamped(path: Path, frames: list[np.ndarray], stamps: list[float]) -> Path:
    """Frames encoded at their true ``TIMES`` (no B-frames: a packet per frame, in order), muxed with ``stamps``."""
    clock = Fraction(1, 1000)
    muxed = {round(t * 1000): round(s * 1000) for t, s in zip(TIMES, stamps)}
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = SIZE[1], SIZE[0], "yuv420p"
        stream.options = {"threads": "1", "crf": "10", "bf": "0"}
        stream.codec_context.time_base = clock

        def mux(packets) -> None:
            for packet in packets:
                if packet.pts is not None:
                    packet.pts = packet.dts = muxed[packet.pts]
                output.mux(packet)

        for frame, seconds in zip(frames, TIMES):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = round(seconds * 1000), clock
            mux(stream.encode(video_frame))
        mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def repeated(tmp_path_factory) -> Path:
    stamps = list(TIMES)
    stamps[REPEATED] = TIMES[REPEATED - 1]
    path = write_stamped(tmp_path_factory.mktemp("stamps") / "repeated.mkv", grey_frames(len(TIMES), 1, RED), stamps)
    with av.open(str(path)) as container:  # the file holds the repeat
        assert [frame.pts for frame in container.decode(video=0)][REPEATED - 1 : REPEATED + 1] == [3200, 3200]
    return path


def test_a_repeated_timestamp_costs_a_variable_rate_file_that_frame_s_time_only(repeated, detector, tmp_path):
    expected = list(TIMES)
    expected[REPEATED] = TIMES[REPEATED - 1] + 0.1  # a period of the stated 10 fps after the frame before
    analyzed = open_clip(repeated, NATIVE).frame_times()
    watched = [frame.time for frame in VideoFileSource(repeated).frames()]
    np.testing.assert_allclose(analyzed, expected, atol=1e-9)
    assert analyzed.tolist() == watched
    # analyze-video times its outputs by them, and says that the rate is variable
    lines: list[str] = []
    analysis = analyze_video(detector, repeated, tmp_path / "out", device="cpu",
                             reporter=Reporter(show_tqdm=False, callback=lambda message, *_: lines.append(message)))
    rows = list(csv.DictReader(open(analysis.scores_csv)))
    assert [float(row["time"]) for row in rows] == [round(t, 4) for t in expected]
    assert any("variable frame rate" in line for line in lines)
    # and that one frame's timestamp was repaired: once, naming the clip and the count
    repairs = [line for line in lines if "broken timestamps" in line]
    assert repairs == [f"warning: {repeated.stem}: broken timestamps: 1 frame without a usable timestamp was placed "
                       "a frame period after the one before"]
    assert open_clip(repeated, NATIVE).timestamp_repairs() is None  # before a pass


def timed(stamps: list[float | None], fps: float) -> list[float | None]:
    timer = FrameTimer(fps)
    return [timer(stamp) for stamp in stamps]


def test_timestamps_that_restart_start_a_new_clock():
    # two recordings joined (``cat a.ts b.ts``): the second's clock starts again at 0
    first, second = [i / 25 for i in range(100)], [i / 25 for i in range(250)]
    times = np.asarray(timed(first + second, 25))
    assert np.all(np.diff(times) > 0)
    np.testing.assert_allclose(times[:100], first, atol=1e-9)
    np.testing.assert_allclose(np.diff(times[99:]), 0.04, atol=1e-9)  # the joined frame a period on, then its clock
    assert abs(times[-1] + 1 / 25 - 350 / 25) < 1 / 25
    # a variable rate after the restart keeps its own spacing
    np.testing.assert_allclose(timed([1.0, 1.1, 1.2, 1.3, 0.0, 0.5, 0.6, 1.5], 10),
                               [0.0, 0.1, 0.2, 0.3, 0.4, 0.9, 1.0, 1.9], atol=1e-9)
    # a step back of a second or less is still one broken timestamp
    assert timed([0.0, 1.0, 1.0, 0.5, 3.0], 4) == [0.0, 1.0, 1.25, 1.5, 3.0]


def test_one_timestamp_far_off_costs_that_frame_only():
    real = [i / 10 for i in range(20)]
    stamps = list(real)
    stamps[5] = 1e6  # one corrupted timestamp far in the future
    timer = FrameTimer(10)
    watched = [timer(stamp) for stamp in stamps]
    assert watched[5] == 1e6  # the watch cannot know yet: only that frame is wrong
    np.testing.assert_allclose(watched[:5] + watched[6:], real[:5] + real[6:], atol=1e-9)
    np.testing.assert_allclose(timer.times(), real, atol=1e-9)  # the pass places it a period after the one before
    clip = VideoClip(Path("stand-in.mkv"), NATIVE, _source=Stamped(stamps, fps=10))
    assert clip.frame_times() is None  # evenly timed again: t / fps
    # one far in the past: the frames after it go on on the old clock
    stamps = [10 + t for t in real]
    stamps[5] = 0.0
    np.testing.assert_allclose(timed(stamps, 10), real, atol=1e-9)


def test_a_real_gap_is_kept():
    assert timed([0.0, 0.1, 0.2, 5.0, 5.1], 10) == [0.0, 0.1, 0.2, 5.0, 5.1]  # a camera that paused
    assert timed([0.0, 0.1, 0.2, 5.0, None, 5.2], 10) == pytest.approx([0.0, 0.1, 0.2, 5.0, 5.1, 5.2])


def test_joined_transport_streams_are_timed_as_one(tmp_path):
    """Two MPEG-TS recordings joined byte for byte: the decoder's timestamps restart at the second's start."""

    def write(path: Path, count: int, base: int) -> bytes:
        with av.open(str(path), "w", format="mpegts") as output:
            stream = output.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            stream.options = {"threads": "1", "bf": "0"}
            for k in range(count):
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (base + k) % 256, np.uint8), format="rgb24")
                frame.pts = k
                for packet in stream.encode(frame):
                    output.mux(packet)
            for packet in stream.encode(None):
                output.mux(packet)
        return path.read_bytes()

    joined = tmp_path / "joined.ts"
    joined.write_bytes(write(tmp_path / "a.ts", 100, 0) + write(tmp_path / "b.ts", 250, 100))
    with av.open(str(joined)) as container:  # the decoder hands on the restart
        pts = [frame.pts for frame in container.decode(video=0)]
    assert len(pts) == 350 and pts[100] < pts[99]
    clip = open_clip(joined, NATIVE)
    times = [seconds for _, seconds in clip.iter_timed()]
    assert np.all(np.diff(times) > 0) and abs(times[-1] - 349 / 25) < 1 / 25
    assert clip.frame_times() is None  # evenly timed: t / fps, as one recording
    assert clip.timestamp_repairs() == (1, 1)  # but the restart is counted: the joined frame a period on


def counted(stamps: list[float | None], fps: float) -> tuple[int, int]:
    timer = FrameTimer(fps)
    for stamp in stamps:
        timer(stamp)
    return timer.repaired, timer.restarts


def test_the_timer_counts_the_frames_it_repaired_and_the_clocks_it_started():
    real = [i / 10 for i in range(20)]
    assert counted(real, 10) == (0, 0)  # nothing broken
    assert counted([0.0, 0.1, 0.5, None, 1.5, 1.6], 10) == (1, 0)  # a gap: one guessed
    assert counted([0.0, 1.0, 1.0, 0.5, 3.0], 4) == (2, 0)  # a repeat and a short step back
    # a guess that the next real times fall behind (a burst): the guess; the real ones moved a tick after it keep
    # their timestamps to 11 microseconds and are not counted
    assert counted([0.0, 0.125, None, 0.25, 0.375, 1.0], 4) == (1, 0)
    assert counted([0.0, 0.1, 0.2, 5.0, 5.1], 10) == (0, 0)  # a real pause is kept
    assert counted([None, None, 0.2, 0.3], 10) == (2, 0)  # the first two had no timestamp: at t / fps
    # a bad stamp far back, then a repeat of the old clock's last: the old clock resumes (it had not, and every later
    # frame moved about 8 s on a clock that began at the bad stamp)
    timer = FrameTimer(10)
    placed = [timer(stamp) for stamp in (10.0, 10.1, 10.2, 2.0, 10.2, 10.3, 10.4, 10.5, 10.6)]
    assert (timer.repaired, timer.restarts) == (2, 0)
    assert placed[-1] == pytest.approx(0.6) and placed[-2] == pytest.approx(0.5)
    assert counted([*real, *real], 10) == (1, 1)  # a restart: the joined frame a period on, then its own clock
    assert counted([1.0, 1.1, 1.2, 1.3, 0.0, 0.5, 0.6, 1.5], 10) == (1, 1)
    spike = list(real)
    spike[5] = 1e6  # one far in the future: that frame only, no clock
    assert counted(spike, 10) == (1, 0)
    past = [10 + t for t in real]
    past[5] = 0.0  # one far in the past, the old clock resumed after it: that frame only, no clock
    assert counted(past, 10) == (1, 0)
    assert counted([None] * 8, 10) == (0, 0)  # no timestamps at all: frame / fps, nothing repaired
    assert counted([None, None, 0.0, 0.1], 10) == (2, 0)  # untimed frames before the first timestamp: at t / fps
    # the clip's counts after a full pass (None before one)
    clip = VideoClip(Path("stand-in.mkv"), NATIVE, _source=Stamped(spike, fps=10))
    assert clip.timestamp_repairs() is None and clip.timestamp_note() is None
    clip.frame_times()
    assert clip.timestamp_repairs() == (1, 0)
    assert clip.timestamp_note() == "1 frame without a usable timestamp was placed a frame period after the one before"
    assert FrameTimer.describe(3, 2) == ("3 frames without a usable timestamp were placed a frame period after the one "
                                         "before; 2 new clocks (joined recordings)")


def test_the_watch_on_a_file_tells_what_it_repaired_when_the_file_ends(monkeypatch):
    def clip(path, preprocessing=NATIVE):
        return VideoClip(path, preprocessing, _source=Stamped(GAP, fps=10))

    monkeypatch.setattr(sources, "open_clip", clip)
    lines: list[str] = []
    source = VideoFileSource(Path("stand-in.mkv"), log=lines.append)
    assert source.repaired is None and source.restarts is None
    frames = source.frames()
    next(frames)
    assert lines == []  # not before the file ends
    list(frames)
    assert (source.repaired, source.restarts) == (1, 0)
    assert lines == ["warning: stand-in.mkv: broken timestamps: 1 frame without a usable timestamp was placed a frame "
                     "period after the one before"]
    # a file with nothing broken says nothing
    monkeypatch.setattr(sources, "open_clip", lambda path, preprocessing=NATIVE: VideoClip(
        path, preprocessing, _source=Stamped([0.0, 0.1, 0.5, 0.6], fps=10)))
    lines.clear()
    source = VideoFileSource(Path("stand-in.mkv"), log=lines.append)
    list(source.frames())
    assert (source.repaired, source.restarts) == (0, 0) and lines == []


def test_a_watch_opened_on_a_file_passes_its_log_to_the_file_source(repeated):
    # open_source is how the watcher opens a file: the repair warning must reach the watch's own log
    from anomalens.live.sources import open_source

    lines: list[str] = []
    source = open_source(str(repeated), log=lines.append)
    assert sum(1 for _ in source.frames()) == len(TIMES)
    assert len(lines) == 1 and "repeated.mkv" in lines[0] and "1 frame" in lines[0]
