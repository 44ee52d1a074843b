"""Where live frames come from: a video file, an RTSP/HTTP(S) stream, a V4L2 camera or a hot folder of images.

Every source yields :class:`SourceFrame` objects (native RGB ``uint8`` ``(H, W, 3)``, the time it arrived, and for
hot folders the file it came from) until it ends or :meth:`Source.stop` is called. Streams and cameras reconnect
with back-off when they drop: at the drop they yield a :class:`SourceBreak` (so that the watcher closes an open
event then, not when the stream is back), and each gap is reported to ``on_lost`` with its start (the last
frame's arrival), end, reason and the last frame before it, so the watcher can log a ``source_lost`` event.

>>> source = open_source("rtsp://127.0.0.1:8554/live")          # doctest: +SKIP
>>> for frame in source.frames(): ...                            # doctest: +SKIP
>>> open_source("incoming/").kind                                # doctest: +SKIP
'folder'
"""

from __future__ import annotations

import json
import os
import stat as file_mode
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from anomalens.data.preprocessing import IMAGE_EXTENSIONS, Preprocessing, read_rgb
from anomalens.data.video_io import frame_to_rgb, natural_key, open_clip, stated_rate, timing_fps
from anomalens.data.video_io import _short as short_error
from anomalens.errors import AnomalensError, DataError
from anomalens.runtime import write_text_atomic

STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://")
OPEN_TIMEOUT_S = 10.0  # seconds to wait for a stream to answer
READ_TIMEOUT_S = 5.0  # seconds without a packet before a stream counts as lost
# reconnection back-off: doubles from the first to the cap; a 4 s cap means a stream that comes back is
# picked up within about 4 s however long it was away
FIRST_RETRY_S, MAX_RETRY_S = 0.5, 4.0
FOLDER_POLL_S = 0.2  # a hot folder is looked at this often
# a file is read once its size and modification time held still this long: a copier that pauses for less is not
# read mid-file (formats with an end marker, PNG and JPEG, are also checked for it, so a longer pause is safe there)
FOLDER_SETTLE_S = 0.5
UNREADABLE_AFTER_S = 10.0  # a file that is not a complete image and does not change for this long is skipped as broken
# the folder is listed again only when its modification time changed (a file added, removed or renamed), and at
# least this often in any case (file systems whose folder times lag, e.g. network shares)
FOLDER_RELIST_S = 2.0
# files already scored whose size and time are checked per poll, in turn: one rewritten in place under the same
# name (a camera's "latest.bmp") is scored again, without a stat of every file of a large folder every poll
RECHECK_PER_POLL = 256
TEMPORARY_SUFFIXES = (".tmp", ".part", "~", ".crdownload")  # names of files still being written (write, then rename)
STATE_FILE = "hot_folder_state.json"  # in the watch's output folder: the hot folder's files already scored


@dataclass
class SourceFrame:
    image: np.ndarray  # RGB uint8 (H, W, 3)
    arrived: float  # time.time() when the frame was read: what is reported (CSV, started_at)
    file: str | None = None  # the image file, for hot folders (non-UTF-8 bytes of its name as \xNN: see shown_name)
    index: int = -1  # the frame's number among all frames read (set by the watcher's reader; drops leave gaps)
    resumed: bool = False  # the first frame after the source broke off and came back (no motion across the break)
    # time.monotonic() when it was read: ages and latencies (a wall-clock step must not drop or delay frames)
    clock: float = field(default_factory=time.monotonic)
    stamp: tuple[str, int, int] | None = None  # a hot folder's file: (its name, size, mtime_ns) when it was read
    # seconds from the source's first frame to this one by its own timestamps (a video file's; None: frame / fps)
    time: float | None = None


@dataclass
class SourceBreak:
    """Yielded by a stream at the moment it drops, after its last frame: what was open then is closed then."""

    lost_at: float  # time.time() when the last data came (when the drop began, as far as anyone can tell)
    reason: str


