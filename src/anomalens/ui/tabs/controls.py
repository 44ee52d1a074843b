"""The Run and Cancel wiring every tab shares: a tab's jobs are keyed by the browser session and the tab's name
(``<session>:inspect``), so that each page's buttons reach only its own run.

No ``from __future__ import annotations``: Gradio reads the ``gr.Request`` annotation of handlers at run time.
"""

from typing import Any, Callable

import gradio as gr

from anomalens.ui.common import request_key
from anomalens.ui.jobs import JobBoard, cancel_text, wire_cancel


def enqueue_for(board: JobBoard, job: str) -> Callable[..., int]:
    """The handler that takes a ticket for this page's ``job`` (for :func:`~anomalens.ui.jobs.wire_run`)."""

    def enqueue(request: gr.Request) -> int:
        return board.enqueue(f"{request_key(request)}:{job}")

    return enqueue


def wire_cancel_button(button: Any, board: JobBoard, job: str, what: str, status: Any) -> Any:
    """Wire ``button`` to cancel this page's ``job`` (``what``: its name in the status line, e.g. "inspection"),
    a queued one before it starts and a running one at its next step (:func:`~anomalens.ui.jobs.wire_cancel`)."""

    def answer(request: gr.Request) -> str:
        return cancel_text(board, f"{request_key(request)}:{job}", what, stop_now=False)

    def stop(request: gr.Request) -> None:
        board.stop_marked(f"{request_key(request)}:{job}")

    return wire_cancel(button, answer, stop, status)
