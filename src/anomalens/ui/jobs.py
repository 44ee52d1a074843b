"""Long jobs of the web UI: one at a time per browser tab, with live progress and a Cancel that stops cleanly.

Gradio's queue decides when a job runs (limited concurrency for the whole server); this module gives each
tab its own cancel flag and workspace, and turns the library's :class:`~anomalens.progress.Reporter` callbacks
into progress updates for the page. Nothing here imports Gradio: the progress sink is any callable
``sink(fraction_or_None, text)``. Closing a page cancels its jobs and deletes its outputs only once they stopped
(:meth:`JobBoard.close_session`).

A Cancel also reaches a run that still waits in Gradio's queue: the page takes a ticket for each run outside the
queue (:meth:`JobBoard.enqueue`, wired by :func:`wire_run`), a Cancel withdraws the tickets of runs not started yet,
and a run whose ticket was withdrawn ends as it starts (:class:`NotStarted`). Nothing else is withdrawn: a Cancel
pressed while nothing waits or runs leaves the next run alone.

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
import itertools
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Literal, TypeVar

from anomalens.errors import AnomalensError, Cancelled
from anomalens.limits import MAX_UI_SESSIONS_BYTES
from anomalens.progress import Reporter, format_duration

log = logging.getLogger("anomalens.ui")
ProgressSink = Callable[["float | None", str], None]
T = TypeVar("T")

# How long closing a page waits for its cancelled jobs to stop before its outputs are deleted; a job still running
# then (stuck in a step that cannot be interrupted) has the deletion deferred until it ends.
CLOSE_WAIT_S = 10.0


class JobBusy(AnomalensError):
    """This tab already runs a job; one at a time keeps its results unambiguous."""


class NotStarted(Cancelled):
    """A run that did not start: it was cancelled while it waited for its turn in the queue, or (``repeat``) it is
    a second press of Run that Gradio held back until the first run ended, which already ran it or was cancelled."""

    def __init__(self, repeat: bool = False) -> None:
        super().__init__("a repeated press of Run" if repeat else "cancelled before it started")
        self.repeat = repeat


@dataclass
class Ticket:
    """A run that the page has pressed Run for and that has not started yet."""

    withdrawn: bool = False  # a Cancel was pressed meanwhile: it ends as it starts


@dataclass
class Job:
    key: str
    # a job whose result outlives its page (a trained model, in the results folder) is not cancelled when the page
    # closes; analyses are, since only their page could show what they write
    outlives_page: bool = False
    cancel_event: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)
    messages: list[str] = field(default_factory=list)
    last_stage: str = ""
    last_fraction: float | None = None
    folders: list[Path] = field(default_factory=list)  # output folders made during the job: never trimmed meanwhile
    ticket: int | None = None  # the page's ticket for this run (:meth:`JobBoard.enqueue`); None when run without one
    page_closed: bool = False  # its page closed meanwhile: nothing may show or write its result any more
    stop_marked: bool = False  # the page's Cancel answered and stops it next (JobBoard.cancel with stop_now=False)

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

    @property
    def session(self) -> str:
        return job_session(self.key)


def job_session(key: str) -> str:
    """The browser session of a job key ``<session>:<tab>`` (session keys never hold a colon)."""
    return key.split(":", 1)[0]


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


def is_held(folder: Path) -> bool:
    """``folder``, or a folder inside it, is held (:func:`hold_workspace`)."""
    folder = Path(folder).resolve()
    with _IN_USE_LOCK:
        return any(held == folder or held.is_relative_to(folder) for held in _IN_USE)


class JobBoard:
    """Which tab runs what; thread-safe, because Gradio runs handlers in worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        # closed sessions whose clean-up waits for their last page-bound job to end: session -> clean-up
        self._after_close: dict[str, Callable[[], object]] = {}
        # runs pressed but not started yet (they wait in Gradio's queue): key -> {ticket: Ticket}
        self._waiting: dict[str, dict[int, Ticket]] = {}
        self._numbers = itertools.count(1)

    def enqueue(self, key: str) -> int:
        """The tab's Run was pressed: the ticket that the run hands to :meth:`job` when its turn comes.

        While the page's previous run still waits or runs (and was not cancelled) its own ticket comes back: Gradio
        holds a second press back until that run ended, and the press then finds its ticket used (:class:`NotStarted`
        with ``repeat``), as a second press did nothing before.
        """
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.ticket is not None and not (job.stop_marked or job.cancel_event.is_set()):
                return job.ticket
            waiting = self._waiting.setdefault(key, {})
            pending = [number for number, ticket in waiting.items() if not ticket.withdrawn]
            if pending:
                return pending[0]
            number = next(self._numbers)
            waiting[number] = Ticket()
            return number

    def _take_ticket(self, key: str, number: int) -> None:
        """A run with ticket ``number`` starts (call under the lock): raise :class:`NotStarted` when it must not.

        A page's runs reach their turn in the order they were pressed, and Gradio keeps only the last of the presses
        it held back: tickets numbered below this one will never be handed in, so they go too (else a withdrawn one
        stayed for good, and every later Cancel on an idle tab said a run was waiting)."""
        waiting = self._waiting.get(key, {})
        ticket = waiting.pop(number, None)
        for older in [n for n in waiting if n < number]:
            del waiting[older]
        if not waiting:
            self._waiting.pop(key, None)
        if ticket is None:  # used already (a repeated press), or its page closed
            raise NotStarted(repeat=True)
        if ticket.withdrawn:
            raise NotStarted()

    @contextlib.contextmanager
    def job(self, key: str, outlives_page: bool = False, ticket: int | None = None) -> Iterator[Job]:
        """Run as the tab's job ``key``; ``ticket``: the one :meth:`enqueue` gave when Run was pressed, which raises
        :class:`NotStarted` (before anything runs) when a Cancel withdrew it meanwhile. Without one (None or 0: a
        call through Gradio's API) only a Cancel while it runs stops it."""
        ticket = int(ticket) if ticket else None  # Gradio's number field may hand it as a float
        with self._lock:
            if ticket is not None:
                self._take_ticket(key, ticket)
            if key in self._jobs:
                raise JobBusy("this tab is still busy with the previous request of this kind; wait for it to finish")
            job = self._jobs[key] = Job(key, outlives_page, ticket=ticket)
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
                clean_up = None
                if job.session in self._after_close and not self._page_jobs(job.session):
                    clean_up = self._after_close.pop(job.session)
            job.ended.set()
            if clean_up is not None:  # the page closed while this job ran: its outputs go now
                try:
                    clean_up()
                except OSError as exc:  # never in place of the job's own outcome; the size trim takes them later
                    log.warning("could not delete the outputs of a closed page: %s", exc)

    def _page_jobs(self, session: str) -> list[Job]:
        """The running jobs of ``session`` that end with its page (call under the lock)."""
        return [job for job in self._jobs.values() if job.session == session and not job.outlives_page]

    def close_session(self, session: str, clean_up: Callable[[], object], wait_s: float = CLOSE_WAIT_S) -> bool:
        """A page closed: cancel its page-bound jobs, wait up to ``wait_s`` for them to stop, then ``clean_up``.

        A job that has not stopped by then keeps writing into its folder: ``clean_up`` then runs when the last such
        job ends instead. True when it ran now.
        """
        with self._lock:
            jobs = self._page_jobs(session)
            for job in jobs:
                job.page_closed = True
            for key in [key for key in self._waiting if job_session(key) == session]:
                # runs still waiting for their turn: Gradio drops a closed page's queued events (a training's too),
                # so none of them will be handed in
                del self._waiting[key]
        for job in jobs:
            job.cancel_event.set()
        deadline = time.monotonic() + wait_s
        for job in jobs:
            job.ended.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._page_jobs(session):
                self._after_close[session] = clean_up
                return False
        clean_up()
        return True

    def cancel(self, key: str, stop_now: bool = True) -> Literal["running", "waiting", ""]:
        """The tab's Cancel: ask its running job to stop at its next step, and withdraw the runs it pressed Run for
        that have not started yet. Which of them there was: ``running``, else ``waiting``, else "" (falsy).

        ``stop_now=False`` only marks the running job, and :meth:`stop_marked` stops it once the page shows the
        Cancel's answer: a job stops within milliseconds, and its own last word ("Cancelled after …") raced the
        answer ("Stopping …"), which could arrive last and stay on the page for good.
        """
        with self._lock:
            job = self._jobs.get(key)
            waiting = self._waiting.get(key, {})
            for ticket in waiting.values():
                ticket.withdrawn = True
            if job is not None and not stop_now:
                job.stop_marked = True
                return "running"
        if job is not None:
            job.cancel_event.set()
            return "running"
        return "waiting" if waiting else ""

    def stop_marked(self, key: str) -> None:
        """Stop the tab's running job if :meth:`cancel` marked it (a job started since then runs on)."""
        with self._lock:
            job = self._jobs.get(key)
        if job is not None and job.stop_marked:
            job.cancel_event.set()

    def running(self, key: str) -> bool:
        with self._lock:
            return key in self._jobs

    def running_keys(self) -> list[str]:
        """The keys of every running job (``<session>:<tab>``)."""
        with self._lock:
            return list(self._jobs)

    def waiting_keys(self) -> list[str]:
        """The keys of every tab with a run pressed but not started yet (withdrawn ones too, until their turn)."""
        with self._lock:
            return list(self._waiting)


