"""Reading and writing video: the one place where video frames are decoded and encoded.

A :class:`VideoClip` is a video file (mp4, avi, mov, mkv, ... decoded with PyAV) or a folder of frames
(jpg, png, tif; natural name order). It is re-iterable: every ``iter(clip)`` decodes front to back once,
never seeks, and yields frames prepared by the shared :class:`~anomalens.data.preprocessing.Preprocessing`
(``uint8`` tensors ``(3, H, W)``), so memory stays bounded on long videos. ``iter_native()`` yields the
original RGB frames for rendering.

Frame ``t`` of a clip is at ``t / fps`` seconds, unless the file's own timestamps say otherwise (a variable frame
rate: a camera that skips frames when nothing moves, a recorder that drops some): then
:meth:`VideoClip.frame_times` gives each frame's presentation time, which events, tables, timelines and the
side-by-side video use in place of ``t / fps``. A missing or out-of-order timestamp is handled by the one policy of
:class:`FrameTimer`, the same for analyze-video and a live watch on a file.

:func:`write_video` writes what browsers play: H.264, yuv420p, MP4 with ``+faststart``, even width and
height, written to a temporary file and renamed.

>>> clip = open_clip("conveyor.mp4", Preprocessing(image_size=(256, 256)))   # doctest: +SKIP
>>> clip.fps, clip.num_frames                                                 # doctest: +SKIP
(25.0, 750)
>>> for frame in clip: ...                                                    # doctest: +SKIP
>>> write_video("out.mp4", (frame for frame in clip.iter_native()), clip.fps)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import re
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from anomalens.data.pixels import image_size_of
# torch-free at import: the runtime of exported video bundles (anomalens.inference) decodes with this module too
from anomalens.data.pixels import IMAGE_EXTENSIONS, read_rgb
from anomalens.errors import ConfigError, DataError
from anomalens.limits import MAX_FPS, check_image_pixels, is_frame_rate
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_path

if TYPE_CHECKING:
    import torch

    from anomalens.data.preprocessing import Preprocessing

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
# the rate assumed for timing (events, timelines, the written video) when nothing states one: a folder of frames, a
# raw elementary stream without timing, arrays. An assumed rate is no measurement: ``stated_fps`` stays None
DEFAULT_FRAME_FOLDER_FPS = 25.0
_AVFMT_NOTIMESTAMPS = 0x80  # FFmpeg's flag of containers that carry no timestamps (raw H.264, HEVC, MJPEG, MPEG-4)


def timing_fps(stated_fps: float | None) -> float:
    """The rate that times events, timelines and written videos: the stated one, else DEFAULT_FRAME_FOLDER_FPS
    (assumed, so never used to measure motion per second)."""
    return stated_fps or DEFAULT_FRAME_FOLDER_FPS


def natural_key(path: Path) -> list[Any]:
    """Sort ``frame2.png`` before ``frame10.png`` (plain name order would not)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_frames(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder`` in natural name order (hidden files skipped)."""
    folder = Path(folder)
    frames = [
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return sorted(frames, key=natural_key)


def is_video_file(path: str | Path) -> bool:
    path = Path(path)
    return path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS


def is_frame_folder(path: str | Path) -> bool:
    """A folder holding at least one image file directly (a clip stored as frames)."""
    path = Path(path)
    if not path.is_dir():
        return False
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") for p in path.iterdir())


class VideoClip:
    """One clip, decoded on demand; ``start``/``end`` select frames ``[start, end)`` (see :meth:`segment`)."""

    def __init__(
        self,
        path: str | Path,
        preprocessing: Preprocessing,
        reporter: Reporter = SILENT,
        *,
        fps: float | None = None,
        start: int = 0,
        end: int | None = None,
        _source: "_Source | None" = None,
    ) -> None:
        self.path = Path(path)
        self.preprocessing = preprocessing
        self.reporter = reporter
        self.start = int(start)
        self.end = None if end is None else int(end)
        self._source = _source if _source is not None else _open_source(self.path, fps)
        # the rate the file (its container or bitstream), labels_frame.json or the user states; None when nothing
        # does. ``fps`` is then DEFAULT_FRAME_FOLDER_FPS, good for timing, never for measuring motion per second
        self.stated_fps: float | None = self._source.stated_fps
        self.fps: float = timing_fps(self.stated_fps)
        self.frame_size: tuple[int, int] = self._source.frame_size  # native (H, W)
        self.truncated = False  # set once a decode stopped early
        self._segment_times: Any = _NOT_YET  # frame times up to self.end, read by a pass that stopped there
        self.decoded_frames: int | None = None  # set after a full pass

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name

    @property
    def num_frames(self) -> int | None:
        """Frames in this clip (segment applied), or None when the container does not say."""
        total = self.decoded_frames if self.decoded_frames is not None else self._source.num_frames
        if total is None:
            return None
        stop = total if self.end is None else min(self.end, total)
        return max(0, stop - self.start)

    def count_frames(self) -> int:
        """Exact frame count: the container's header when trustworthy, else one decode pass."""
        if self.num_frames is not None and not self._source.count_is_estimate:
            return self.num_frames
        if self.decoded_frames is None:
            for _ in self.iter_native():
                pass
        return self.num_frames or 0

    def segment(self, start: int, end: int | None = None) -> "VideoClip":
        """Frames ``[start, end)`` of this clip (relative to it), still decoded front to back."""
        if start < 0 or (end is not None and end <= start):
            raise ValueError(f"invalid segment [{start}, {end})")
        new_start = self.start + start
        new_end = None if end is None else self.start + end
        if self.end is not None:
            new_end = self.end if new_end is None else min(new_end, self.end)
        clip = VideoClip(self.path, self.preprocessing, self.reporter, start=new_start, end=new_end, _source=self._source)
        return clip

    def frame_times(self) -> np.ndarray | None:
        """Seconds from this clip's first frame to each of its frames, as the file's timestamps say (a broken one
        repaired by :class:`FrameTimer`, as a live watch repairs it), where they are uneven (a variable frame
        rate); None where frame ``t`` is at ``t / fps``: frames evenly spaced at the clip's rate (to half a frame),
        a frame folder, a file without timestamps, or a rate the user stated (``fps``, which overrides the file's
        timing). Decodes the clip once unless a full pass already ran."""
        if self._source.times is _NOT_YET and self._segment_times is _NOT_YET:
            for _ in self.iter_native():
                pass
        # a segment that ends before the file stops its pass early: the times read up to its end serve it
        times = self._source.times if self._source.times is not _NOT_YET else self._segment_times
        if times is None:
            return None
        # a segment's pass that stopped at its end leaves the count unknown: its times say how many it holds
        count = min(self.num_frames or len(times) - self.start, len(times) - self.start)
        if count <= 0:
            return None
        times = times[self.start : self.start + count] - times[self.start]
        # evenly timed: exactly t / fps, so that a constant-rate video keeps the times it always had, bit for bit
        if np.all(np.abs(times - np.arange(count) / self.fps) < 0.5 / self.fps):
            return None
        return times

    def timestamp_repairs(self) -> tuple[int, int] | None:
        """``(repaired, restarts)`` over the whole file, as :class:`FrameTimer` counts them: frames whose
        timestamp was missing or unusable (placed a period after the frame before, or re-anchored) and new clocks
        started (joined recordings); None before a full pass. A file without timestamps repairs nothing."""
        return self._source.repairs

    def timestamp_note(self) -> str | None:
        """A warning's words for :meth:`timestamp_repairs` (what was done to the file's broken timestamps); None
        where nothing was repaired or before a full pass."""
        return FrameTimer.describe(*(self.timestamp_repairs() or (0, 0)))

    def iter_native(self) -> Iterator[np.ndarray]:
        """Native RGB ``uint8`` frames ``(H, W, 3)`` of this clip, front to back."""
        for frame, _ in self.iter_timed():
            yield frame

    def iter_timed(self) -> Iterator[tuple[np.ndarray, float | None]]:
        """:meth:`iter_native`'s frames, each with its time in seconds from the stream's first frame, as the file's
        timestamps give it by :class:`FrameTimer`'s policy (None: ``t / fps``; a frame folder, a file without
        timestamps). A live watch times its events by them; :meth:`frame_times` gives the same times."""
        index = -1
        stopped_early = False
        timer = FrameTimer(self.fps)  # every decoded frame's, from the stream's first: kept after a full pass
        for index, (frame, stamp) in enumerate(self._source.frames(self._warn_truncated)):
            seconds = timer(stamp)
            if index < self.start:
                continue
            if self.end is not None and index >= self.end:
                stopped_early = True
                self._segment_times = timer.times(self.end)
                break
            yield frame, seconds
        if not stopped_early:
            self._source.times = timer.times()
            self._source.repairs = (timer.repaired, timer.restarts)
            decoded = index + 1
            if decoded == 0:
                raise DataError("no frame could be decoded (zero frames)", self.path)
            expected = self._source.num_frames
            if expected is not None and decoded < expected and not self._source.count_is_estimate:
                self._warn_truncated(f"only {decoded} of {expected} frames could be decoded")
            self.decoded_frames = decoded
            self._source.num_frames = decoded
            self._source.count_is_estimate = False
            if self.start >= decoded:
                raise DataError(f"segment starts at frame {self.start} but the clip has {decoded} frames", self.path)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for frame in self.iter_native():
            yield self.preprocessing.prepare_array(frame)

    def _warn_truncated(self, detail: str) -> None:
        self.truncated = True
        if not self._source.warned:
            self._source.warned = True
            self.reporter.log(f"warning: {self.path}: truncated or damaged video: {detail}; using the frames that decoded")

    def __repr__(self) -> str:
        return f"VideoClip({str(self.path)!r}, fps={self.fps:g}, frames={self.num_frames}, start={self.start}, end={self.end})"


def open_clip(
    path: str | Path, preprocessing: Preprocessing, reporter: Reporter = SILENT, *, fps: float | None = None
) -> VideoClip:
    """Open a video file or a folder of frames; raise :class:`DataError` naming the file if it cannot be used.

    ``fps`` states the rate of a frame folder or a file that states none (then ``clip.fps`` assumes 25 and
    ``clip.stated_fps`` is None) or overrides a file's.
    """
    return VideoClip(path, preprocessing, reporter, fps=fps)


# ---- sources: where native frames come from ------------------------------------------------------------


_NOT_YET: Any = object()  # _Source.times before a full pass


class _Source:
    stated_fps: float | None  # None: nothing states the rate (see VideoClip.stated_fps)
    frame_size: tuple[int, int]
    num_frames: int | None
    count_is_estimate: bool = False
    warned: bool = False
    # seconds of every frame from the stream's first (FrameTimer's), set by a full pass; None where no frame has a time
    times: np.ndarray | None = _NOT_YET
    repairs: tuple[int, int] | None = None  # FrameTimer's (repaired, restarts) over the file, set by a full pass

    def frames(self, warn) -> Iterator[tuple[np.ndarray, float | None]]:  # pragma: no cover - interface
        """Native frames, each with its presentation time in seconds from the stream's first (None: unknown)."""
        raise NotImplementedError


# a timestamp that steps back by more than this (seconds) starts a new clock (two recordings joined, a stream's
# clock restarted) rather than being one broken timestamp: no real frame steps back so far
RESTART_STEP = 1.0


class FrameTimer:
    """Each frame's time in seconds from a file's timestamps (``stamp``: seconds, or None where the frame has none),
    given frame by frame as the frames come, so that a live watch, which cannot see the file first, times every
    frame as ``analyze-video`` does after its pass (:meth:`times`). One policy for broken timestamps:

    * a frame keeps its own timestamp when it is later than the last one kept, so that one missing, repeated or
      stepped-back timestamp costs a variable-rate file only that frame's real time, not every frame's after it;
    * a frame without a usable one is a frame period (``1 / fps``) after the frame before;
    * until the first timestamp, frames are at ``t / fps`` (None), and the first timestamped frame is a period
      after the frame before it: a file without any timestamp stays at ``t / fps``;
    * a timestamp that steps back by more than ``RESTART_STEP`` starts a new clock (files joined, a restarted
      stream): that frame is a period after the frame before, and the frames after it follow the new clock;
    * one timestamp far off is one bad frame, not a new clock: a frame that steps back by more than
      ``RESTART_STEP`` right after a frame that jumped forward by more than ``RESTART_STEP`` (beyond a period)
      is two periods after the frame before the jump, and a frame that returns to the old clock right after a
      step back resumes it; so only the bad frame keeps a wrong time. A jump that the frames after it continue
      is a real gap (a variable-rate camera that paused) and is kept.

    Times always increase: a kept timestamp that a guess before it passed is placed a tick of the written
    video's clock (``1 / TIMED_CLOCK``) after that guess. The one exception is the frame given as it comes with a
    far-future bad timestamp (nothing after it is seen yet); :meth:`times` places it a period after the frame
    before it once the next frame shows it was bad.

    What was repaired is counted, so that a user can be told: ``repaired``, the frames before the first timestamp
    (at ``t / fps``) and those after it whose time is not their own timestamp (guessed a period on, or
    re-anchored; one only moved a tick to stay after a guess keeps its timestamp to 11 microseconds and is not
    counted), and ``restarts``, the new clocks started (a step back that the next frame undoes was one bad
    timestamp, not a clock). A file without timestamps counts nothing.

    >>> timer = FrameTimer(fps=4)  # a variable rate with one timestamp missing and one repeated
    >>> [timer(stamp) for stamp in (0.0, 0.5, None, 1.0, 1.0, 2.0)]
    [0.0, 0.5, 0.75, 1.0, 1.25, 2.0]
    >>> timer.repaired, timer.restarts
    (2, 0)
    """

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.seen: list[float | None] = []  # each frame's time so far
        self.kept: float | None = None  # the last timestamp kept, on the file's clock
        self.offset = 0.0  # the file's clock -> the frames' times
        self.jump: float | None = None  # the previous frame jumped forward: the time of the frame before it
        self.stepped: tuple[float, float] | None = None  # the previous frame stepped back: the old (kept, offset)
        self.repaired = 0  # frames not at their own timestamp (guessed, re-anchored, or untimed before the first)
        self.restarts = 0  # new clocks started (joined recordings, a restarted stream)

    def __call__(self, stamp: float | None) -> float | None:
        index, before = len(self.seen), self.seen[-1] if self.seen else None
        period = 1.0 / self.fps
        jump, stepped, self.jump, self.stepped = self.jump, self.stepped, None, None  # both: the previous frame only
        if self.kept is None and stamp is not None:  # the first timestamp: a period after the untimed frames
            self.offset = index / self.fps - stamp
            self.repaired += index  # those frames were placed at t / fps, none by a timestamp of its own
        if stamp is not None and stepped is not None and stamp > stepped[0] + RESTART_STEP:
            stepped = None  # past the old clock too: the step back was a new clock, this a jump on it
        if stamp is not None and stepped is not None and stamp >= stepped[0]:  # back on the old clock: the step
            self.kept, self.offset = stamp, stepped[1]  # back was one bad timestamp
            self.restarts -= 1  # counted as a new clock by the frame before: it was one bad frame
            if stamp > stepped[0]:
                seconds = max(stamp + self.offset, before + 1.0 / TIMED_CLOCK)
            else:  # a repeat of the old clock's last: as any repeat, a period on
                seconds, self.repaired = before + period, self.repaired + 1
        elif stamp is not None and self.kept is not None and stamp < self.kept - RESTART_STEP:  # a new clock
            seconds = jump + 2 * period if jump is not None else before + period  # after a jump: it was one bad
            self.stepped = None if jump is not None else (self.kept, self.offset)  # timestamp
            old_offset = self.offset
            self.kept, self.offset = stamp, seconds - stamp
            if jump is None or abs(self.offset - old_offset) > 0.5 * period:  # not the old clock resumed
                self.restarts, self.repaired = self.restarts + 1, self.repaired + 1
            if jump is not None:  # the pass's times (analyze-video) place the bad frame a period after the one
                self.seen[-1] = jump + period  # before it; the watch has already shown it at its own
                self.repaired += 1
        elif stamp is not None and (self.kept is None or stamp > self.kept):
            self.kept = stamp
            seconds = stamp + self.offset
            if before is not None:
                if seconds - before > period + RESTART_STEP:
                    self.jump = before
                seconds = max(seconds, before + 1.0 / TIMED_CLOCK)
        else:
            seconds = None if before is None else before + period
            self.repaired += before is not None  # after the first timestamp: guessed a period on
        self.seen.append(seconds)
        return seconds

    @staticmethod
    def describe(repaired: int, restarts: int) -> str | None:
        """What was done to a file's broken timestamps, for a warning; None where nothing was."""
        parts = []
        if repaired:
            parts.append(f"{repaired} frame{'s' if repaired != 1 else ''} without a usable timestamp "
                         f"{'were' if repaired != 1 else 'was'} placed a frame period after the one before")
        if restarts:
            parts.append(f"{restarts} new clock{'s' if restarts != 1 else ''} (joined recordings)")
        return "; ".join(parts) or None

    def times(self, count: int | None = None) -> np.ndarray | None:
        """The times of the first ``count`` frames (None: of all so far), untimed ones at ``t / fps``; None where
        none has a timestamp (every frame at ``t / fps``)."""
        seen = self.seen[:count]
        if all(t is None for t in seen):
            return None
        return np.asarray([i / self.fps if t is None else t for i, t in enumerate(seen)], dtype=np.float64)


class _FolderSource(_Source):
    def __init__(self, folder: Path, fps: float | None) -> None:
        self.folder = folder
        self.paths = list_frames(folder)
        if not self.paths:
            raise DataError(
                f"no frames in this folder (expected image files: {', '.join(IMAGE_EXTENSIONS)})", folder
            )
        self.stated_fps = fps  # image files carry no rate: only the user or labels_frame.json states one
        self.num_frames = len(self.paths)
        self.frame_size = _header_size(self.paths[0])
        # Headers only (no pixel decode): catch mixed sizes before any long work starts
        for path in self.paths[1:]:
            size = _header_size(path)
            if size != self.frame_size:
                raise DataError(
                    f"frame is {size[1]}x{size[0]} but the clip's first frame {self.paths[0].name} is "
                    f"{self.frame_size[1]}x{self.frame_size[0]}; all frames of a clip must have one size",
                    path,
                )

    def frames(self, warn) -> Iterator[tuple[np.ndarray, float | None]]:
        for path in self.paths:
            frame = read_rgb(path)
            if frame.shape[:2] != self.frame_size:
                raise DataError("frame size differs from the clip's first frame", path)
            yield frame, None  # image files carry no time: t / fps


def _header_size(path: Path) -> tuple[int, int]:
    return image_size_of(path, "frame")


class _FileSource(_Source):
    def __init__(self, path: Path, fps: float | None) -> None:
        import av

        self.path = path
        if path.stat().st_size == 0:
            raise DataError("empty file (0 bytes), not a video", path)
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DataError("no video stream in this file", path)
                if _is_image_format(container.format.name):
                    raise DataError(f"this is a single image ({container.format.name.split('_')[0].upper()}), not a "
                                    "video, whatever its name says; give a video file or a folder of frames", path)
                stream = container.streams.video[0]
                check_image_pixels(stream.codec_context.width or 1, stream.codec_context.height or 1, path)
                rate = stated_rate(container, stream)
                self.stated_fps = fps or rate
                # a raw elementary stream's timestamps are FFmpeg's own, made up at 25 fps; a rate the user states
                # times the frames evenly, whatever the file says
                self.timestamped = fps is None and not container.format.flags & _AVFMT_NOTIMESTAMPS
                self.num_frames = int(stream.frames) if stream.frames else None
                if self.num_frames is None and stream.duration and stream.time_base and rate:
                    self.num_frames = int(round(float(stream.duration * stream.time_base) * rate))
                    self.count_is_estimate = True
                first = next(container.decode(stream), None)
                if first is None:
                    raise DataError("no frame could be decoded (zero frames)", path)
                check_image_pixels(first.width, first.height, path)
                self.frame_size = (first.height, first.width)
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError("file not found", path) from None
        except (av.FFmpegError, OSError, ValueError, StopIteration) as exc:
            raise DataError(f"cannot read this video ({_short(exc)})", path) from None

    def frames(self, warn) -> Iterator[tuple[np.ndarray, float | None]]:
        import av

        try:
            container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as exc:
            raise DataError(f"cannot read this video ({_short(exc)})", self.path) from None
        with container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            time_base = stream.time_base if self.timestamped else None
            first_pts: int | None = None
            decoded = container.decode(stream)
            while True:
                try:
                    frame = next(decoded)
                except StopIteration:
                    return
                except (av.FFmpegError, OSError, EOFError) as exc:
                    warn(f"decoding stopped ({_short(exc)})")
                    return
                check_image_pixels(frame.width, frame.height, self.path)  # a stream may change size mid-way
                array = frame_to_rgb(frame)
                if array.shape[:2] != self.frame_size:
                    # A stream that changes resolution mid-way: resize to the first frame's size
                    array = np.asarray(Image.fromarray(array).resize(self.frame_size[::-1], Image.BILINEAR))
                seconds = None
                if time_base and frame.pts is not None:
                    # from the first frame's: a stream may start late (an edit list, B-frames), its frame 0 is at 0 s
                    first_pts = frame.pts if first_pts is None else first_pts
                    seconds = float((frame.pts - first_pts) * time_base)  # exact Fraction, rounded once
                yield array, seconds


# demuxers of single images that FFmpeg opens as one-frame "videos"
def _is_image_format(name: str) -> bool:
    return name.endswith("_pipe") or name in ("image2", "png", "apng")


def stated_rate(container: Any, stream: Any) -> float | None:
    """The frame rate an opened PyAV video ``stream`` of ``container`` states, or None when nothing does.

    A container with timestamps (MP4, MKV, AVI, RTSP, ...) states it. A raw elementary stream (``.h264``,
    ``.mjpeg``, ...) has no timestamps: FFmpeg reports its demuxer's default 25 as the average rate whatever the
    footage, so only the bitstream's own timing counts there (H.264/HEVC VUI, the MPEG-4 VOL header; MJPEG has none).
    """
    if container.format.flags & _AVFMT_NOTIMESTAMPS:
        rate = stream.codec_context.framerate
    else:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate and is_frame_rate(float(rate)) else None


def check_fps(fps: float | None) -> float | None:
    """A frame rate given by the user: None (the file's own) or a finite number in (0, MAX_FPS]."""
    if fps is None:
        return None
    if not is_frame_rate(fps):
        raise ConfigError(f"--fps {fps}: must be a frame rate above 0 and at most {MAX_FPS:g}")
    return float(fps)


# ---- colour: YUV -> RGB with the matrix and range the stream was encoded with ---------------------------

# FFmpeg's AVColorSpace codes -> the conversion matrix swscale knows (SWS_CS_*) by name
_MATRIX_OF_COLORSPACE = {1: "ITU709", 4: "FCC", 5: "ITU601", 6: "ITU601", 7: "SMPTE240M", 9: "BT2020", 10: "BT2020"}
_COLOR_RANGE_MPEG, _COLOR_RANGE_JPEG = 1, 2
_WRITTEN_COLORSPACE = 6  # SMPTE 170M (BT.601), tagged in what write_video writes
HD_HEIGHT = 720  # untagged streams this tall or taller are BT.709, as players assume (FFmpeg alone assumes BT.601)


def colour_conversion(frame: Any) -> tuple[str, str]:
    """``(matrix, range)`` to turn a decoded YUV frame into RGB: what the stream says, else the conventions.

    * Range: the frame's tag; else full (``JPEG``) for the ``yuvj*`` formats (MJPEG, JPEG stills) and limited
      (``MPEG``, 16-235) for everything else. Decoding full-range video as limited stretches contrast and
      clips highlights and shadows; the reverse washes it out. Either shifts every pixel a detector sees.
    * Matrix: the frame's tag (BT.601, BT.709, BT.2020, ...); else BT.709 from 720 lines up and BT.601 below
      (JPEG/MJPEG is always BT.601).
    """
    fmt = frame.format.name
    color_range = int(getattr(frame, "color_range", 0) or 0)
    if color_range not in (_COLOR_RANGE_MPEG, _COLOR_RANGE_JPEG):
        color_range = _COLOR_RANGE_JPEG if fmt.startswith("yuvj") else _COLOR_RANGE_MPEG
    matrix = _MATRIX_OF_COLORSPACE.get(int(getattr(frame, "colorspace", 2) or 2))
    if matrix is None:
        matrix = "ITU709" if frame.height >= HD_HEIGHT and not fmt.startswith("yuvj") else "ITU601"
    return matrix, ("JPEG" if color_range == _COLOR_RANGE_JPEG else "MPEG")


def frame_to_rgb(frame: Any) -> np.ndarray:
    """A decoded PyAV ``VideoFrame`` of any pixel format -> RGB ``uint8`` ``(H, W, 3)`` in full range."""
    if not frame.format.name.startswith(("yuv", "nv", "p0", "p2", "y2", "uyv", "yuyv")):
        return frame.to_ndarray(format="rgb24")  # RGB, grey or palette: no YUV matrix involved
    matrix, color_range = colour_conversion(frame)
    rgb = frame.reformat(format="rgb24", src_colorspace=matrix, src_color_range=color_range, dst_color_range="JPEG")
    return rgb.to_ndarray()


def _open_source(path: Path, fps: float | None) -> _Source:
    fps = check_fps(fps)
    if path.is_dir():
        return _FolderSource(path, fps)
    if not path.exists():
        raise DataError("video file or frame folder not found", path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise DataError("this is a single image, not a video; give a video file or a folder of frames", path)
    if not path.is_file():  # a FIFO or a device would block or never end
        raise DataError("not a regular file, so not a video", path)
    return _FileSource(path, fps)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    return text[:160]


# ---- writing -------------------------------------------------------------------------------------------


def _as_hwc(frame: np.ndarray | torch.Tensor) -> np.ndarray:
    if hasattr(frame, "detach"):  # a torch tensor (torch is not imported here: see the imports)
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[0] in (1, 3) and frame.shape[2] not in (1, 3):
        frame = frame.transpose(1, 2, 0)
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(frame[:, :, :3])


# libx264's AVX-512 code (x264 core 165, as PyAV's wheels build it) lets memory it never wrote reach the bitstream
# when the lookahead's macroblock tree is on (unless ``tune=zerolatency`` or ``mbtree=0``): the same frames, encoded
# twice in one process, came out in other bits now and then, and always otherwise under another MALLOC_PERTURB_
# (tests/test_encoder_threads.py). Up to AVX2 the output is a function of the frames alone, and the same bits
# as with SSE4 only, so machines with and without AVX-512 agree. The cost is within the noise: CPU per frame at
# ``veryfast``, one thread, 2.67 against 2.82 ms at 240x320 and 11.0 against 10.4 ms at 480x640 (median of 5).
_X264_STABLE_ASM = "asm=avx2"


@functools.cache
def _has_avx512() -> bool:  # asked once: a clip writer opens a stream per event
    try:
        return " avx512f" in Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to ask, and Apple silicon has no AVX-512 anyway
        return False


def stable_encoder_options(codec: str, options: dict[str, str]) -> dict[str, str]:
    """``options`` plus what makes ``codec`` write the same bits for the same frames on every run and machine:
    libx264 runs without its AVX-512 code where the CPU has it (an ``asm`` of the caller's own wins)."""
    params = options.get("x264-params", "")
    if codec != "libx264" or "asm" in params or not _has_avx512():
        return dict(options)
    return {**options, "x264-params": f"{params}:{_X264_STABLE_ASM}" if params else _X264_STABLE_ASM}


# the clock of a video written with its frames' own times (write_video's ``times``): MPEG's 90 kHz, fine enough for
# any rate up to MAX_FPS and a time base every MP4 player knows
TIMED_CLOCK = 90000


def write_video(
    path: str | Path, frames: Iterable[np.ndarray | torch.Tensor], fps: float, *, crf: int = 20,
    times: Sequence[float] | np.ndarray | None = None,
) -> Path:
    """Encode RGB frames ``(H, W, 3)`` (or ``(3, H, W)``) as a browser-playable MP4.

    H.264 (libx264), yuv420p, ``movflags=+faststart``; odd sizes are padded by one edge pixel to even.
    Exactly one output frame per input frame at ``fps``, or, given ``times`` (seconds, increasing, one per frame:
    :meth:`VideoClip.frame_times` of a variable-rate source), each frame shown at its own time, so that the video
    plays as long as its source. The file appears only once complete.
    """
    clock = None if times is None else Fraction(1, TIMED_CLOCK)
    writer = VideoWriter(path, fps, crf=crf, time_base=clock)
    try:
        for index, frame in enumerate(frames):
            if times is None:
                writer.write(frame)
                continue
            if index >= len(times):
                raise ValueError(f"more frames than times ({len(times)})")
            # never two frames on one tick of the clock (times closer than 1/90000 s): each a tick after the last
            writer.write(frame, max(int(round(float(times[index]) * TIMED_CLOCK)), writer.last_pts + 1))
    except BaseException:
        writer.abort()
        raise
    return writer.close()


class VideoWriter:
    """:func:`write_video` one frame at a time, for a writer that is fed as frames come (a live event's clip).

    ``write(frame, pts)``: ``pts`` counts frame periods of ``1/fps`` from the clip's start (default: the next
    one), so frames that a live watch dropped leave their time in the clip instead of speeding it up; or units of
    ``time_base`` (seconds) where one is given. ``threads`` caps libx264's threads (0: its own choice). The file
    appears only at :meth:`close`; :meth:`abort` drops it.
    """

    def __init__(
        self, path: str | Path, fps: float, *, crf: int = 20, preset: str = "veryfast", threads: int = 0,
        time_base: Fraction | None = None,
    ) -> None:
        import av

        self.path = Path(path)
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.rate = Fraction(float(fps)).limit_denominator(1001)
        self.time_base = time_base or 1 / self.rate
        self.crf, self.preset, self.threads = crf, preset, threads
        self.count, self.last_pts = 0, -1
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        try:
            self.container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        except BaseException:
            self._discard()
            raise
        self.stream = None
        self.size: tuple[int, int] | None = None

    def write(self, frame: np.ndarray | torch.Tensor, pts: int | None = None) -> None:
        import av

        array = _as_hwc(frame)
        if self.stream is None:
            self.size = size = array.shape[:2]
            stream = self.container.add_stream("libx264", rate=self.rate)
            stream.width = size[1] + size[1] % 2
            stream.height = size[0] + size[0] % 2
            stream.pix_fmt = "yuv420p"
            # say which matrix and range the pixels use, so that every decoder reads the colours back
            stream.codec_context.colorspace = _WRITTEN_COLORSPACE
            stream.codec_context.color_range = _COLOR_RANGE_MPEG
            stream.options = stable_encoder_options("libx264", {
                "crf": str(self.crf), "preset": self.preset, **({"threads": str(self.threads)} if self.threads else {})})
            stream.codec_context.time_base = self.time_base
            self.stream = stream
        elif array.shape[:2] != self.size:
            raise ValueError(f"frame {self.count} is {array.shape[1]}x{array.shape[0]}, expected {self.size[1]}x{self.size[0]}")
        size = self.size
        assert size is not None
        pts = self.last_pts + 1 if pts is None else int(pts)
        if pts <= self.last_pts:
            raise ValueError(f"frame {self.count}: timestamp {pts} does not follow {self.last_pts}")
        if size[0] % 2 or size[1] % 2:
            array = np.pad(array, ((0, size[0] % 2), (0, size[1] % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(
            format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG"
        )
        video_frame.colorspace = _WRITTEN_COLORSPACE
        video_frame.color_range = _COLOR_RANGE_MPEG
        video_frame.pts = pts
        video_frame.time_base = self.time_base
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)
        self.count, self.last_pts = self.count + 1, pts

    def close(self) -> Path:
        """Flush the encoder and put the file in place; raises ValueError when no frame was written."""
        try:
            if self.stream is None:
                raise ValueError("no frames to write")
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
        except BaseException:
            self.abort()
            raise
        atomic, self._atomic = self._atomic, None
        if atomic is not None:
            atomic.__exit__(None, None, None)  # renames the finished file into place
        return self.path

    def abort(self) -> None:
        """Stop without a file (nothing is left behind)."""
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the file is dropped anyway
            pass
        self._discard()

    def _discard(self) -> None:
        atomic, self._atomic = self._atomic, None
        if atomic is not None:  # an exception thrown into atomic_path removes the temporary, renames nothing
            error = ValueError("discarded")
            atomic.__exit__(ValueError, error, None)


_COLORSPACE_TAG = {"ITU601": 6, "ITU709": 1}


def encode_video(
    path: str | Path, frames: Iterable[np.ndarray], fps: float, *, codec: str, pix_fmt: str, container: str | None = None,
    options: dict[str, str] | None = None, matrix: str = "ITU601", tag: bool = True, threads: int = 1,
) -> Path:
    """Store RGB frames as a camera or recorder of another kind would (tests and robustness benchmarks).

    Any encoder PyAV has (``libx264``, ``mjpeg``, ``mpeg4``...), any pixel format; ``yuvj*`` formats hold full
    range, others limited. ``matrix`` is the YUV matrix (``ITU601`` or ``ITU709``); ``tag`` False leaves matrix
    and range unspecified in the stream, as many encoders do. For playable output use :func:`write_video`.

    ``threads`` is the encoder's thread count (an explicit ``threads`` in ``options`` wins). It is fixed rather than
    left to FFmpeg because libx264, MPEG-4, MPEG-2, H.263+ and VP8 write other frames with another count, and
    FFmpeg's own choice follows the CPUs the process may use: left to it, the same seed gave another benchmark on
    another machine, or under ``taskset``.
    """
    import av

    path = Path(path)
    full = pix_fmt.startswith("yuvj")
    color_range = "JPEG" if full else "MPEG"
    count = 0
    with av.open(str(path), "w", format=container) as output:
        stream = None
        for frame in frames:
            if stream is None:
                stream = output.add_stream(codec, rate=Fraction(float(fps)).limit_denominator(1001))
                stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], pix_fmt
                stream.options = stable_encoder_options(codec, {"threads": str(int(threads)), **(options or {})})
                if tag:
                    stream.codec_context.colorspace = _COLORSPACE_TAG[matrix]
                    stream.codec_context.color_range = _COLOR_RANGE_JPEG if full else _COLOR_RANGE_MPEG
            yuv = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(
                format=pix_fmt, dst_colorspace=matrix, dst_color_range=color_range
            )
            if tag:
                yuv.colorspace, yuv.color_range = _COLORSPACE_TAG[matrix], _COLOR_RANGE_JPEG if full else _COLOR_RANGE_MPEG
            else:
                yuv.colorspace, yuv.color_range = 2, 0  # unspecified
            yuv.pts = count
            count += 1
            for packet in stream.encode(yuv):
                output.mux(packet)
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode(None):
            output.mux(packet)
    return path


def probe_video(path: str | Path) -> dict[str, Any]:
    """Codec, pixel format, frame count, fps (0 when the file states none), size of a video file, plus whether its
    MP4 index is up front."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            info = {
                "codec": stream.codec_context.name,
                "pix_fmt": stream.codec_context.pix_fmt,
                "frames": int(stream.frames),
                "fps": stated_rate(container, stream) or 0.0,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
            }
            if not info["frames"]:
                info["frames"] = sum(1 for packet in container.demux(stream) if packet.size)
    except (av.FFmpegError, OSError, IndexError) as exc:
        raise DataError(f"cannot probe this video ({_short(exc)})", path) from None
    info["faststart"] = _moov_before_mdat(path)
    return info


def _moov_before_mdat(path: Path) -> bool | None:
    """For MP4/MOV: True when the index (moov) precedes the media data (mdat), so playback starts at once."""
    try:
        with open(path, "rb") as handle:
            offset = 0
            size_total = path.stat().st_size
            while offset + 8 <= size_total:
                handle.seek(offset)
                header = handle.read(16)
                size = int.from_bytes(header[:4], "big")
                kind = header[4:8]
                if kind == b"moov":
                    return True
                if kind == b"mdat":
                    return False
                if size == 1:
                    size = int.from_bytes(header[8:16], "big")
                if size < 8:
                    return None
                offset += size
    except OSError:
        return None
    return None
