"""Long jobs of the web UI: one at a time per browser tab, with live progress and a Cancel that stops cleanly.

Gradio's queue decides when a job runs (limited concurrency for the whole server); this module gives each
tab its own cancel flag and workspace, and turns the library's :class:`~anomalens.progress.Reporter` callbacks
into progress updates for the page. Nothing here imports Gradio: the progress sink is any callable
``sink(fraction_or_None, text)``.

>>> board = JobBoard()
>>> with board.job("tab-1") as job:
...     reporter = job.reporter(lambda fraction, text: None)
...     board.cancel("tab-1")
...     reporter.check_cancelled()
Traceback (most recent call last):
anomalens.errors.Cancelled: stopped on request
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from anomalens.errors import AnomalensError
from anomalens.limits import MAX_UI_SESSIONS_BYTES
from anomalens.progress import Reporter

ProgressSink = Callable[["float | None", str], None]


class JobBusy(AnomalensError):
    """This tab already runs a job; one at a time keeps its results unambiguous."""


@dataclass
class Job:
    key: str
    cancel_event: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)
    messages: list[str] = field(default_factory=list)
    last_stage: str = ""
    last_fraction: float | None = None
    folders: list[Path] = field(default_factory=list)  # output folders made during the job: never trimmed meanwhile

    def reporter(self, sink: ProgressSink | None = None) -> Reporter:
        """A Reporter for library calls: progress goes to ``sink``, news lines to :attr:`messages`."""

        def callback(stage: str, done: int, total: int | None, info: str) -> None:
            if total is None and done == 0 and not info:
                self.messages.append(stage)  # a log line (Reporter.log) or a stage of unknown length
                if sink is not None:
                    sink(self.last_fraction, stage)  # news does not move the bar
                return
            self.last_stage = stage
            self.last_fraction = done / total if total else None
            text = f"{stage} {done}/{total}" if total else f"{stage} {done}"
            if info:
                text += f" · {info}"
            if sink is not None:
                sink(done / total if total else None, text)

        return Reporter(callback=callback, cancel_event=self.cancel_event, show_tqdm=False)


# Output folders that a running job or live watch still writes: the size trim passes them by (it took the folder of
# another session's analysis, or a watch's clips, while they were being written). Folder -> how many holders.
_IN_USE: dict[Path, int] = {}
_IN_USE_LOCK = threading.Lock()
# the job each handler thread runs now: new_workspace holds its folders until the job ends
_CURRENT = threading.local()


def hold_workspace(folder: Path) -> None:
    """Keep ``folder`` from :func:`trim_workspaces` until :func:`release_workspace` (as often as held)."""
    folder = Path(folder).resolve()
    with _IN_USE_LOCK:
        _IN_USE[folder] = _IN_USE.get(folder, 0) + 1


def release_workspace(folder: Path) -> None:
    folder = Path(folder).resolve()
    with _IN_USE_LOCK:
        left = _IN_USE.get(folder, 0) - 1
        if left > 0:
            _IN_USE[folder] = left
        else:
            _IN_USE.pop(folder, None)


def _in_use(folder: Path) -> bool:
    folder = folder.resolve()
    with _IN_USE_LOCK:
        return any(held == folder or held.is_relative_to(folder) for held in _IN_USE)


class JobBoard:
    """Which tab runs what; thread-safe, because Gradio runs handlers in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    @contextlib.contextmanager
    def job(self, key: str) -> Iterator[Job]:
        with self._lock:
            if key in self._jobs:
                raise JobBusy("this tab is still busy with the previous request of this kind; wait for it to finish")
            job = self._jobs[key] = Job(key)
        outer = getattr(_CURRENT, "job", None)
        _CURRENT.job = job
        try:
            yield job
        finally:
            _CURRENT.job = outer
            for folder in job.folders:
                release_workspace(folder)
            with self._lock:
                self._jobs.pop(key, None)

    def cancel(self, key: str) -> bool:
        """Ask the tab's running job to stop at its next step; False when nothing runs there."""
        with self._lock:
            job = self._jobs.get(key)
        if job is None:
            return False
        job.cancel_event.set()
        return True

    def running(self, key: str) -> bool:
        with self._lock:
            return key in self._jobs


def session_key(raw: str | None) -> str:
    """A safe folder name for a browser session (Gradio's session hash, or a fresh random one)."""
    text = re.sub(r"[^A-Za-z0-9_-]", "", raw or "")[:32]
    return text or secrets.token_hex(8)


def new_workspace(base: str | Path, key: str, label: str) -> Path:
    """A fresh output folder ``base/<session>/<time>_<label>_<random>``: two tabs never share one."""
    stamp = time.strftime("%Y%m%d_%H%M%S")
    label = re.sub(r"[^A-Za-z0-9_-]", "_", label)[:40]
    folder = Path(base) / session_key(key) / f"{stamp}_{label}_{secrets.token_hex(3)}"
    folder.mkdir(parents=True, exist_ok=False)
    job = getattr(_CURRENT, "job", None)
    if job is not None:  # made inside a running job: kept until the job ends
        hold_workspace(folder)
        job.folders.append(folder)
    trim_workspaces(base, MAX_UI_SESSIONS_BYTES, keep=folder)  # all sessions together stay under the cap
    return folder


def unique_run_name(category: str, kind: str) -> str:
    """``<category>_<timestamp>_<random>`` (``video_`` first for video): unique even for two tabs in one second."""
    category = re.sub(r"[^A-Za-z0-9_-]", "_", category)[:60] or "dataset"
    prefix = "video_" if kind == "video" else ""
    return f"{prefix}{category}_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(3)}"


def prune_workspaces(base: str | Path, max_age_days: float = 7.0) -> int:
    """Remove per-tab output folders untouched for ``max_age_days`` (they are downloads, not models)."""
    import shutil

    base = Path(base)
    if not base.is_dir():
        return 0
    cutoff = time.time() - max_age_days * 86400
    removed = 0
    for session in base.iterdir():
        if session.is_dir() and not session.is_symlink() and session.stat().st_mtime < cutoff:
            if all(entry.stat().st_mtime < cutoff for entry in session.iterdir()):
                shutil.rmtree(session, ignore_errors=True)
                removed += 1
    return removed


def remove_session(base: str | Path, key: str) -> bool:
    """Delete every output folder of one browser session (called when its page is closed)."""
    import shutil

    folder = Path(base) / session_key(key)
    if not folder.is_dir() or folder.is_symlink():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def _size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def trim_workspaces(base: str | Path, max_bytes: int, keep: Path | None = None) -> int:
    """Remove the least recently used output folders until all of them together fit in ``max_bytes``.

    ``keep`` (the folder being filled now) and the folders of running jobs and watches (:func:`hold_workspace`)
    are never removed. Returns how many folders went.
    """
    import shutil

    base = Path(base)
    if not base.is_dir():
        return 0
    folders = [f for s in base.iterdir() if s.is_dir() and not s.is_symlink() for f in s.iterdir() if f.is_dir()]
    sizes = {f: _size(f) for f in folders}
    total = sum(sizes.values())
    removed = 0
    for folder in sorted(folders, key=lambda f: f.stat().st_mtime):
        if total <= max_bytes:
            break
        if (keep is not None and (folder == keep or keep.is_relative_to(folder))) or _in_use(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        removed += 1
    return removed
