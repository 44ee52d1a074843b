"""Progress and cancellation for long work, shared by the CLI (tqdm) and the UI (a progress bar).

Library code wraps its loops with :meth:`Reporter.iter`; the caller decides how progress is shown and
when to stop. A stop request raises :class:`~anomalens.errors.Cancelled` at the next step.

>>> reporter = Reporter(show_tqdm=False)
>>> [x for x in reporter.iter(range(3), "demo")]
[0, 1, 2]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

from anomalens.errors import Cancelled

T = TypeVar("T")

# stage description, steps done, steps in all (None if unknown), extra text such as "loss 0.0123"
ProgressCallback = Callable[[str, int, "int | None", str], None]


@dataclass
class Reporter:
    """Where progress goes and how a stop request arrives."""

    callback: ProgressCallback | None = None
    cancel_event: threading.Event | None = None
    show_tqdm: bool = True
    _postfix: str = field(default="", repr=False)

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

    def log(self, message: str) -> None:
        """A line of news (not a step): printed above the bar on the CLI, shown as text in the UI."""
        if self.show_tqdm:
            tqdm.write(message)
        if self.callback is not None:
            self.callback(message, 0, None, "")


SILENT = Reporter(show_tqdm=False)


def close_progress_bars() -> None:
    """Close every open tqdm bar, so that an error message printed next starts on its own line.

    A bar whose loop was left by an exception stays open until its generator is garbage-collected.
    """
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()
