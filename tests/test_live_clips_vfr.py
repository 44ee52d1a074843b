"""Event clips of frames with their own times (a variable-frame-rate file): the clip's extent follows seconds, not
frame counts at the stated rate. Frames 0..4 one a second, a burst of ten (5..14) within 0.1 s, then one a second
again; every frame is a flat grey of ``6 * index`` so that the clip's frames can be told apart after H.264."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from anomalens.live.clips import ClipWriter

# frame number -> its time: 0..4 at 1 fps, 5..14 within 0.09 s, then 15.. at 1 fps from 6 s
TIMES = [float(i) for i in range(5)] + [5 + 0.01 * k for k in range(10)] + [6.0 + k for k in range(25)]


def image(index: int) -> np.ndarray:
    return np.full((48, 64, 3), 6 * index, np.uint8)


def feed(writer: ClipWriter, calls: dict[int, list], timed: bool = True, times=TIMES) -> None:
    """Every frame as the reader gives it; after frame ``k``, the scorer's ``calls[k]`` (``(method, args)``)."""
    for index, seconds in enumerate(times):
        writer.add(index, image(index), seconds if timed else None)
        time.sleep(0.005)
        for method, *args in calls.get(index, []):
            getattr(writer, method)(*args)
    writer.close()


def read_clip(path: Path) -> tuple[list[int], list[float]]:
    """The frame numbers (by their grey) and times of a clip."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        indices = [round(float(f.to_ndarray(format="rgb24").mean()) / 6) for f in frames]
        return indices, [round(float(f.time), 4) for f in frames]


def new_writer(**kw) -> ClipWriter:
    # stated 5 fps: 2 s are 10 frames; nothing left out
    return ClipWriter(5, before=kw.get("before", 2), after=kw.get("after", 2), max_seconds=kw.get("max_seconds", 60),
                      lead=5, queue_seconds=100)


@pytest.mark.parametrize("end_after", [17, 18], ids=["end-found-by-writer", "end-found-at-once"])
def test_a_timed_clip_spans_seconds_before_and_after(tmp_path, end_after):
    """Event at frames 15 (6 s) .. 16 (7 s): 2 s before are frames 4 (4 s) .. 14, the burst included (not the 10
    frames 5..14 of the stated rate); 2 s after end at frame 18 (9 s), not 26 (10 frames). The end is found by the
    writer where the reader had not yet given frame 18, and at once where it had."""
    writer, path = new_writer(), tmp_path / "event.mp4"
    calls: dict[int, list] = {17: [("start", 1, path, 15)]}
    calls.setdefault(end_after, []).append(("end", 1, 16))
    feed(writer, calls)
    indices, times = read_clip(path)
    assert indices == list(range(4, 19))
    np.testing.assert_allclose(times, [t - 4.0 for t in TIMES[4:19]], atol=1e-4)
    assert writer.stats()["clips_written"] == 1 and writer.stats()["clips_open"] == 0


def test_start_returns_the_first_frame_by_seconds(tmp_path):
    """The clip's first frame the scorer is told (``clip_first_frame``): frame 4, 2 s before frame 15."""
    writer = new_writer()
    got = []
    for index, seconds in enumerate(TIMES[:20]):
        writer.add(index, image(index), seconds)
        time.sleep(0.005)
        if index == 17:
            got.append(writer.start(1, tmp_path / "e.mp4", 15))
            writer.end(1, 15)
    writer.close()
    assert got == [(tmp_path / "e.mp4", 4)]


def test_an_event_in_the_burst_takes_the_seconds_before_it(tmp_path):
    """Event at frames 12 (5.07 s) .. 13 (5.08 s), 1 s before and after: frame 4 (4 s) is 1.07 s before, so the
    clip starts at frame 5 (5 s); the first frame 1 s or more past 5.08 s is frame 16 (7 s), frame 15 (6 s) is not."""
    writer, path = new_writer(before=1, after=1), tmp_path / "burst.mp4"
    feed(writer, {16: [("start", 1, path, 12), ("end", 1, 13)]})
    indices, times = read_clip(path)
    assert indices == list(range(5, 17))
    np.testing.assert_allclose(times, [t - 5.0 for t in TIMES[5:17]], atol=1e-4)


