"""The watch's reader: frames from the source, prepared for the model, into a bounded queue that the scorer
takes from. From a live source (a stream, a camera, a file played in real time) a frame that finds the queue full
pushes out the oldest one, and a frame older than ``max_latency`` when the scorer reaches it is skipped: both
count as dropped, so the latency stays bounded and memory fixed (ages by the monotonic clock: a wall-clock step
drops nothing). A file read as fast as possible and a hot folder never drop: the reader waits. A drop of the
source (:class:`~anomalens.live.sources.SourceBreak`) is queued as a :class:`Break` in order with the frames and
is never pushed out, so the scorer closes what was open after the last frame before it.

>>> reader = FrameReader(source, preprocessing.prepare_array, queue_size=4, max_latency=1.0)   # doctest: +SKIP
>>> threading.Thread(target=reader.run).start()                                              # doctest: +SKIP
>>> frames, ended, lost = reader.take(2)     # up to 2 waiting frames; the end; a break right after them  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from anomalens.errors import ConfigError
from anomalens.live.sources import Source, SourceBreak

MMAP_THRESHOLD = 256 << 10  # bytes: the former setting (``"mmap"``): larger blocks are mapped and unmapped afresh
M_ARENA_MAX, M_MMAP_THRESHOLD = -8, -3  # mallopt's parameters (glibc's malloc.h)
MEMORY_SETTINGS = ("trim", "mmap", "arena", "glibc")


def steady_memory(setting: str = "trim") -> Callable[[], None]:
    """Keep a long watch's memory flat; returns what the scorer calls about once a second.

    Decoded frames (about 1 MB at 640x480) are allocated by the reader and freed by other threads; with glibc's
    defaults the freed blocks stay in per-thread heaps that fragment: a realtime soak grew by 200 MB in 90 s and
    kept growing (``"glibc"``, nothing done). ``"trim"`` (the watch's): ``malloc_trim(0)`` once a second hands
    the free pages of every heap back to the system, so that the frames still come from the heaps. ``"mmap"``
    (the former setting) fixed the mmap threshold at 256 KB: flat too, but every larger block (frames, the
    backbone's and the search's buffers) was mapped afresh, 5-7 ms more CPU per frame. ``"arena"``: one heap
    for all threads (only effective before a second thread allocates). Nothing happens where the C library is
    not glibc."""
    if setting not in MEMORY_SETTINGS:
        raise ConfigError(f"memory setting must be one of {', '.join(MEMORY_SETTINGS)}, got {setting!r}")
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (glibc only)
    except (OSError, AttributeError):
        return lambda: None
    if setting == "mmap":
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # setting it also stops glibc from raising it
    elif setting == "arena":
        libc.mallopt(M_ARENA_MAX, 1)
    elif setting == "trim":
        return lambda: libc.malloc_trim(0)
    return lambda: None


@dataclass
class QueuedFrame:
    """A decoded frame on its way from the reader to the scorer."""

    index: int  # among all frames read (drops leave gaps)
    arrived: float  # time.time(): what is reported
    image: np.ndarray  # native RGB, for the UI and image models' overlays
    tensor: torch.Tensor  # the model's input (prepared by the reader)
    file: str | None
    before: torch.Tensor | None  # the model input of the frame decoded just before this one (motion after drops)
    resumed: bool = False  # the first frame after the source broke off and came back
    processed: float = 0.0  # time.monotonic() when its raw score was known
    clock: float = 0.0  # time.monotonic() when it arrived: its age (too late?) and latency
    stamp: tuple[str, int, int] | None = None  # a hot folder's file: (name, size, mtime_ns) when it was read
    time: float | None = None  # its presentation time in the source, seconds (a file's timestamps; None: index / fps)


@dataclass
class Break:
    """The source dropped after frame ``after_frame``: queued in order with the frames, never dropped."""

    after_frame: int
    lost_at: float  # time.time() of that frame's arrival
    reason: str


_END = None  # queued last: the source has ended


class FrameQueue:
    """The frames between the reader and the scorer, at most ``size`` of them; markers (a :class:`Break`, the
    end) are queued in order with them but never dropped and never counted against the size."""

    def __init__(self, size: int) -> None:
        self.size = max(1, size)
        self.items: deque[QueuedFrame | Break | None] = deque()
        self.frames = 0
        self.ready = threading.Condition()

    def put(self, item: QueuedFrame, stopping: threading.Event) -> None:
        """Wait for room (a file, a hot folder: nothing is dropped), unless the watch is stopping."""
        with self.ready:
            while self.frames >= self.size and not stopping.is_set():
                self.ready.wait(0.2)
            self._append(item)

    def push(self, item: QueuedFrame) -> int:
        """Queue at once, the oldest waiting frame giving way when full (a camera does not wait); returns how
        many frames were pushed out (0 or 1)."""
        with self.ready:
            out = 0
            if self.frames >= self.size:
                oldest = next(i for i, queued in enumerate(self.items) if isinstance(queued, QueuedFrame))
                del self.items[oldest]
                self.frames -= 1
                out = 1
            self._append(item)
            return out

    def mark(self, marker: Break | None) -> None:
        with self.ready:
            self.items.append(marker)
            self.ready.notify_all()

    def _append(self, item: QueuedFrame) -> None:
        self.items.append(item)
        self.frames += 1
        self.ready.notify_all()

    def get(self, timeout: float | None) -> QueuedFrame | Break | None:
        """The next item (waits up to ``timeout`` s; 0: not at all); raises queue.Empty when there is none."""
        with self.ready:
            if not self.items and timeout:
                self.ready.wait(timeout)
            if not self.items:
                raise queue.Empty
            item = self.items.popleft()
            if isinstance(item, QueuedFrame):
                self.frames -= 1
                self.ready.notify_all()
            return item


class FrameReader:
    """Reads ``source`` on the thread that calls :meth:`run`, each frame prepared by ``prepare`` (the model's input)
    and handed to ``on_frame`` (index, native image, its own time: the clip writer) before it is queued;
    :meth:`take` gives the waiting frames to the scorer. Each counter has one writer: :meth:`run` counts what it
    read and pushed out, :meth:`take` the frames too late to score."""

    def __init__(self, source: Source, prepare: Callable[[np.ndarray], torch.Tensor], queue_size: int,
                 max_latency: float, stopping: threading.Event | None = None,
                 on_frame: Callable[[int, np.ndarray, float | None], None] | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.source, self.prepare, self.max_latency = source, prepare, max_latency
        self.stopping = stopping or threading.Event()
        self.on_frame = on_frame or (lambda index, image, seconds: None)
        self.log = log or (lambda message: None)
        self.frames = FrameQueue(queue_size)
        self.read = self.pushed_out = self.too_late = 0
        self.error: str | None = None

    @property
    def dropped(self) -> int:
        return self.pushed_out + self.too_late

    def run(self) -> None:
        """Read until the source ends or ``stopping`` is set; then queue the end."""
        before: torch.Tensor | None = None
        try:
            for frame in self.source.frames():
                if isinstance(frame, SourceBreak):  # after the frames read so far, before any that come later
                    self.frames.mark(Break(self.read - 1, frame.lost_at, frame.reason))
                    continue
                index, self.read = self.read, self.read + 1
                tensor = self.prepare(frame.image)
                self.on_frame(index, frame.image, frame.time)
                # after a break in the source, the frame decoded before it is from another time: no motion from it
                item = QueuedFrame(index, frame.arrived, frame.image, tensor, frame.file,
                                   None if frame.resumed else before, frame.resumed, clock=frame.clock,
                                   stamp=frame.stamp, time=frame.time)
                before = tensor
                if self.source.live:
                    self.pushed_out += self.frames.push(item)
                else:
                    self.frames.put(item, self.stopping)
                if self.stopping.is_set():
                    break
        except Exception as exc:  # the scorer must hear that the source died, whatever the reason
            self.log(f"the source stopped: {exc.__class__.__name__}: {exc}")
            self.error = f"{exc.__class__.__name__}: {exc}"
        finally:
            self.frames.mark(_END)

    def take(self, limit: int) -> tuple[list[QueuedFrame], bool, Break | None]:
        """Up to ``limit`` waiting frames (waits a little for the first, never for more), True once the source has
        ended, and a break in the source that comes right after these frames (taken with them)."""
        out: list[QueuedFrame] = []
        wait = 0.2
        while len(out) < limit:
            try:
                item = self.frames.get(wait)
            except queue.Empty:
                return out, False, None
            wait = 0
            if item is None:
                return out, True, None
            if isinstance(item, Break):
                return out, False, item
            if self.source.live and time.monotonic() - item.clock > self.max_latency:
                self.too_late += 1  # too old to be worth scoring now
            else:
                out.append(item)
        return out, False, None
