"""Live events: intervals that open when the score crosses the saved threshold and close after it falls back
(their clips are written by :mod:`anomalens.live.clips`).

:class:`EventTracker` sees one frame at a time, in order, and gives the same intervals as the offline
:func:`~anomalens.metrics.events.detect_events` over the same scores (``close_level`` = the threshold,
``close_after`` = its ``merge_gap``), which is what lets ``watch`` match ``analyze-video``. With hysteresis
(``close_level`` below the threshold) an open event stays open while the score stays above the lower level. A
score that is not a number counts as above both levels, as
:func:`~anomalens.metrics.threshold.above_threshold` counts it.

Frames may come with their own time (a variable-frame-rate file's timestamps): once one of them is half a frame
or more off ``index / fps`` (as :meth:`~anomalens.data.video_io.VideoClip.frame_times` judges a whole file),
events are timed by them, as ``analyze-video`` times that file's events; until then, and for sources without
times, frame ``t`` is at ``t / fps``.

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

from anomalens.metrics.events import event_record, outranks
from anomalens.metrics.threshold import above_threshold


@dataclass
class _Candidate:
    index: int
    score: float
    data: Any  # what the caller gave with the frame (the watcher: its image, map, cues, file)


def _better(best: _Candidate | None, other: _Candidate | None) -> _Candidate | None:
    """The peak of the two (the earlier one on a tie), by the rule of :func:`~anomalens.metrics.events.peak_index`."""
    if best is None or other is None:
        return other if best is None else best
    return other if outranks(other.score, best.score) else best


@dataclass
class OpenEvent:
    start: int
    scores: array = field(default_factory=lambda: array("d"))  # from the start on; -inf for dropped frames (8 bytes a frame)
    times: array = field(default_factory=lambda: array("d"))  # the frames' own seconds, as scores; NaN: none given
    last_above: int = 0
    announced: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # what the watcher keeps with it (first frame, times)
    # the peak among the frames up to last_above (the event's frames), and among those since (its frames only if a
    # later frame extends it): so that the peak's data is the record's peak frame's, whatever comes after it
    peak: _Candidate | None = None
    since: _Candidate | None = None

    def frames(self) -> int:
        return self.last_above - self.start + 1

    @property
    def peak_data(self) -> Any:
        """What the caller gave with the event's peak frame (None before the first frame)."""
        return None if self.peak is None else self.peak.data


@dataclass
class Transition:
    kind: str  # "started" (the event reached its minimum length) or "closed"
    open_event: OpenEvent
    event: dict[str, Any] = field(default_factory=dict)  # the finished event's fields (kind "closed")


class EventTracker:
    """Opens an event when a frame's score exceeds ``threshold``; keeps it open while frames exceed
    ``close_level`` (hysteresis when lower than the threshold) with gaps of at most ``close_after`` frames;
    keeps it only if it spans ``min_length`` frames. Frame indices may skip (dropped frames); a NaN score counts
    as above both levels."""

    def __init__(self, threshold: float, close_level: float, fps: float, close_after: int = 0, min_length: int = 1) -> None:
        if close_level > threshold:
            raise ValueError("the closing level cannot be above the threshold")
        if close_after < 0 or min_length < 1:
            raise ValueError("close_after must be >= 0 and min_length >= 1")
        self.threshold, self.close_level, self.fps = threshold, close_level, fps
        self.close_after, self.min_length = close_after, min_length
        self.current: OpenEvent | None = None
        self.timed = False  # a frame's own time was half a frame or more off index / fps: events use the times

    def update(self, index: int, score: float, time: float | None = None, data: Any = None) -> list[Transition]:
        """Frame ``index``'s score; ``time``: its own seconds (None: the source gives none); ``data``: anything to
        keep with it should it be its event's peak (:attr:`OpenEvent.peak_data`)."""
        out: list[Transition] = []
        if time is not None and abs(time - index / self.fps) >= 0.5 / self.fps:
            self.timed = True
        event = self.current
        if event is not None and index - event.last_above - 1 > self.close_after:  # frames were dropped meanwhile
            out += self._close()
            event = None
        if event is None:
            if not above_threshold(score, self.threshold):  # a NaN opens an event
                return out
            event = self.current = OpenEvent(start=index, last_above=index)
        missing = index - event.start - len(event.scores)  # dropped frames have no score and no time
        event.scores.extend([-math.inf] * missing)
        event.times.extend([math.nan] * missing)
        event.scores.append(float(score))
        event.times.append(math.nan if time is None else float(time))
        event.since = _better(event.since, _Candidate(index, float(score), data))
        if above_threshold(score, self.close_level):  # above, or NaN: the same rule at the closing level
            event.last_above = index
            event.peak, event.since = _better(event.peak, event.since), None
            if not event.announced and event.frames() >= self.min_length:
                event.announced = True
                out.append(Transition("started", event))
        elif index - event.last_above > self.close_after:  # a longer quiet stretch would not be merged
            out += self._close()
        return out

    def start_time(self, event: OpenEvent) -> float:
        """When ``event`` started, in seconds of the source (its first frame's own time once events use them)."""
        first = event.times[0] if event.times else math.nan
        return first if self.timed and not math.isnan(first) else event.start / self.fps

    def finish(self) -> list[Transition]:
        """The stream ended: close the open event at its last frame above the closing level."""
        return self._close()

    def _close(self) -> list[Transition]:
        event, self.current = self.current, None
        if event is None or event.frames() < self.min_length:
            return []
        scores = np.frombuffer(event.scores, dtype=np.float64)[: event.frames()]
        record = event_record(event.start, scores, self.fps, self._times(event), first=event.start)
        return [Transition("closed", event, record)]

    def _times(self, event: OpenEvent) -> np.ndarray | None:
        """The event's frames' own times and, where it was read, the next frame's (when the event ends); None:
        ``index / fps`` (times not in use, or missing for one of the frames that time the event)."""
        if not self.timed:
            return None
        count = event.frames()
        times = np.frombuffer(event.times, dtype=np.float64)[: count + 1]
        if len(times) > count and math.isnan(times[count]):  # the next frame was dropped: the end is a period later
            times = times[:count]
        peak = event.peak.index - event.start if event.peak is not None else 0
        if any(math.isnan(times[i]) for i in (0, peak, count - 1)):
            return None
        return times
