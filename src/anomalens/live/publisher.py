"""The watch's publisher thread: each message to every sink, in order, off the scorer's thread.

A message may come with files to write first (an image model's event image and overlay), whose names join it.
A sink that fails never stops the watch or the other sinks.

>>> publisher = Publisher([EventLog(out)], WatchState())          # doctest: +SKIP
>>> publisher.publish({"type": "anomaly_started", "id": 1})      # doctest: +SKIP
>>> publisher.close(timeout=60)                                  # delivered, sinks still open  # doctest: +SKIP
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

from anomalens.live.sinks import Sink
from anomalens.live.state import WatchState

Saving = Callable[[], dict[str, Any]]


class Publisher:
    """Delivers messages to ``sinks`` on a thread of its own and keeps the latest in ``state.events``."""

    def __init__(self, sinks: list[Sink], state: WatchState, log: Callable[[str], None] | None = None) -> None:
        self.sinks, self.state = sinks, state
        self.log = log or (lambda message: None)
        self.outbox: queue.Queue[tuple[dict[str, Any], Saving | None] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._deliver, name="anomalens-publisher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def publish(self, message: dict[str, Any], saving: Saving | None = None) -> None:
        """Queue ``message`` (``saving``: files to write first, whose names join it); never blocks."""
        self.outbox.put((message, saving))

    def close(self, timeout: float) -> None:
        """Deliver what is queued (up to ``timeout`` seconds), then end the thread."""
        self.outbox.put(None)
        self.thread.join(timeout=timeout)

    def _deliver(self) -> None:
        while (item := self.outbox.get()) is not None:
            message, saving = item
            if saving is not None:
                try:
                    message.update(saving())
                except Exception as exc:  # evidence that cannot be saved must not lose the message
                    self.log(f"could not save the event's images ({exc})")
            for sink in self.sinks:
                try:
                    sink.send(message)
                except Exception as exc:  # a broken sink must never stop the watch
                    self.log(f"{sink.name}: could not take the message ({exc})")
            with self.state.lock:
                self.state.events.append(message)