@dataclass
class SourceGap:
    """A stretch of time without frames: the stream dropped and came back (or the watch ended first)."""

    started: float  # time.time(): when the last data came before the gap (or the first failed connection)
    ended: float
    reason: str
    attempts: int
    reconnected: bool = True  # False: the watch ended before the source came back
    after_frame: int = -1  # the number of the last frame before the gap (-1: none yet)
    seconds: float | None = None  # its length, by time.monotonic() (None: ended - started)


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

    def frames(self) -> Iterator[SourceFrame | SourceBreak]:  # pragma: no cover - interface
        """The frames, in order; a source that can drop and come back yields a :class:`SourceBreak` at the drop."""
        raise NotImplementedError

    def stop(self) -> None:
        self.stopping.set()


class VideoFileSource(Source):
    """A video file, decoded once front to back (by :mod:`anomalens.data.video_io`, the one place that decodes
    video files); at its own pace with ``realtime``, else as fast as the scorer takes it (then no frame is
    dropped: the reader waits). Each frame carries its time from the file's timestamps, broken ones repaired as
    analyze-video repairs them (:class:`~anomalens.data.video_io.FrameTimer`), so that a variable frame rate times
    events as there; a file without timestamps gives None (frame / fps)."""

    kind = "file"

    def __init__(self, path: Path, realtime: bool = False, log: LogCallback | None = None) -> None:
        super().__init__(str(path))
        self.clip = open_clip(path, Preprocessing(image_size=None))  # native frames: iter_timed() only
        self.stated_fps, self.realtime, self.live = self.clip.stated_fps, realtime, realtime
        self.log = log or (lambda message: None)
        # once the file has ended: frames whose broken timestamp was repaired, and new clocks started (None before)
        self.repaired: int | None = None
        self.restarts: int | None = None

    def frames(self) -> Iterator[SourceFrame]:
        started = time.monotonic()
        for index, (image, seconds) in enumerate(self.clip.iter_timed()):
            if self.stopping.is_set():
                return
            if self.realtime:  # play at the file's own pace: each frame when its timestamp says
                delay = started + (index / self.fps if seconds is None else seconds) - time.monotonic()
                if delay > 0 and self.stopping.wait(delay):
                    return
            yield SourceFrame(image, time.time(), time=seconds)
        repaired, restarts = self.clip.timestamp_repairs() or (0, 0)  # the file has ended
        self.restarts = restarts  # first: a status written meanwhile reads both once ``repaired`` is set
        self.repaired = repaired
        note = self.clip.timestamp_note()
        if note:
            self.log(f"warning: {self.name}: broken timestamps: {note}")


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
        # (time.time(), time.monotonic()) when the latest two packets with data came out of the demuxer
        self.data_times: deque[tuple[float, float]] = deque(maxlen=2)

    def _decoded(self, container: Any, stream: Any) -> Iterator[Any]:
        """The stream's frames as decoded (as ``container.decode`` gives them), noting when packets came."""
        for packet in container.demux(stream):
            if packet.size:
                self.data_times.append((time.time(), time.monotonic()))
            yield from packet.decode()

    def _last_data(self) -> tuple[float, float]:
        """When the source last sent data, (time.time(), time.monotonic()). RTSP's depacketiser holds each frame
        until the next one begins, so after a stall the last frame comes out only when the read times out, seconds
        later; its data came about a frame period after the frame before it."""
        if not self.data_times:
            return time.time(), time.monotonic()
        (wall, clock), period = self.data_times[0], 1.0 / self.fps
        last_wall, last_clock = self.data_times[-1]
        return min(last_wall, wall + period), min(last_clock, clock + period)

    def _open(self):
        import av

        if self.kind == "v4l2":
            return av.open(self.url, format="v4l2", timeout=(self.open_timeout, self.read_timeout))
        options = {"rtsp_transport": "tcp"} if self.url.startswith(("rtsp://", "rtsps://")) else {}
        return av.open(self.url, options=options, timeout=(self.open_timeout, self.read_timeout))

    def frames(self) -> Iterator[SourceFrame | SourceBreak]:
        import av

        # gap: when frames stopped (the last one's arrival, or the first failed connection), and the last frame before
        retry, gap_start, gap_clock, reason, attempts = FIRST_RETRY_S, None, 0.0, "", 0
        count = 0  # frames yielded so far
        while not self.stopping.is_set():
            try:
                container = self._open()
            except (av.FFmpegError, OSError) as exc:
                if gap_start is None:
                    gap_start, gap_clock = time.time(), time.monotonic()
                reason, attempts = reason or f"cannot connect ({short_error(exc)})", attempts + 1
                self.log(f"{self.name}: {short_error(exc)}; retrying in {retry:.1f} s")
                if self.stopping.wait(retry):
                    break
                retry = min(retry * 2, MAX_RETRY_S)
                continue
            self.connections += 1
            delivered = False
            self.data_times.clear()
            try:
                stream = container.streams.video[0]
                self.stated_fps = stated_rate(container, stream) or self.stated_fps
                if gap_start is not None:
                    seconds = time.monotonic() - gap_clock
                    self.on_lost(SourceGap(gap_start, time.time(), reason, attempts, after_frame=count - 1,
                                           seconds=seconds))
                    self.log(f"{self.name}: reconnected after {seconds:.1f} s")
                gap_start, reason, attempts, retry = None, "", 0, FIRST_RETRY_S
                # slice threads only: frame threads would hold each frame back by one frame per thread
                stream.thread_type = "SLICE"
                resumed = self.connections > 1
                for frame in self._decoded(container, stream):
                    # colours converted as analyze-video converts them (the stream's own matrix and range)
                    image = frame_to_rgb(frame)
                    count, delivered = count + 1, True
                    yield SourceFrame(image, time.time(), resumed=resumed)
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
                # the drop began when the last data came, not when a read timeout noticed it seconds later (the
                # decoder's last frame comes out only then)
                gap_start, gap_clock = self._last_data() if delivered else (time.time(), time.monotonic())
                attempts = 0
                self.log(f"{self.name}: {reason}; reconnecting")
                if delivered:  # an event open now is closed now, not merged with what comes after the outage
                    yield SourceBreak(gap_start, reason)
        if gap_start is not None:  # stopped while the stream was away: the gap is still worth logging
            self.on_lost(SourceGap(gap_start, time.time(), reason or "stopped while disconnected", attempts,
                                   reconnected=False, after_frame=count - 1, seconds=time.monotonic() - gap_clock))


