"""Per-frame arrays (anomaly maps, views) of a video of unknown length, with bounded memory.

Shared by the library's video models (:mod:`anomalens.models.video`) and the torch-free runtime
(:mod:`anomalens.inference.video`), so it needs numpy alone.

>>> with FrameBuffer((30, 45), np.float16) as maps:   # doctest: +SKIP
...     for batch in batches:
...         maps.append(batch)
...     everything = maps.array()                       # (T, 30, 45): in RAM, or memory-mapped from disk
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from anomalens.errors import ConfigError

log = logging.getLogger(__name__)

# what a buffer keeps in RAM before it spills to disk: about an hour of stfeatures' maps at 240x360
MEMORY_LIMIT = 256 << 20
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})  # their files are RAM: spilling to them saves RSS, not memory
MOUNTS = Path("/proc/self/mounts")  # Linux: what is mounted where, as this process sees it


class FrameBuffer:
    """Collects per-frame arrays (views, maps) of a clip of unknown length with bounded memory.

    Up to ``memory_limit`` bytes stay in RAM; beyond that everything goes to an anonymous temporary file in
    ``spill_dir`` (None: the system temp folder, ``TMPDIR`` first, as :mod:`tempfile` picks it) that :meth:`array`
    maps read-only, so an hour of video costs disk, not RAM. The file has no name from the start, so nothing is left
    behind whatever ends the process; its space is freed once the buffer is closed (:meth:`close`, ``with``, or
    garbage collection) and the arrays mapped from it are dropped (a mapping keeps its own handle). Where the system
    temp folder is a tmpfs (often ``/tmp``), the file is RAM too: the first such spill logs a warning.
    """

    def __init__(
        self, frame_shape: tuple[int, ...] | None = None, dtype: np.dtype | type = np.uint8, memory_limit: int = MEMORY_LIMIT,
        spill_dir: str | Path | None = None,
    ) -> None:
        # frame_shape None: taken from the first batch
        self.frame_shape = None if frame_shape is None else tuple(frame_shape)
        self.dtype, self.memory_limit = np.dtype(dtype), memory_limit
        if spill_dir is not None and not (os.path.isdir(spill_dir) and os.access(spill_dir, os.W_OK | os.X_OK)):
            # said now, not at the first spill, which may come an hour into a video
            raise ConfigError(f"spill_dir {str(spill_dir)!r}: not a folder this process can write to")
        self.spill_dir = spill_dir
        self.parts: list[np.ndarray] = []
        self.count = self.bytes = 0
        self.file: Any = None
        self._closer: weakref.finalize | None = None

    def append(self, frames: np.ndarray) -> None:
        """Add a batch ``(B, *frame_shape)``."""
        frames = np.ascontiguousarray(frames, dtype=self.dtype)
        if self.frame_shape is None:
            self.frame_shape = tuple(frames.shape[1:])
        if frames.shape[1:] != self.frame_shape:
            raise ValueError(f"frames of shape {frames.shape[1:]}, expected {self.frame_shape}")
        self.count += len(frames)
        if self.file is None and self.bytes + frames.nbytes > self.memory_limit:
            if self.spill_dir is None:
                _warn_if_in_memory(tempfile.gettempdir())
            self.file = tempfile.TemporaryFile(prefix="anomalens-", dir=self.spill_dir)
            # closes the file when the buffer is collected or the interpreter exits, without a ResourceWarning
            self._closer = weakref.finalize(self, self.file.close)
            for part in self.parts:
                self.file.write(part.tobytes())
            self.parts = []
        if self.file is not None:
            self.file.write(frames.tobytes())
        else:
            self.parts.append(frames)
            self.bytes += frames.nbytes

    @property
    def spilled(self) -> bool:
        """Whether the frames went to the temporary file (more than ``memory_limit`` bytes)."""
        return self.file is not None

    def array(self) -> np.ndarray:
        """All frames ``(T, *frame_shape)``: in memory, or memory-mapped from the spill file."""
        if self.file is None:
            return np.concatenate(self.parts) if self.parts else np.zeros((0, *(self.frame_shape or ())), self.dtype)
        self.file.flush()
        return np.memmap(self.file, dtype=self.dtype, mode="r", shape=(self.count, *(self.frame_shape or ())))

    def close(self) -> None:
        """Drop the frames held in RAM and close the spill file (arrays already mapped from it stay readable)."""
        self.parts = []
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> "FrameBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def mount_type(mounts: str, folder: str) -> str | None:
    """The filesystem type of the mount that holds ``folder`` (absolute, links resolved) in ``mounts``, the text of
    ``/proc/self/mounts``: the longest mount point that contains it; None when none does."""
    best, kind = "", None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # the kernel writes a space in a mount point as \040 (a tab, newline and backslash likewise: octal)
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])
        inside = folder == point or folder.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # ">=": a later mount on the same point hides the earlier
            best, kind = point, fields[2]
    return kind


_WARNED: set[str] = set()  # folders already warned about: once per folder and process
_WARNED_LOCK = threading.Lock()  # several buffers may spill at once (threads): still one warning


def _warn_if_in_memory(folder: str) -> None:
    """Once per folder: warn when spills to the system temp folder land in RAM. Never fails: without ``/proc`` (not
    Linux, a sandbox) nothing is said."""
    with _WARNED_LOCK:
        if folder in _WARNED:
            return
        _WARNED.add(folder)
    try:
        # bytes, decoded as the file system's paths are: a mount point may name itself in any bytes
        mounts = os.fsdecode(MOUNTS.read_bytes())
    except OSError:
        return
    kind = mount_type(mounts, os.path.realpath(folder))
    if kind in MEMORY_FILESYSTEMS:
        log.warning("spilling frames to %s, a %s: it holds them in RAM all the same; pass spill_dir= "
                    "(predict_video(..., spill_dir=)) a folder on disk, or start the process with TMPDIR set to one",
                    folder, kind)