def test_a_timed_clip_is_at_most_max_seconds_of_its_frames_time(tmp_path):
    """max_seconds 10: the clip from frame 4 (4 s) holds frames up to 13 s (frame 22), though 10 s at the stated
    5 fps would be 50 frames."""
    writer, path = new_writer(max_seconds=10), tmp_path / "long.mp4"
    feed(writer, {17: [("start", 1, path, 15)], 36: [("end", 1, 35)]})
    indices, times = read_clip(path)
    assert indices == list(range(4, 23))
    assert times[-1] == pytest.approx(9.0, abs=1e-4)


def test_frames_without_times_keep_frame_counts(tmp_path):
    """The same frames without times: 10 frames (2 s at the stated 5 fps) before frame 15, 10 after frame 16, as
    before frames could carry times; and evenly timed frames (``index / fps``) make the very same clip."""
    even = [i / 5 for i in range(len(TIMES))]
    for timed, name in ((False, "untimed.mp4"), (True, "even.mp4")):
        writer, path = new_writer(), tmp_path / name
        got = []
        writer_start = writer.start

        def start(*args, _start=writer_start, _got=got):
            _got.append(_start(*args))

        writer.start = start  # type: ignore[method-assign]
        feed(writer, {17: [("start", 1, path, 15)], 20: [("end", 1, 16)]}, timed=timed, times=even)
        indices, times = read_clip(path)
        assert got == [(path, 5)]
        assert indices == list(range(5, 27))
        np.testing.assert_allclose(times, [(i - 5) / 5 for i in range(5, 27)], atol=1e-4)


def test_whether_an_event_joins_the_clip_before_does_not_depend_on_the_writer_being_behind(tmp_path, monkeypatch):
    """Event 1 at 2.0-3.0 s ends (1 s after: 4.0 s); event 2 at 6.0 s starts its own clip at 5.0 s. A writer thread
    slowed down has not reached 4.0 s when event 2 starts: the first clip's end is settled from the reader's times
    then, so event 2 still gets a clip of its own (it had joined the first, which then ran on through frames that
    belonged to neither event)."""
    import anomalens.live.clips as clips

    real_shrink = clips.shrink
    monkeypatch.setattr(clips, "shrink", lambda image, width: (time.sleep(0.03), real_shrink(image, width))[1])
    writer = ClipWriter(10, before=1, after=1, max_seconds=60, lead=5, queue_seconds=100)
    first, second = tmp_path / "e1.mp4", tmp_path / "e2.mp4"
    calls = {25: [("start", 1, first, 20)], 35: [("end", 1, 30)], 65: [("start", 2, second, 60)], 75: [("end", 2, 70)]}
    started = []
    for index in range(100):
        writer.add(index, np.full((48, 64, 3), 2 * index, np.uint8), index / 10)
        for method, *args in calls.get(index, []):
            result = getattr(writer, method)(*args)
            if method == "start":
                started.append(result[0])
    writer.close()
    assert started == [first, second]

    def frames_of(path: Path) -> list[int]:
        with av.open(str(path)) as container:
            return [round(float(f.to_ndarray(format="rgb24").mean()) / 2) for f in container.decode(video=0)]

    # greys 2 apart: H.264 may move one by a level, so each clip is told by its length and ends
    for path, (start, end) in ((first, (10, 40)), (second, (50, 80))):
        found = frames_of(path)
        assert len(found) == end - start + 1 and abs(found[0] - start) <= 1 and abs(found[-1] - end) <= 1


def test_a_real_rate_far_above_the_stated_one_still_gets_the_whole_clip(tmp_path):
    """Stated 5 fps, frames at 50 fps: the event at 2.0-5.0 s keeps its 1 s after (to 6.0 s); a cap of a few times
    the stated rate's frames had cut the clip at 4.66 s, before the event's end."""
    times = [i / 50 for i in range(400)]
    writer = ClipWriter(5, before=1, after=1, max_seconds=10, lead=5, queue_seconds=100)
    path = tmp_path / "event.mp4"
    for index, seconds in enumerate(times):
        writer.add(index, image(index % 40), seconds)
        if index == 110:
            writer.start(1, path, 100)
        if index == 260:
            writer.end(1, 250)
    writer.close()
    _, clip_times = read_clip(path)
    # the event's 3 s and the 1 s after it at least (the 1 s before reaches back as far as the ring holds frames)
    assert clip_times[-1] - clip_times[0] >= 4.0 - 0.05