# The server's board: the tabs register their jobs here and closing a page finds them here.
JOBS = JobBoard()


@dataclass
class JobOutcome(Generic[T]):
    """What a cancellable job gave: its ``value``, or None and a ``message`` for the tab's status when cancelled."""

    value: T | None
    message: str = ""
    cancelled: bool = False
    seconds: float = 0.0  # how long it ran


def run_cancellable(
    board: JobBoard, key: str, work: Callable[[Reporter], T], sink: ProgressSink | None, what: str,
    kept: str | Callable[[], str] = "nothing was saved", ticket: int | None = None,
) -> JobOutcome[T]:
    """Run ``work(reporter)`` as the job ``key``: the tab's Cancel stops it at its next step, or before it starts.

    ``what`` names the job in the message (``Inspection``), ``kept`` says what a cancelled job left (a callable is
    asked only then, once the library has cleaned up); ``ticket``: the page's (:meth:`JobBoard.enqueue`). Everything
    that writes the job's outputs belongs in ``work``: a closed page's folder is deleted only once the job ended. A
    job whose page closed meanwhile gives no value (no page shows it, its files go). Other errors pass through.
    """
    try:
        with board.job(key, ticket=ticket) as job:
            started = time.monotonic()
            try:
                value = work(job.reporter(sink))
            except Cancelled:
                seconds = time.monotonic() - started
                left = kept() if callable(kept) else kept
                return JobOutcome(None, f"**Cancelled.** {what} cancelled after {format_duration(seconds)}; {left}.",
                                  cancelled=True, seconds=seconds)
            seconds = time.monotonic() - started
    except NotStarted as exc:
        return JobOutcome(None, not_started_text(exc, what), cancelled=True)
    if job.page_closed:
        return JobOutcome(None, cancelled=True, seconds=seconds)
    return JobOutcome(value, seconds=seconds)


