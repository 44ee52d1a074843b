"""The watch's running figures: frames in, scored and dropped, rates since the last report (the final report:
since the start), latency and processing time of the last 200 scored frames, and the one-line text of the
terminal's status line.

>>> figures = WatchFigures(started=0.0)
>>> figures.scored(arrived=1.0, processed=1.05, now=1.2)
>>> figures.report(read=1, scored=1, pushed_out=0, too_late=0, now=2.0)["latency_ms_p50"]
200.0
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timezone
from typing import Any


class WatchFigures:
    """Latencies (arrival -> final score), processing times (arrival -> raw score) and announce delays, and the
    counts of the last report (for the rates)."""

    def __init__(self, started: float, window: int = 200) -> None:
        self.latencies: deque[float] = deque(maxlen=window)
        self.processing: deque[float] = deque(maxlen=window)
        self.announce_delays: deque[float] = deque(maxlen=1000)
        self.started = started
        self.last = (started, 0, 0)  # time, frames read, frames scored at the last report

    def scored(self, arrived: float, processed: float, now: float) -> None:
        """A frame that arrived at ``arrived`` got its raw score at ``processed`` and its final score ``now``."""
        self.latencies.append(now - arrived)
        self.processing.append(processed - arrived)

    def report(self, *, read: int, scored: int, pushed_out: int, too_late: int, now: float,
               whole_run: bool = False) -> dict[str, Any]:
        """The counts, rates since the last report (``whole_run``: since the start), latency and processing
        percentiles (ms)."""
        if whole_run:
            self.last = (self.started, 0, 0)
        span = max(now - self.last[0], 1e-6)
        latencies, processing = sorted(self.latencies), sorted(self.processing)
        dropped = pushed_out + too_late
        figures = {
            "frames_read": read,
            "frames_scored": scored,
            "frames_dropped": dropped,
            "dropped_queue_full": pushed_out,
            "dropped_too_late": too_late,
            "dropped_percent": round(100 * dropped / max(read, 1), 2),
            "fps_in": round((read - self.last[1]) / span, 2),
            "fps_scored": round((scored - self.last[2]) / span, 2),
            "latency_ms_p50": milliseconds(latencies, 0.5),
            "latency_ms_p95": milliseconds(latencies, 0.95),
            "processing_ms_p50": milliseconds(processing, 0.5),
            "announce_delay_ms_max": round(1000 * max(self.announce_delays), 1) if self.announce_delays else None,
        }
        self.last = (now, read, scored)
        return figures


def status_text(status: dict[str, Any]) -> str:
    """The terminal's status line for a status dict."""
    open_text = f"event {status['open_event']['id']} open" if status.get("open_event") else "no open event"
    return (f"{status['fps_in']:5.1f} fps in, {status['fps_scored']:5.1f} scored, {status['frames_dropped']} dropped "
            f"({status['dropped_percent']:.1f}%), latency {status['latency_ms_p50'] or 0:.0f} ms, "
            f"{status['events']} events, {open_text}")


def iso_time(timestamp: float) -> str:
    """A ``time.time()`` value as an ISO 8601 UTC string with milliseconds."""
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def milliseconds(sorted_values: list[float], q: float) -> float | None:
    """The ``q`` quantile of sorted seconds, in milliseconds (None when empty)."""
    if not sorted_values:
        return None
    return round(1000 * sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 1)