def shown_name(path: str) -> str:
    """A file name as reports show it: valid UTF-8 always, bytes that are not UTF-8 (a Latin-1 name from a network
    share) written as ``\\xNN``, the same in the CSV and in every JSON message."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def temporary_name(name: str) -> bool:
    """Names of files still being written by write-then-rename copiers (hidden, ``.tmp``, ``.part``, ``~``, ...)."""
    return name.startswith(".") or name.lower().endswith(TEMPORARY_SUFFIXES)


NO_END = "no end marker:"  # how missing_end's reasons begin
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk (no data, fixed CRC): the last bytes of every PNG
JPEG_END = b"\xff\xd9"  # the end-of-image marker


def missing_end(path: str, size: int) -> str | None:
    """Why a PNG or JPEG file is not complete yet (no end marker at its end), else None. A file preallocated to its
    full size and filled in later (a Windows copy to a share, some FTP servers) decodes while still half zeros;
    its end marker comes last. Zero bytes after the marker (padding some cameras add) are allowed. Other formats
    (BMP, TIFF, WebP) have no end marker: for them only the settle time and the decode count."""
    suffix = os.path.splitext(path)[1].lower()
    end = PNG_END if suffix == ".png" else JPEG_END if suffix in (".jpg", ".jpeg") else None
    if end is None:
        return None
    with open(path, "rb") as file:
        file.seek(max(0, size - 65536))
        tail = file.read().rstrip(b"\x00")
    if tail.endswith(end):
        return None
    return f"{NO_END} {'PNG IEND chunk' if end is PNG_END else 'JPEG end marker'} at the end (incomplete or corrupt)"


@dataclass
class _Waiting:
    """A file seen in the hot folder, not taken yet."""

    signature: tuple[int, int]  # (size, mtime_ns) when first seen unchanged
    since: float  # time.monotonic() since when it has been unchanged
    problem: str | None = None  # why it could not be read with this signature (retried only when it changes)


class FolderSource(Source):
    """A hot folder: images that a camera or PLC drops in are taken once fully written, each once, in name
    order. Files already there at the start are taken too (except those an earlier watch into the same output
    folder scored and that did not change since: :meth:`skip_unchanged`). "Fully written" means: the same size and
    modification time for ``settle`` seconds, the format's end marker where it has one (PNG, JPEG), a complete
    decode, and the same size and time again after the decode (else the result is dropped and the file read again
    once it settles). A file that is not a complete image and stays unchanged for ``give_up`` seconds is skipped
    with one logged line. Temporary names (``.name``, ``*.tmp``, ``*.part``, ``*~``, ``*.crdownload``) are left
    alone, so write-then-rename works. A name seen again with another file behind it (the old one moved away, a
    rename over it, a rewrite in place) is a new image. Frames never drop: the folder keeps the files, so the
    reader waits.

    ``allowed_roots`` (resolved folders; None: no check, as ``anomalens watch`` does): an entry whose real path
    (links followed) lies outside every one of them is skipped with one logged line, and an allowed one is read
    through the real path that was checked, so a link swapped meanwhile does not lead elsewhere. The web UI passes
    its data folders: a link in a hot folder must not show it a file it may not open itself."""

    kind = "folder"
    live = False

    def __init__(self, folder: Path, poll: float = FOLDER_POLL_S, give_up: float = UNREADABLE_AFTER_S,
                 log: LogCallback | None = None, settle: float = FOLDER_SETTLE_S,
                 relist: float = FOLDER_RELIST_S, allowed_roots: Sequence[Path] | None = None) -> None:
        super().__init__(str(folder))
        if not folder.is_dir():
            raise DataError("hot folder not found", folder)
        self.folder, self.poll, self.give_up, self.settle, self.relist = folder, poll, give_up, settle, relist
        self.log = log or (lambda message: None)
        # name -> (inode, size, mtime_ns) of each file taken (scored or skipped), only while it is still listed
        self.taken: dict[str, tuple[int, int, int]] = {}
        self.listed: frozenset[str] = frozenset()  # the image names of the latest listing
        self.unreadable = 0
        self.polls = self.listings = 0  # how often it looked, how often it listed the folder (status, tests)
        self.earlier: dict[str, tuple[int, int]] = {}  # name -> (size, mtime_ns) an earlier watch scored
        self._folder_time: int | None = None  # the folder's mtime_ns at the latest listing
        self._listed_at = 0.0  # time.monotonic() and time.time_ns() of the latest listing
        self._listed_ns = 0
        self._rechecks: list[str] = []  # taken names still to re-check in this round
        self._list_error: str | None = None  # the latest listing's error, logged once
        self.allowed_roots = None if allowed_roots is None else tuple(Path(root).resolve() for root in allowed_roots)
        self._outside: dict[str, tuple[int, int, int]] = {}  # name -> lstat signature of an entry skipped as outside

    def skip_unchanged(self, files: dict[str, tuple[int, int]]) -> None:
        """Files (name -> (size, mtime_ns)) an earlier watch scored: not scored again while unchanged."""
        self.earlier = dict(files)

    def frames(self) -> Iterator[SourceFrame]:
        waiting: dict[str, _Waiting] = {}
        first = True
        while not self.stopping.is_set():
            self.polls += 1
            candidates = self._rechecked() | set(waiting)
            listing = self._list()
            if listing is not None:
                self.listed = frozenset(listing)
                self.listings += 1  # after `listed`: a reader of both never sees a count without its names
                for gone in [name for name in self.taken if name not in listing]:
                    del self.taken[gone]  # moved away or deleted: a new file under its name is a new image
                for gone in [name for name in waiting if name not in listing]:
                    del waiting[gone]
                for gone in [name for name in self._outside if name not in listing]:
                    del self._outside[gone]
                for name, inode in listing.items():
                    taken = self.taken.get(name)
                    if taken is None or taken[0] != inode:  # new, or another file renamed over it
                        candidates.add(name)
            # only the files not taken are sorted and looked at: polling costs little however many are scored
            for name in sorted(candidates, key=lambda n: natural_key(Path(n))):
                frame = self._try(name, waiting)
                if frame is not None:
                    yield frame
                if self.stopping.is_set():
                    return
            if first and listing is not None:
                first, self.earlier = False, {}  # checked against the first listing; the rest are gone
            self.stopping.wait(self.poll)

    def _list(self) -> dict[str, int] | None:
        """Image name -> inode of the folder's files (None: the folder did not change since the latest listing)."""
        try:
            folder_time = os.stat(self.folder).st_mtime_ns
            # an unchanged folder time is trusted only if it is older than the listing by a second, so that a file
            # added in the same clock tick as the latest listing is not missed
            if (folder_time == self._folder_time and self._listed_ns - folder_time > 1_000_000_000
                    and time.monotonic() - self._listed_at < self.relist):
                return None
            listed_ns, listed_at = time.time_ns(), time.monotonic()
            names: dict[str, int] = {}
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    name = entry.name
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS and not temporary_name(name):
                        names[name] = self._inode(entry)
        except OSError as exc:
            if str(exc) != self._list_error:  # once, not five times a second while the share is away
                self.log(f"cannot list the hot folder ({exc})")
            self._list_error = str(exc)
            return None
        self._folder_time, self._listed_ns, self._listed_at, self._list_error = folder_time, listed_ns, listed_at, None
        return names

    @staticmethod
    def _inode(entry: os.DirEntry) -> int:
        """The inode of the file behind the entry: a link's target's, as :meth:`_try` records it (the link's own
        never matched that, so a linked image was read again at every listing). A dangling link: its own."""
        if entry.is_symlink():  # from the listing itself: no extra call for plain files
            try:
                return entry.stat().st_ino
            except OSError:
                pass
        return entry.inode()

    def _rechecked(self) -> set[str]:
        """Taken files (a few per poll, in turn) that changed since: to be read again."""
        if not self._rechecks:
            self._rechecks = list(self.taken)
        batch, self._rechecks = self._rechecks[:RECHECK_PER_POLL], self._rechecks[RECHECK_PER_POLL:]
        changed = set()
        for name in batch:
            taken = self.taken.get(name)
            if taken is None:
                continue
            try:
                st = os.stat(os.path.join(self.folder, name))
            except OSError:
                continue  # gone: the next listing forgets it
            if (st.st_ino, st.st_size, st.st_mtime_ns) != taken:
                del self.taken[name]
                changed.add(name)
        return changed

    def _try(self, name: str, waiting: dict[str, _Waiting]) -> SourceFrame | None:
        """The file's frame if it is complete now; else it waits (or is skipped as broken) and None."""
        path = read_from = os.path.join(self.folder, name)
        if self.allowed_roots is not None:
            read_from = self._confined(name, path)
            if read_from is None:
                waiting.pop(name, None)
                return None
        try:
            st = os.stat(path)
        except OSError:
            waiting.pop(name, None)
            return None
        signature, now = (st.st_size, st.st_mtime_ns), time.monotonic()
        if self.earlier.pop(name, None) == signature:  # scored by an earlier watch, unchanged since
            self.taken[name] = (st.st_ino, *signature)
            return None
        seen = waiting.get(name)
        if seen is None or seen.signature != signature:  # new or still changing: wait for it to settle
            waiting[name] = _Waiting(signature, now)
            return None
        if now - seen.since < self.settle:
            return None
        if seen.problem is None:
            image, problem = self._read(read_from, st)
            if problem is None:
                try:
                    after = os.stat(path)
                except OSError:
                    waiting.pop(name, None)
                    return None
                if (after.st_size, after.st_mtime_ns) != signature:  # written to while it was read: not this image
                    waiting[name] = _Waiting((after.st_size, after.st_mtime_ns), time.monotonic())
                    return None
                del waiting[name]
                self.taken[name] = (st.st_ino, *signature)
                return SourceFrame(image, time.time(), file=shown_name(path), stamp=(name, *signature))
            seen.problem = problem
        if now - seen.since >= self.give_up:  # unchanged all this time: broken, not still being written
            del waiting[name]
            self.taken[name] = (st.st_ino, *signature)
            if seen.problem.startswith(NO_END):
                # finished after all: some cameras append data after the end marker, and a complete image
                # skipped would be a part never inspected, worse than one scored late
                image, problem = self._read(read_from, st, check_end=False)
                if problem is None:
                    self.log(f"{shown_name(path)}: {seen.problem}, but unchanged for {self.give_up:g} s and "
                             "readable: scored")
                    return SourceFrame(image, time.time(), file=shown_name(path), stamp=(name, *signature))
            self.unreadable += 1
            self.log(f"{shown_name(path)}: skipped, {seen.problem}; unchanged for {self.give_up:g} s")
        return None

    def _confined(self, name: str, path: str) -> str | None:
        """The entry's real path when it lies under an allowed root; else None, and the entry is taken (skipped),
        logged once while what it leads to is unchanged."""
        real = os.path.realpath(path)
        if any(Path(real).is_relative_to(root) for root in self.allowed_roots or ()):
            return real
        try:
            st = os.stat(path)  # as the listing and the re-checks see it: not a candidate again while unchanged
        except OSError:
            try:
                st = os.lstat(path)  # a dangling link
            except OSError:
                return None  # gone: the next listing forgets it
        signature = (st.st_ino, st.st_size, st.st_mtime_ns)
        if self._outside.get(name) != signature:
            self._outside[name] = signature
            self.log(f"{shown_name(path)}: skipped, it leads outside the allowed folders")
        self.taken[name] = signature
        return None

    def _read(self, path: str, st: os.stat_result, check_end: bool = True) -> tuple[np.ndarray | None, str | None]:
        """The image, or why it is not a complete image (yet); ``check_end`` False: the end marker is not asked."""
        if not file_mode.S_ISREG(st.st_mode):
            return None, "not a regular file"
        if st.st_size == 0:
            return None, "empty file (0 bytes)"
        try:
            problem = missing_end(path, st.st_size) if check_end else None
            if problem is not None:
                return None, problem
            return read_rgb(path), None
        except (AnomalensError, OSError) as exc:
            return None, f"not a readable image ({short_error(exc)})"


