"""Live events: intervals that open when the score crosses the saved threshold and close after it falls back
(their clips are written by :mod:`anomalens.live.clips`).

:class:`EventTracker` sees one frame at a time, in order, and gives the same intervals as the offline
:func:`~anomalens.metrics.events.detect_events` over the same scores (``close_level`` = the threshold,
``close_after`` = its ``merge_gap``), which is what lets ``watch`` match ``analyze-video``. With hysteresis
(``close_level`` below the threshold) an open event stays open while the score stays above the lower level.

>>> tracker = EventTracker(threshold=1.0, close_level=1.0, fps=10, close_after=1)
>>> [tracker.update(i, s) for i, s in enumerate([0, 0, 2, 3, 0, 2, 0, 0])][-1][0].event["end_frame"]
5
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anomalens.metrics.events import event_record


@dataclass
class OpenEvent:
    start: int
    scores: array = field(default_factory=lambda: array("d"))  # from the start on; -inf for dropped frames (8 bytes a frame)
    last_above: int = 0
    announced: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # what the watcher keeps with it (peak frame, cues, times)

    def frames(self) -> int:
        return self.last_above - self.start + 1


@dataclass
class Transition:
    kind: str  # "started" (the event reached its minimum length) or "closed"
    open_event: OpenEvent
    event: dict[str, Any] = field(default_factory=dict)  # the finished event's fields (kind "closed")


class EventTracker:
    """Opens an event when a frame's score exceeds ``threshold``; keeps it open while frames exceed
    ``close_level`` (hysteresis when lower than the threshold) with gaps of at most ``close_after`` frames;
    keeps it only if it spans ``min_length`` frames. Frame indices may skip (dropped frames)."""

    def __init__(self, threshold: float, close_level: float, fps: float, close_after: int = 0, min_length: int = 1) -> None:
        if close_level > threshold:
            raise ValueError("the closing level cannot be above the threshold")
        if close_after < 0 or min_length < 1:
            raise ValueError("close_after must be >= 0 and min_length >= 1")
        self.threshold, self.close_level, self.fps = threshold, close_level, fps
        self.close_after, self.min_length = close_after, min_length
        self.current: OpenEvent | None = None

    def update(self, index: int, score: float) -> list[Transition]:
        out: list[Transition] = []
        event = self.current
        if event is not None and index - event.last_above - 1 > self.close_after:  # frames were dropped meanwhile
            out += self._close()
            event = None
        if event is None:
            if score <= self.threshold:
                return out
            event = self.current = OpenEvent(start=index, last_above=index)
        event.scores.extend([-math.inf] * (index - event.start - len(event.scores)))  # dropped frames have no score
        event.scores.append(float(score))
        if score > self.close_level:
            event.last_above = index
            if not event.announced and event.frames() >= self.min_length:
                event.announced = True
                out.append(Transition("started", event))
        elif index - event.last_above > self.close_after:  # a longer quiet stretch would not be merged
            out += self._close()
        return out

    def finish(self) -> list[Transition]:
        """The stream ended: close the open event at its last frame above the closing level."""
        return self._close()

    def _close(self) -> list[Transition]:
        event, self.current = self.current, None
        if event is None or event.frames() < self.min_length:
            return []
        scores = np.frombuffer(event.scores, dtype=np.float64)[: event.frames()]
        return [Transition("closed", event, event_record(event.start, scores, self.fps))]
