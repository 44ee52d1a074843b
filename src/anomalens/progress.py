"""Progress and cancellation for long work, shared by the CLI (tqdm) and the UI (a progress bar).

Library code wraps its loops with :meth:`Reporter.iter`; the caller decides how progress is shown and
when to stop. A stop request raises :class:`~anomalens.errors.Cancelled` at the next step.

On a terminal the CLI shows live tqdm bars. When the output is not a terminal (a CI log, ``nohup``, a pipe)
a bar would write a line per update, so the reporter writes one line per finished stage instead
(``coreset: 79 of 79 in 12.3 s``), plus a line a minute with an estimate of the time left for long stages.
:meth:`Reporter.section` labels repeated stages (``fold 1 of 2 · coreset``), and :class:`Phases` estimates
the time left over several stages of known relative cost.

>>> reporter = Reporter(show_tqdm=False)
>>> [x for x in reporter.iter(range(3), "demo")]
[0, 1, 2]
>>> with reporter.section("fold 1 of 2"):
...     reporter.label("coreset")
'fold 1 of 2 · coreset'
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TextIO, TypeVar

from tqdm.auto import tqdm

from anomalens.errors import Cancelled

T = TypeVar("T")

# stage description, steps done, steps in all (None if unknown), extra text such as "loss 0.0123"
ProgressCallback = Callable[[str, int, "int | None", str], None]

# without a terminal, a long stage writes a line with its estimate this often (seconds)
QUIET_INTERVAL_S = 60.0


def format_duration(seconds: float) -> str:
    """``4.2 s``, ``3 min 05 s``, ``1 h 02 min``: short and readable in a log line or on a page."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _StageLines:
    """The quiet stand-in for a tqdm bar: a line a minute while a long stage runs, one line when it ends."""

    def __init__(self, desc: str, total: int | None, stream: TextIO, interval: float = QUIET_INTERVAL_S) -> None:
        self.desc, self.total, self.stream, self.interval = desc, total, stream, interval
        self.started = self.last_line = time.monotonic()
        self.done = 0
        self.postfix = ""

    def _count(self) -> str:
        return f"{self.done} of {self.total}" if self.total is not None else f"{self.done}"

    def step(self, done: int, postfix: str) -> None:
        self.done, self.postfix = done, postfix
        now = time.monotonic()
        if now - self.last_line < self.interval:
            return
        self.last_line = now
        elapsed = now - self.started
        line = f"{self.desc}: {self._count()}, {format_duration(elapsed)} so far"
        if self.total and done:
            line += f", about {format_duration(elapsed * (self.total - done) / done)} left"
        self._write(line)

    def finish(self) -> None:
        extra = f" ({self.postfix})" if self.postfix else ""
        self._write(f"{self.desc}: {self._count()} in {format_duration(time.monotonic() - self.started)}{extra}")

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


@dataclass
class Reporter:
    """Where progress goes and how a stop request arrives."""

    callback: ProgressCallback | None = None
    cancel_event: threading.Event | None = None
    show_tqdm: bool = True
    # live bars (True) or a line per stage (False); None = live bars only when stderr is a terminal
    interactive: bool | None = None
    _sections: list[str] = field(default_factory=list, repr=False)

    @property
    def live_bars(self) -> bool:
        if self.interactive is not None:
            return self.interactive
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Label the stages run inside, e.g. ``fold 1 of 2``, so that repeated stages can be told apart."""
        self._sections.append(name)
        try:
            yield
        finally:
            self._sections.pop()

    def label(self, desc: str) -> str:
        """``desc`` with the labels of the open sections in front."""
        return " · ".join([*self._sections, desc])

    def check_cancelled(self) -> None:
        if self.cancel_event is not None and self.cancel_event.is_set():
            raise Cancelled("stopped on request")

    def update(self, stage: str, done: int, total: int | None, info: str = "") -> None:
        self.check_cancelled()
        if self.callback is not None:
            self.callback(stage, done, total, info)

    def iter(self, iterable: Iterable[T], desc: str, total: int | None = None, info: Callable[[], str] | None = None) -> Iterator[T]:
        """Yield from ``iterable``, reporting each step; ``info`` adds live text such as the loss."""
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        desc = self.label(desc)
        if self.show_tqdm and not self.live_bars:
            yield from self._iter_quiet(iterable, desc, total, info)
            return
        bar = tqdm(iterable, desc=desc, total=total, disable=not self.show_tqdm, leave=False, dynamic_ncols=True)
        try:
            self.update(desc, 0, total)
            for done, item in enumerate(bar, start=1):
                yield item
                text = info() if info is not None else ""
                if text:
                    bar.set_postfix_str(text, refresh=False)
                self.update(desc, done, total, text)
        finally:
            bar.close()  # also on errors and Ctrl-C, so that the message that follows starts on a clean line

    def _iter_quiet(self, iterable: Iterable[T], desc: str, total: int | None, info: Callable[[], str] | None) -> Iterator[T]:
        lines = _StageLines(desc, total, sys.stderr)
        self.update(desc, 0, total)
        for done, item in enumerate(iterable, start=1):
            yield item
            text = info() if info is not None else ""
            lines.step(done, text)
            self.update(desc, done, total, text)
        lines.finish()  # only when the stage completed: an error or a stop has its own message

    def log(self, message: str) -> None:
        """A line of news (not a step): printed above the bar on the CLI, shown as text in the UI."""
        if self.show_tqdm:
            tqdm.write(message)
        if self.callback is not None:
            self.callback(message, 0, None, "")


class Phases:
    """Several long stages of known relative cost: after each, log its time and an estimate of the time left.

    The costs only need to be right relative to each other (a fold on half the data costs 0.5 of the whole).

    >>> phases = Phases(Reporter(show_tqdm=False), {"all data": 1.0, "fold 1 of 2": 0.5, "fold 2 of 2": 0.5})
    >>> with phases.run("all data"):
    ...     pass
    """

    def __init__(self, reporter: Reporter, costs: dict[str, float], title: str = "") -> None:
        self.reporter, self.costs, self.title = reporter, dict(costs), title
        self.spent = 0.0  # seconds of the phases finished so far
        self.cost_done = 0.0

    @contextlib.contextmanager
    def run(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        with self.reporter.section(name):
            yield
        took = time.monotonic() - started
        self.spent += took
        self.cost_done += self.costs[name]
        left_cost = sum(self.costs.values()) - self.cost_done
        line = f"{self.title + ': ' if self.title else ''}{name} done in {format_duration(took)}"
        if left_cost > 0 and self.cost_done > 0:
            line += f"; about {format_duration(self.spent * left_cost / self.cost_done)} left for the rest"
        self.reporter.log(line)


SILENT = Reporter(show_tqdm=False)


def close_progress_bars() -> None:
    """Close every open tqdm bar, so that an error message printed next starts on its own line.

    A bar whose loop was left by an exception stays open until its generator is garbage-collected.
    """
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
