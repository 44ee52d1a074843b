"""How a live watch runs: one dataclass whose defaults the ``watch`` command and the UI show (light to import).

>>> WatchSettings(realtime=True).queue_size
8
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WatchSettings:
    """How ``watch`` runs; field names are the CLI flags with underscores."""

    realtime: bool = False  # play a video file at its own frame rate (then frames may drop, as from a camera)
    queue_size: int = 8  # frames waiting between the reader and the scorer
    batch_size: int = 4  # at most this many waiting frames are scored together
    max_latency: float = 1.0  # seconds: older frames from a live source are dropped, not scored late
    lookahead: int | None = None  # frames of look-ahead smoothing for video models (None: the model's full kernel)
    close_level: float = 0.5  # normalised score below which an open event counts as quiet (0.5 = the threshold)
    close_after: float | None = None  # seconds of quiet that close an event (None: analyze-video's merge gap)
    min_length: int = 1  # frames an event must span to be kept
    clip_before: float = 3.0  # seconds of video kept before an event's start
    clip_after: float = 3.0  # and after its end
    clip_max: float = 60.0  # longest clip, seconds
    clip_width: int = 640  # clip frames are scaled down to at most this width
    csv_rows: int = 100_000  # per-frame CSV rotates after this many rows
    csv_keep: int = 10  # and keeps this many files
    sink_timeout: float = 10.0  # seconds to deliver what the webhook/MQTT still hold when the watch stops