def load_folder_state(output: Path, folder: Path, log: LogCallback | None = None) -> dict[str, tuple[int, int]]:
    """The files (name -> (size, mtime_ns)) an earlier watch of ``folder`` into ``output`` scored ({} when none).
    A state that cannot be read is logged and ignored: then every image in the folder is scored again."""
    log = log or (lambda message: None)
    path = output / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log(f"{path}: not readable ({short_error(exc)}); every image in the hot folder is scored again")
        return {}
    files = state.get("files") if isinstance(state, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v) for v in files.values()):
        log(f"{path}: field 'files' is not a map of names to [size, mtime_ns]; every image in the hot folder is "
            "scored again")
        return {}
    if state.get("folder") != str(folder.resolve()):  # the output folder was used for another hot folder before
        return {}
    return {name: (size, mtime) for name, (size, mtime) in files.items()}


def save_folder_state(output: Path, folder: Path, files: dict[str, tuple[int, int]]) -> None:
    """Write the files scored (name -> (size, mtime_ns)) atomically, for :func:`load_folder_state`."""
    state: dict[str, Any] = {"folder": str(folder.resolve()), "files": {name: list(sig) for name, sig in files.items()}}
    # compact: a folder of 50,000 files is 3.7 MB indented, a third of it less without the indentation
    write_text_atomic(output / STATE_FILE, json.dumps(state, separators=(",", ":")) + "\n")


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
    return VideoFileSource(path, realtime, log=log)
