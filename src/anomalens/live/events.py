"""Live events: intervals that open when the score crosses the saved threshold and close after it falls back,
and the evidence saved with each (an H.264 clip with seconds before and after, or the image with its overlay).

:class:`EventTracker` sees one frame at a time, in order, and gives the same intervals as the offline
:func:`~anomalens.metrics.events.detect_events` over the same scores (``close_level`` = the threshold,
``close_after`` = its ``merge_gap``), which is what lets ``watch`` match ``analyze-video``. With hysteresis
(``close_level`` below the threshold) an open event stays open while the score stays above the lower level.

>>> tracker = EventTracker(threshold=1.0, close_level=1.0, fps=10, close_after=1)
>>> [tracker.update(i, s) for i, s in enumerate([0, 0, 2, 3, 0, 2, 0, 0])][-1][0].event["end_frame"]
5
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import queue
from array import array
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from anomalens.data.video_io import write_video
from anomalens.metrics.events import event_record

CLIP_ENCODERS = 4  # clips encoded at once; a fifth overlapping clip waits, and skips frames if it waits long


@dataclass
class OpenEvent:
    start: int
    scores: array = field(default_factory=lambda: array("d"))  # from the start on; -inf for dropped frames (8 bytes a frame)
    last_above: int = 0
    announced: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # what the watcher keeps with it (peak frame, cues, times)

    def frames(self) -> int:
        return self.last_above - self.start + 1


@dataclass
class Transition:
    kind: str  # "started" (the event reached its minimum length) or "closed"
    open_event: OpenEvent
    event: dict[str, Any] = field(default_factory=dict)  # the finished event's fields (kind "closed")


class EventTracker:
    """Opens an event when a frame's score exceeds ``threshold``; keeps it open while frames exceed
    ``close_level`` (hysteresis when lower than the threshold) with gaps of at most ``close_after`` frames;
    keeps it only if it spans ``min_length`` frames. Frame indices may skip (dropped frames)."""

    def __init__(self, threshold: float, close_level: float, fps: float, close_after: int = 0, min_length: int = 1) -> None:
        if close_level > threshold:
            raise ValueError("the closing level cannot be above the threshold")
        if close_after < 0 or min_length < 1:
            raise ValueError("close_after must be >= 0 and min_length >= 1")
        self.threshold, self.close_level, self.fps = threshold, close_level, fps
        self.close_after, self.min_length = close_after, min_length
        self.current: OpenEvent | None = None

    def update(self, index: int, score: float) -> list[Transition]:
        out: list[Transition] = []
        event = self.current
        if event is not None and index - event.last_above - 1 > self.close_after:  # frames were dropped meanwhile
            out += self._close()
            event = None
        if event is None:
            if score <= self.threshold:
                return out
            event = self.current = OpenEvent(start=index, last_above=index)
        event.scores.extend([-math.inf] * (index - event.start - len(event.scores)))  # dropped frames have no score
        event.scores.append(float(score))
        if score > self.close_level:
            event.last_above = index
            if not event.announced and event.frames() >= self.min_length:
                event.announced = True
                out.append(Transition("started", event))
        elif index - event.last_above > self.close_after:  # a longer quiet stretch would not be merged
            out += self._close()
        return out

    def finish(self) -> list[Transition]:
        """The stream ended: close the open event at its last frame above the closing level."""
        return self._close()

    def _close(self) -> list[Transition]:
        event, self.current = self.current, None
        if event is None or event.frames() < self.min_length:
            return []
        scores = np.frombuffer(event.scores, dtype=np.float64)[: event.frames()]
        return [Transition("closed", event, event_record(event.start, scores, self.fps))]


class ClipRecorder:
    """Writes one event's clip while the stream goes on: frames from ``before`` frames ahead of the start,
    then every new frame until ``stop_at``; encoded by one of a few encoder threads (H.264, see
    :func:`~anomalens.data.video_io.write_video`) through a bounded queue, so scoring never waits for it."""

    def __init__(self, path: Path, fps: float, max_frames: int, on_done: Callable[[Path, int], None] | None = None) -> None:
        self.path, self.max_frames = path, max_frames
        self.frames: queue.Queue = queue.Queue(maxsize=max(8, int(fps * 2)))
        self.stop_at: int | None = None
        self.added = self.skipped = 0
        self.last_index = -1
        self.error: str | None = None
        self.on_done = on_done or (lambda path, frames: None)
        self.future = _encoders().submit(self._write, fps)

    def wait(self, timeout: float | None = None) -> None:
        """Until the clip is written (call :meth:`finish` first)."""
        try:
            self.future.result(timeout)
        except concurrent.futures.TimeoutError:
            pass

    def add(self, index: int, image: np.ndarray) -> None:
        if self.done or index <= self.last_index:
            return
        self.last_index = index
        if self.added >= self.max_frames:
            self.finish()
            return
        try:
            self.frames.put_nowait(image)
            self.added += 1
        except queue.Full:  # the encoder fell behind: the clip skips a frame rather than stall the stream
            self.skipped += 1
        if self.stop_at is not None and index >= self.stop_at:
            self.finish()

    @property
    def done(self) -> bool:
        return self.stop_at == -1

    def finish(self) -> None:
        if not self.done:
            self.stop_at = -1
            self.frames.put(None)

    def _write(self, fps: float) -> None:
        def frames():
            while (image := self.frames.get()) is not None:
                yield image

        try:
            write_video(self.path, frames(), fps)
            self.on_done(self.path, self.added)
        except Exception as exc:  # a clip that cannot be written must not end the watch
            self.error = f"{exc.__class__.__name__}: {exc}"
            while self.frames.get() is not None:  # let add()/finish() go on without blocking
                pass


@functools.lru_cache(maxsize=1)
def _encoders() -> concurrent.futures.ThreadPoolExecutor:
    # a few long-lived encoder threads for all clips, rather than a new thread per event: with a thread per
    # event, every new thread took its own malloc arena and memory crept up over a long watch
    return concurrent.futures.ThreadPoolExecutor(max_workers=CLIP_ENCODERS, thread_name_prefix="anomalens-clip")


class FrameRing:
    """The last ``capacity`` frames, (index, image), for the seconds before an event."""

    def __init__(self, capacity: int) -> None:
        self.items: deque[tuple[int, np.ndarray]] = deque(maxlen=max(1, capacity))

    def add(self, index: int, image: np.ndarray) -> None:
        self.items.append((index, image))

    def since(self, first: int) -> list[tuple[int, np.ndarray]]:
        return [(i, image) for i, image in self.items if i >= first]


def shrink(image: np.ndarray, max_width: int) -> np.ndarray:
    """Frames kept for clips are at most ``max_width`` pixels wide (bounded memory), even-sized for H.264."""
    h, w = image.shape[:2]
    if w > max_width:
        h, w = max(2, round(h * max_width / w)), max_width
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    return image[: h - h % 2, : w - w % 2]
