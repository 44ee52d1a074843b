"""Event clips of a live watch: every decoded frame goes through a ring of the last few seconds, and each event's
clip (H.264, from ``before`` seconds ahead of its start to ``after`` seconds past its end) is encoded by ONE
writer thread as the stream goes on.

The reader hands frames over with :meth:`ClipWriter.add` (never blocks: when the writer is behind, the frame is
left out of the clips and counted), the scorer says when an event starts and where it ends. Each frame keeps its
source frame number as its timestamp (at the stream's rate), or, from a file with its own frame times (a variable
frame rate), that time from the clip's first frame, so a clip plays in real time even where frames were left out
and a burst of frames is not squeezed to the stated rate. Where the frames carry their own times, a clip's extent
follows them too: from the frames within ``before`` seconds of its event's first frame (as far as the ring holds
them) to the first frame ``after`` seconds or more past its last, at most ``max_seconds`` of the frames' time;
without them, all three are frame counts at the stated rate. Memory is bounded: the ring, a queue of ``2 s`` of
frames, and at most two encoders (an event soon after another joins its clip; libx264 on a single thread, so the
writer never takes more than one core).

>>> writer = ClipWriter(fps=25, before=3, after=3, max_seconds=60)   # doctest: +SKIP
>>> writer.add(index, frame, seconds)                               # from the reader, every frame   # doctest: +SKIP
>>> writer.start(7, Path("events/event_00007.mp4"), first_frame)    # the scorer announces an event  # doctest: +SKIP
>>> writer.end(7, last_frame)                                       # ... and closes it              # doctest: +SKIP
>>> writer.cut(last_frame)                     # the stream dropped: no clip runs on across the outage  # doctest: +SKIP
>>> writer.close()                                                  # the watch ends: every clip is written  # doctest: +SKIP
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from anomalens.data.video_io import TIMED_CLOCK, VideoWriter

CLIP_CRF, CLIP_PRESET = 23, "veryfast"  # evidence, not archive quality: small files, cheap to encode
QUEUE_SECONDS = 2.0  # frames waiting for the writer; beyond that new frames are left out of the clips
# The ring is counted in frames at the stated rate (``before`` seconds of them, plus the lead). Frames with their own
# times may come faster than that rate for a while (a burst of a variable-rate file), so once such frames come the
# ring holds this many times the ``before`` frames (still a bound; a burst denser than that over the whole ``before``
# seconds starts its clip later, at the oldest frame the ring still holds)
RING_BURST = 3
# A clip on the frames' own times ends by max_seconds of those times; this many times its frames at the stated rate
# only bound one whose frames lose their times on the way (a real rate 20x the stated one still gets its whole clip)
TIMED_CAP = 20
_EPS = 1e-6  # seconds: frame times compared with ``before``/``after``/``max_seconds`` within this


def _first_at(times: dict[int, float], seconds: float, from_frame: int = 0) -> int | None:
    """The first frame from ``from_frame`` on whose time (``times``: frame number -> seconds) is ``seconds`` or
    later; None where the reader has given none yet."""
    return min((i for i, t in times.items() if i >= from_frame and t >= seconds), default=None)


@dataclass
class _Clip:
    path: Path
    first: int  # source frame number of the clip's first frame (its timestamp 0)
    last: int  # the last frame it takes (the cap while its event is open, then the event's end + after)
    owner: int  # the event whose end sets ``last`` (the latest one that joined the clip)
    writer: VideoWriter | None = None
    # the source's time of frame ``first`` when the clip is written on the frames' own times (None: frame numbers)
    zero: float | None = None
    written: int = -1  # the last frame number written
    done: bool = False
    # the extent by the frames' own times (its event's first frame had one): the time of frame ``first``, else None
    t0: float | None = None
    cap: int = 0  # the latest ``last`` may be (``first + max_frames - 1``; by time: set once max_seconds is reached)
    until: float | None = None  # by time, once its owner ended: the clip ends at the first frame at this time or later


class ClipWriter:
    """Writes the clips of a watch on one thread (see the module doc). An event that starts while the clip of
    the one before is still recording (within ``before + after`` seconds of it, and in the first half of the
    clip's ``max_seconds``) joins that clip, so a burst of events costs one encoder, not one each; at most
    ``MAX_OPEN`` clips are ever open, and none is longer than ``max_seconds``."""

    MAX_OPEN = 2

    def __init__(self, fps: float, before: float, after: float, max_seconds: float, width: int = 640, lead: int = 0,
                 log: Callable[[str], None] | None = None, queue_seconds: float = QUEUE_SECONDS) -> None:
        """``lead``: how many frames the reader may be ahead of the frame whose event the scorer announces
        (the queue, the smoothing delay, the minimum length); the ring keeps ``before`` seconds beyond that."""
        self.fps, self.width = fps, width
        self.before, self.after = round(before * fps), round(after * fps)
        self.max_frames = max(1, round(max_seconds * fps))
        self.before_s, self.after_s, self.max_s = float(before), float(after), float(max_seconds)
        self.log = log or (lambda message: None)
        self.lead = max(0, lead)
        # (frame number, frame, its own time): as :meth:`add` takes them. Sized in frames at the stated rate; the
        # writer enlarges it to ``timed_ring`` at the first frame with its own time (see RING_BURST)
        self.ring: deque[tuple[int, np.ndarray, float | None]] = deque(maxlen=self.before + self.lead + 1)
        self.timed_ring = RING_BURST * self.before + self.lead + 1
        # (frame number, its own time) of the latest frames given with one, as the reader adds them (no images: a
        # few bytes each), so that the scorer's start/end find the frames ``before``/``after`` seconds away; as long
        # as the enlarged ring, so that no clip starts before what the ring can hold
        self.times: deque[tuple[int, float]] = deque(maxlen=self.timed_ring)
        self.frames: queue.Queue[tuple[int, np.ndarray, float | None]] = queue.Queue(
            maxsize=max(8, round(queue_seconds * fps)))
        self.lock = threading.Lock()  # guards the clips: the scorer opens and ends them, the writer writes them
        self.open: list[_Clip] = []
        self.of_event: dict[int, _Clip] = {}  # event -> its clip, while the clip is open
        self.closing = threading.Event()
        self.skipped = self.written = self.failed = 0
        self.cut_after = -1  # the last frame before the latest drop of the source: no clip spans it
        self.thread = threading.Thread(target=self._run, name="anomalens-clips", daemon=True)
        self.thread.start()

    # ---- called by the reader and the scorer ------------------------------------------------------------
    def add(self, index: int, image: np.ndarray, seconds: float | None = None) -> None:
        """A decoded frame (any size; scaled down to ``width`` here) and its time in the source by its own
        timestamps (a video file's: :class:`~anomalens.data.video_io.FrameTimer`; None: ``index / fps``). Never
        blocks."""
        if seconds is not None:
            self.times.append((index, float(seconds)))
        try:
            self.frames.put_nowait((index, image, seconds))
        except queue.Full:  # the writer is behind: this frame is left out (its time stays in the clip)
            self.skipped += 1

    def start(self, event: int, path: Path, first_event_frame: int) -> tuple[Path, int]:
        """An event began at ``first_event_frame``: its clip (``path``, or the clip it joins) and the clip's
        first frame, ``before`` frames ahead of the event's (or earlier, for a joined clip). Where the frames
        carry their own times, ``before`` seconds ahead by them, back to the oldest frame the ring holds."""
        times = self._times()
        t_event = times.get(first_event_frame)
        with self.lock:
            if t_event is None:  # frame counts at the stated rate
                first = max(0, first_event_frame - self.before, self.cut_after + 1)
            else:
                first = min((i for i, t in times.items() if i <= first_event_frame and t >= t_event - self.before_s
                             - _EPS), default=first_event_frame)
                first = max(0, first, self.cut_after + 1)
            latest = self.open[-1] if self.open else None
            if latest is not None and latest.until is not None:  # its end is read by now: settle it before the
                # join test, which would otherwise depend on how far behind the writer thread is
                ended = _first_at(times, latest.until)
                if ended is not None:
                    latest.last, latest.until = min(latest.last, ended), None
            # a clip never runs past its first frame + max_seconds, so an event joins only the first half of one
            if latest is not None and latest.t0 is not None and t_event is not None:
                joinable = t_event < latest.t0 + self.max_s / 2
            else:
                joinable = latest is not None and first_event_frame < latest.first + self.max_frames // 2
            if latest is not None and ((joinable and latest.last >= first) or len(self.open) >= self.MAX_OPEN):
                latest.last, latest.owner, latest.until = latest.cap, event, None  # still recording: join it
                clip = latest
            else:
                # the time of its first frame (or of the first one the reader kept a time of)
                t0 = None if t_event is None else times.get(
                    first, min((t for i, t in times.items() if i >= first), default=t_event))
                # by time, the writer stops it at max_seconds; the frame cap only bounds a clip whose frames lost
                # their times on the way
                cap = first + (self.max_frames if t0 is None else TIMED_CAP * self.max_frames) - 1
                clip = _Clip(Path(path), first, cap, event, t0=t0, cap=cap)
                self.open.append(clip)
            self.of_event[event] = clip
            return clip.path, clip.first

    def end(self, event: int, last_event_frame: int) -> None:
        """The event ended at ``last_event_frame``: its clip runs ``after`` frames further, or, by the frames' own
        times, to the first frame ``after`` seconds or more past it (found by the writer if not yet read)."""
        times = self._times()
        with self.lock:
            clip = self.of_event.pop(event, None)
            if clip is None or clip.owner != event:
                return
            t_end = times.get(last_event_frame) if clip.t0 is not None else None
            if t_end is None:
                clip.last = min(clip.last, last_event_frame + self.after)
                return
            until = t_end + self.after_s - _EPS
            last = _first_at(times, until, last_event_frame)
            if last is None:
                clip.until = until
            else:
                clip.last = min(clip.last, last)

    def cut(self, last_frame: int) -> None:
        """The source dropped after ``last_frame``: every open clip ends there (and is written out while the source
        is away), and no later clip starts before it, so that no clip joins the two sides of an outage."""
        with self.lock:
            self.cut_after = last_frame
            for clip in self.open:
                clip.last = min(clip.last, last_frame)

    def close(self, timeout: float = 30.0) -> None:
        """The watch ended: the frames still queued are written, the clips end there; waits until written."""
        self.closing.set()
        self.thread.join(timeout)

    def _times(self) -> dict[int, float]:
        """The frame times :meth:`add` kept, frame number -> seconds (a copy: the reader goes on adding)."""
        while True:
            try:
                return dict(self.times)
            except RuntimeError:  # appended to while copied
                continue

    def stats(self) -> dict[str, int]:
        return {"clips_written": self.written, "clips_failed": self.failed, "clip_frames_left_out": self.skipped,
                "clips_open": len(self.open)}

    # ---- the writer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                index, image, seconds = self.frames.get(timeout=0.1)
            except queue.Empty:
                if self.closing.is_set():
                    break
                with self.lock:
                    cut = [clip for clip in self.open if clip.last <= self.cut_after]
                for clip in cut:  # nothing comes while the source is away: finish what ended at the drop
                    self._catch_up(clip)
                    self._finish(clip)
                continue
            small = shrink(image, self.width)
            if seconds is not None and (self.ring.maxlen or 0) < self.timed_ring + self.frames.maxsize:
                # frames with times: room for bursts, and for the frames still queued when the scorer chose a clip's
                # first frame from ``times`` (the reader's, ahead of this thread by up to the queue)
                self.ring = deque(self.ring, maxlen=self.timed_ring + self.frames.maxsize)
            self.ring.append((index, small, seconds))
            with self.lock:
                clips = list(self.open)
            for clip in clips:
                self._catch_up(clip)
                # kept open ``lead`` frames past its end, so that an event announced meanwhile can still join it
                if index > clip.last + self.lead:
                    self._finish(clip)
        with self.lock:
            clips, self.open = list(self.open), []
        for clip in clips:  # the watch ended: what the ring holds for each clip, then the file
            self._catch_up(clip)
            self._finish(clip)

    def _catch_up(self, clip: _Clip) -> None:
        """From the ring: a new clip's seconds before its event, a joined clip's frames since it paused."""
        for index, frame, seconds in list(self.ring):
            if clip.written < index <= clip.last:
                self._write(clip, index, frame, seconds)

    def _write(self, clip: _Clip, index: int, small: np.ndarray, seconds: float | None) -> None:
        if clip.done or index < clip.first or index <= clip.written:
            return
        try:
            if clip.writer is None:
                # its first frame has its own time: the clip keeps the frames' times (a variable rate plays as it was)
                if seconds is None:
                    clip.zero = None
                elif clip.t0 is not None and clip.t0 <= seconds:
                    clip.zero = clip.t0  # the time of its first frame, even where that frame was left out
                else:
                    clip.zero = seconds - (index - clip.first) / self.fps
                clock = None if clip.zero is None else Fraction(1, TIMED_CLOCK)
                clip.writer = VideoWriter(clip.path, self.fps, crf=CLIP_CRF, preset=CLIP_PRESET, threads=1,
                                          time_base=clock)
            at = index / self.fps if seconds is None else seconds
            if clip.t0 is not None and clip.zero is not None and clip.written >= 0 \
                    and at - clip.zero >= self.max_s - _EPS:
                with self.lock:  # max_seconds of the frames' time: the clip ends at the frame before
                    clip.cap = clip.last = min(clip.last, clip.written)
                return
            clip.writer.write(small, pts=self._pts(clip, index, seconds))
            clip.written = index
            if clip.until is not None:
                with self.lock:  # the first frame ``after`` seconds past its event: the clip's last
                    if clip.until is not None and at >= clip.until:
                        clip.last, clip.until = min(clip.last, index), None
        except Exception as exc:  # a clip that cannot be written must not end the watch
            self.log(f"clip {clip.path.name}: {exc.__class__.__name__}: {exc}")
            self.failed += 1
            if clip.writer is not None:
                clip.writer.abort()
            clip.writer = None
            self._drop(clip)

    def _pts(self, clip: _Clip, index: int, seconds: float | None) -> int:
        """The frame's timestamp in its clip: frame periods from the clip's first frame, or ticks of TIMED_CLOCK
        by the frames' own times (never two frames on one tick)."""
        if clip.zero is None:
            return index - clip.first
        seconds = index / self.fps if seconds is None else seconds  # what a frame without a time is at
        assert clip.writer is not None
        return max(round((seconds - clip.zero) * TIMED_CLOCK), clip.writer.last_pts + 1)

    def _drop(self, clip: _Clip) -> None:
        clip.done = True
        with self.lock:
            if clip in self.open:
                self.open.remove(clip)

    def _finish(self, clip: _Clip) -> None:
        self._drop(clip)
        if clip.writer is None:
            return
        writer, clip.writer = clip.writer, None
        try:
            writer.close()
            self.written += 1
        except Exception as exc:
            self.log(f"clip {clip.path.name}: {exc.__class__.__name__}: {exc}")
            self.failed += 1


def shrink(image: np.ndarray, max_width: int) -> np.ndarray:
    """Frames kept for clips are at most ``max_width`` pixels wide (bounded memory), even-sized for H.264."""
    h, w = image.shape[:2]
    if w > max_width:
        h, w = max(2, round(h * max_width / w)), max_width
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    return image[: h - h % 2, : w - w % 2]
