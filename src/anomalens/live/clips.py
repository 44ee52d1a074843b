"""Event clips of a live watch: every decoded frame goes through a ring of the last few seconds, and each event's
clip (H.264, from ``before`` seconds ahead of its start to ``after`` seconds past its end) is encoded by ONE
writer thread as the stream goes on.

The reader hands frames over with :meth:`ClipWriter.add` (never blocks: when the writer is behind, the frame is
left out of the clips and counted), the scorer says when an event starts and where it ends. Each frame keeps its
source frame number as its timestamp (at the stream's rate), so a clip plays in real time even where frames were
left out. Memory is bounded: the ring, a queue of ``2 s`` of frames, and one encoder per open clip (libx264 on a
single thread, so the writer never competes with the scorer for more than one core).

>>> writer = ClipWriter(fps=25, before=3, after=3, max_seconds=60)   # doctest: +SKIP
>>> writer.add(index, frame)                                        # from the reader, every frame   # doctest: +SKIP
>>> writer.start(7, Path("events/event_00007.mp4"), first_frame)    # the scorer announces an event  # doctest: +SKIP
>>> writer.end(7, last_frame)                                       # ... and closes it              # doctest: +SKIP
>>> writer.close()                                                  # the watch ends: every clip is written  # doctest: +SKIP
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from anomalens.data.video_io import VideoWriter

CLIP_CRF, CLIP_PRESET = 23, "veryfast"  # evidence, not archive quality: small files, cheap to encode
QUEUE_SECONDS = 2.0  # frames waiting for the writer; beyond that new frames are left out of the clips


@dataclass
class _Clip:
    path: Path
    first: int  # source frame number of the clip's first frame (its timestamp 0)
    last: int  # the last frame it takes (moves once the event closes)
    writer: VideoWriter | None = None
    frames: int = 0


class ClipWriter:
    """Writes the clips of a watch on one thread (see the module doc)."""

    def __init__(self, fps: float, before: float, after: float, max_seconds: float, width: int = 640, lead: int = 0,
                 log: Callable[[str], None] | None = None) -> None:
        """``lead``: how many frames the reader may be ahead of the frame whose event the scorer announces
        (the queue, the smoothing delay, the minimum length); the ring keeps ``before`` seconds beyond that."""
        self.fps, self.width = fps, width
        self.before, self.after = round(before * fps), round(after * fps)
        self.max_frames = max(1, round(max_seconds * fps))
        self.log = log or (lambda message: None)
        self.ring: deque[tuple[int, np.ndarray]] = deque(maxlen=self.before + max(0, lead) + 1)
        self.frames: queue.Queue[tuple[int, np.ndarray]] = queue.Queue(maxsize=max(8, round(QUEUE_SECONDS * fps)))
        self.commands: queue.Queue[tuple] = queue.Queue()  # start/end/close: never dropped
        self.clips: dict[int, _Clip] = {}
        self.skipped = self.written = self.failed = 0
        self.thread = threading.Thread(target=self._run, name="anomalens-clips", daemon=True)
        self.thread.start()

    # ---- called by the reader and the scorer ------------------------------------------------------------
    def add(self, index: int, image: np.ndarray) -> None:
        """A decoded frame (any size; scaled down to ``width`` here). Never blocks."""
        try:
            self.frames.put_nowait((index, image))
        except queue.Full:  # the writer is behind: this frame is left out (its time stays in the clip)
            self.skipped += 1

    def start(self, key: int, path: Path, first_event_frame: int) -> int:
        """An event began at ``first_event_frame``: its clip starts ``before`` frames ahead (returned)."""
        first = max(0, first_event_frame - self.before)
        self.commands.put(("start", key, path, first, first + self.max_frames - 1))
        return first

    def end(self, key: int, last_event_frame: int) -> None:
        """The event ended at ``last_event_frame``: its clip runs ``after`` frames further."""
        self.commands.put(("end", key, last_event_frame + self.after))

    def close(self, timeout: float = 30.0) -> None:
        """The watch ended: the clips end with the last frame received; waits until they are written."""
        self.commands.put(("close",))
        try:
            self.frames.put_nowait((-1, np.zeros((0, 0, 3), np.uint8)))  # wakes the writer at once
        except queue.Full:
            pass
        self.thread.join(timeout)

    def stats(self) -> dict[str, int]:
        return {"clips_written": self.written, "clips_failed": self.failed, "clip_frames_left_out": self.skipped,
                "clips_open": len(self.clips)}

    # ---- the writer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        closing = False
        while True:
            closing = self._commands() or closing
            try:
                index, image = self.frames.get(timeout=0.2)
            except queue.Empty:
                if closing:
                    break
                continue
            if index < 0:  # close() woke the writer up: the frames still queued are written, then it stops
                continue
            small = shrink(image, self.width)
            self.ring.append((index, small))
            for key, clip in list(self.clips.items()):
                if index >= clip.first:
                    self._write(key, clip, index, small)
        for key in list(self.clips):
            self._finish(key)

    def _commands(self) -> bool:
        """Apply waiting commands; True once ``close`` was asked."""
        closing = False
        while True:
            try:
                command = self.commands.get_nowait()
            except queue.Empty:
                return closing
            if command[0] == "start":
                _, key, path, first, cap = command
                clip = self.clips[key] = _Clip(Path(path), first, cap)
                for index, small in list(self.ring):  # the seconds before the event, from the ring
                    if index >= first and key in self.clips:
                        self._write(key, clip, index, small)
            elif command[0] == "end":
                _, key, last = command
                if key in self.clips:
                    clip = self.clips[key]
                    clip.last = min(clip.last, last)
                    if self.ring and self.ring[-1][0] >= clip.last:
                        self._finish(key)
            else:
                closing = True

    def _write(self, key: int, clip: _Clip, index: int, small: np.ndarray) -> None:
        if index > clip.last:
            self._finish(key)
            return
        try:
            if clip.writer is None:
                clip.writer = VideoWriter(clip.path, self.fps, crf=CLIP_CRF, preset=CLIP_PRESET, threads=1)
            if index - clip.first > clip.writer.last_pts:
                clip.writer.write(small, pts=index - clip.first)
                clip.frames += 1
        except Exception as exc:  # a clip that cannot be written must not end the watch
            self.log(f"clip {clip.path.name}: {exc.__class__.__name__}: {exc}")
            self.failed += 1
            if clip.writer is not None:
                clip.writer.abort()
            del self.clips[key]
            return
        if index >= clip.last:
            self._finish(key)

    def _finish(self, key: int) -> None:
        clip = self.clips.pop(key, None)
        if clip is None or clip.writer is None:
            return
        try:
            clip.writer.close()
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