def not_started_text(exc: NotStarted, what: str) -> str:
    """The status line of a run that did not start (``what``: ``Inspection``); "" for a repeated press, which
    leaves the page as the run before it left it."""
    if exc.repeat:
        return ""
    return (f"**Cancelled before it started.** {what} was cancelled while it waited for its turn; nothing ran, "
            "nothing was saved.")


def cancel_text(board: JobBoard, key: str, what: str, stop_now: bool = True) -> str:
    """The status line of a tab's Cancel button: ``what`` is the job's name in lower case (``inspection``);
    ``stop_now``: as for :meth:`JobBoard.cancel`."""
    found = board.cancel(key, stop_now)
    if found == "running":
        return f"**Stopping** the {what} at its next step…"
    if found == "waiting":
        return f"**Cancelled before it started:** the {what} was still waiting for its turn; it will not run."
    return f"No {what} is running in this tab."


def wire_run(button: Any, enqueue: Callable[..., int], ticket: Any, run: Callable[..., Any], inputs: list[Any],
             outputs: list[Any], **lane: Any) -> Any:
    """Wire a tab's Run ``button``: ``enqueue`` (the tab's :meth:`JobBoard.enqueue`, taking Gradio's request) puts
    the run's ticket into the hidden ``ticket`` component, then ``run(*inputs, ticket)`` joins its ``lane``
    (``concurrency_id``, ``concurrency_limit``, ...). Gradio objects come in; this module still imports none.
    """
    # the ticket is taken outside every lane, so that it exists at once: a Cancel pressed while the run still waits
    # for a free slot finds it. "always_last": a press while the previous run is pending is held back until it
    # ended (not dropped), so that Run, Cancel, Run while the first still waits in the queue runs the second press
    # with its own inputs; a press that only repeats the pending run finds its ticket used and changes nothing.
    return button.click(enqueue, None, [ticket], concurrency_limit=None, show_progress="hidden").then(
        run, [*inputs, ticket], outputs, trigger_mode="always_last", **lane)


def wire_cancel(button: Any, answer: Callable[..., str], stop: Callable[..., None], status: Any) -> Any:
    """Wire a tab's Cancel ``button``: ``answer`` (:func:`cancel_text` with ``stop_now=False``) writes the ``status``
    line, and only then ``stop`` (:meth:`JobBoard.stop_marked`) stops the running job, whose own last word thus
    comes after the answer. Both outside every lane: a Cancel must not queue behind the jobs it is meant to stop."""
    return button.click(answer, None, [status], concurrency_limit=None, show_progress="hidden").then(
        stop, None, None, concurrency_limit=None, show_progress="hidden")


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
    """Delete every output folder of one browser session (called when its page is closed), except those a job or
    watch still holds (:func:`hold_workspace`): the size trim takes those once they are released."""
    import shutil

    folder = Path(base) / session_key(key)
    if not folder.is_dir() or folder.is_symlink():
        return False
    held = False
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink() and is_held(entry):
            held = True
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if not held:
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
        if (keep is not None and (folder == keep or keep.is_relative_to(folder))) or is_held(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        removed += 1
    return removed
