"""Where live frames come from: a video file, an RTSP/HTTP(S) stream, a V4L2 camera or a hot folder of images.

Every source yields :class:`SourceFrame` objects (native RGB ``uint8`` ``(H, W, 3)``, the wall-clock time it
arrived, and for hot folders the file it came from) until it ends or :meth:`Source.stop` is called.
Streams and cameras reconnect with back-off when they drop; each gap is reported to ``on_lost`` with its
start, end and reason, so the watcher can log a ``source_lost`` event.

>>> source = open_source("rtsp://127.0.0.1:8554/live")          # doctest: +SKIP
>>> for frame in source.frames(): ...                            # doctest: +SKIP
>>> open_source("incoming/").kind                                # doctest: +SKIP
'folder'
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from anomalens.data.preprocessing import IMAGE_EXTENSIONS, Preprocessing, read_rgb
from anomalens.data.video_io import frame_to_rgb, natural_key, open_clip, stated_rate, timing_fps
from anomalens.data.video_io import _short as short_error
from anomalens.errors import AnomalensError, DataError

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://")
OPEN_TIMEOUT_S = 10.0  # seconds to wait for a stream to answer
READ_TIMEOUT_S = 5.0  # seconds without a packet before a stream counts as lost
# reconnection back-off: doubles from the first to the cap; a 4 s cap means a stream that comes back is
# picked up within about 4 s however long it was away
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 4.0
FOLDER_POLL_S = 0.2  # a hot folder is listed this often; a file is taken once its size held still for one poll
UNREADABLE_AFTER_S = 10.0  # a file that does not decode and does not change for this long is skipped as broken


@dataclass
class SourceFrame:
    image: np.ndarray  # RGB uint8 (H, W, 3)
    arrived: float  # time.time() when the frame was read
    file: str | None = None  # the image file, for hot folders
    index: int = -1  # the frame's number among all frames read (set by the watcher's reader; drops leave gaps)
    resumed: bool = False  # the first frame after the source broke off and came back (no motion across the break)


@dataclass
class SourceGap:
    """A stretch of time without frames: the stream dropped and came back (or the watch ended first)."""

    started: float
    ended: float
    reason: str
    attempts: int
    reconnected: bool = True  # False: the watch ended before the source came back


LossCallback = Callable[[SourceGap], None]
LogCallback = Callable[[str], None]


class Source:
    """A source of live frames; subclasses set ``kind``, ``stated_fps`` (None: the source states no rate, and
    ``fps`` assumes 25 for timing), ``live`` (frames may be dropped when the scorer cannot keep up: a camera does
    not wait) and implement :meth:`frames`."""

    kind = "source"
    live = True
    stated_fps: float | None = None

    @property
    def fps(self) -> float:
        """The rate for timing (events, clips, real-time playback): the stated one, else 25."""
        return timing_fps(self.stated_fps)

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = threading.Event()

    def frames(self) -> Iterator[SourceFrame]:  # pragma: no cover - interface
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()


class VideoFileSource(Source):
    """A video file, decoded once front to back (by :mod:`anomalens.data.video_io`, the one place that decodes
    video files); at its own frame rate with ``realtime``, else as fast as the scorer takes it (then no frame is
    dropped: the reader waits)."""

    kind = "file"

    def __init__(self, path: Path, realtime: bool = False) -> None:
        super().__init__(str(path))
        self.clip = open_clip(path, Preprocessing(image_size=None))  # native frames: iter_native() only
        self.stated_fps, self.realtime, self.live = self.clip.stated_fps, realtime, realtime

    def frames(self) -> Iterator[SourceFrame]:
        started = time.monotonic()
        for index, image in enumerate(self.clip.iter_native()):
            if self.stopping.is_set():
                return
            if self.realtime:  # play at the file's own rate
                delay = started + index / self.fps - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    return
            yield SourceFrame(image, time.time())


class StreamSource(Source):
    """An RTSP/HTTP(S) stream or a V4L2 device read with PyAV; reconnects with back-off when it drops."""

    def __init__(
        self,
        url: str,
        kind: str = "stream",
        on_lost: LossCallback | None = None,
        log: LogCallback | None = None,
        open_timeout: float = OPEN_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
    ) -> None:
        super().__init__(url)
        self.url, self.kind = url, kind
        self.on_lost, self.log = on_lost or (lambda gap: None), log or (lambda message: None)
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self.stated_fps = None  # the stream's own rate once connected, if it states one
        self.connections = 0

    def _open(self):
        import av

        if self.kind == "v4l2":
            return av.open(self.url, format="v4l2", timeout=(self.open_timeout, self.read_timeout))
        options = {"rtsp_transport": "tcp"} if self.url.startswith(("rtsp://", "rtsps://")) else {}
        return av.open(self.url, options=options, timeout=(self.open_timeout, self.read_timeout))

    def frames(self) -> Iterator[SourceFrame]:
        import av

        retry, lost_at, reason, attempts = FIRST_RETRY_S, None, "", 0
        while not self.stopping.is_set():
            try:
                container = self._open()
            except (av.FFmpegError, OSError) as exc:
                lost_at = lost_at or time.time()
                reason, attempts = reason or f"cannot connect ({short_error(exc)})", attempts + 1
                self.log(f"{self.name}: {short_error(exc)}; retrying in {retry:.1f} s")
                if self.stopping.wait(retry):
                    break
                retry = min(retry * 2, MAX_RETRY_S)
                continue
            self.connections += 1
            try:
                stream = container.streams.video[0]
                self.stated_fps = stated_rate(container, stream) or self.stated_fps
                if lost_at is not None:
                    self.on_lost(SourceGap(lost_at, time.time(), reason, attempts))
                    self.log(f"{self.name}: reconnected after {time.time() - lost_at:.1f} s")
                lost_at, reason, attempts, retry = None, "", 0, FIRST_RETRY_S
                # slice threads only: frame threads would hold each frame back by one frame per thread
                stream.thread_type = "SLICE"
                resumed = self.connections > 1
                for frame in container.decode(stream):
                    # colours converted as analyze-video converts them (the stream's own matrix and range)
                    yield SourceFrame(frame_to_rgb(frame), time.time(), resumed=resumed)
                    resumed = False
                    if self.stopping.is_set():
                        break
                else:
                    reason = "the stream ended"
            except (av.FFmpegError, OSError, EOFError) as exc:
                reason = f"the stream broke off ({short_error(exc)})"
            finally:
                container.close()
            if not self.stopping.is_set():
                lost_at, attempts = time.time(), 0
                self.log(f"{self.name}: {reason}; reconnecting")
        if lost_at is not None:  # stopped while the stream was away: the gap is still worth logging
            self.on_lost(SourceGap(lost_at, time.time(), reason or "stopped while disconnected", attempts, reconnected=False))


class FolderSource(Source):
    """A hot folder: images that a camera or PLC drops in are taken once fully written, each exactly once, in
    name order. Files already there at the start are taken too. "Fully written" means the same size and
    modification time on two polls in a row *and* a complete decode: a writer that pauses mid-file leaves a file
    that fails to decode, which is retried when it changes and reported unreadable only after it stayed
    unchanged for ``give_up`` seconds. Frames never drop: the folder keeps the files, so the reader waits."""

    kind = "folder"
    live = False

    def __init__(self, folder: Path, poll: float = FOLDER_POLL_S, give_up: float = UNREADABLE_AFTER_S,
                 log: LogCallback | None = None) -> None:
        super().__init__(str(folder))
        if not folder.is_dir():
            raise DataError("hot folder not found", folder)
        self.folder, self.poll, self.give_up = folder, poll, give_up
        self.log = log or (lambda message: None)
        self.taken: set[str] = set()
        self.unreadable = 0

    def frames(self) -> Iterator[SourceFrame]:
        seen: dict[str, tuple[int, int]] = {}  # name -> (size, mtime) at the last poll
        failed: dict[str, tuple[tuple[int, int], float]] = {}  # name -> (signature, when) of a failed decode
        while not self.stopping.is_set():
            for path in sorted(self._images(), key=natural_key):
                if path.name in self.taken:
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    seen.pop(path.name, None)
                    continue
                signature = (stat.st_size, stat.st_mtime_ns)
                stable, seen[path.name] = stat.st_size > 0 and seen.get(path.name) == signature, signature
                if not stable:
                    continue
                if path.name in failed and failed[path.name][0] == signature:
                    if time.monotonic() - failed[path.name][1] > self.give_up:
                        self.taken.add(path.name)
                        self.unreadable += 1
                        self.log(f"{path}: skipped, still not a readable image after {self.give_up:g} s")
                    continue
                try:
                    image = read_rgb(path)
                except (AnomalensError, OSError):
                    failed[path.name] = (signature, time.monotonic())  # perhaps still being written
                    continue
                self.taken.add(path.name)
                seen.pop(path.name, None)
                failed.pop(path.name, None)
                yield SourceFrame(image, time.time(), file=str(path))
                if self.stopping.is_set():
                    return
            self.stopping.wait(self.poll)

    def _images(self) -> list[Path]:
        try:
            return [p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")]
        except OSError as exc:
            self.log(f"cannot list the hot folder ({exc})")
            return []


def open_source(
    spec: str,
    *,
    realtime: bool = False,
    on_lost: LossCallback | None = None,
    log: LogCallback | None = None,
) -> Source:
    """The source a ``--source`` value names: a URL (rtsp://, http(s)://, rtmp://), ``/dev/videoN`` (V4L2),
    a folder (hot folder) or a video file."""
    if spec.startswith(STREAM_SCHEMES):
        return StreamSource(spec, "stream", on_lost, log)
    path = Path(spec)
    if spec.startswith("/dev/video"):
        if not path.exists():
            raise DataError("camera device not found", path)
        return StreamSource(spec, "v4l2", on_lost, log)
    if path.is_dir():
        return FolderSource(path, log=log)
    if not path.exists():
        raise DataError("source not found (give a video file, a folder, an rtsp:// or http(s):// URL, or /dev/videoN)", path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise DataError("a single image is not a live source; give the folder it is dropped into", path)
    return VideoFileSource(path, realtime)
