"""How a live watch runs: one dataclass whose defaults the ``watch`` command and the UI show (light to import).

>>> WatchSettings(realtime=True).queue_size
4
"""

from __future__ import annotations

from dataclasses import dataclass

# stfeatures smooths with a Gaussian of radius 8 frames (0.32 s at 25 fps); from a live source it looks only
# 3 frames ahead (0.12 s): on generated 640x480 conveyor streams every event of 5 frames or more stayed within
# IoU 0.83 of its offline twin in 2 of 3 streams (README "Watch the line live")
LIVE_LOOKAHEAD = 3


@dataclass
class WatchSettings:
    """How ``watch`` runs; field names are the CLI flags with underscores."""

    realtime: bool = False  # play a video file at its own frame rate (then frames may drop, as from a camera)
    # frames waiting between the reader and the scorer: when the scorer falls behind, a frame waits this many
    # frame periods (4 = 0.16 s at 25 fps) before it is dropped, so the queue bounds the latency, not the drop rate
    queue_size: int = 4
    batch_size: int = 2  # at most this many waiting frames are scored together (a batch adds its own compute time)
    # threads of each library's pool (torch, ONNX Runtime, faiss, OpenCV) while watching: the watch's own threads
    # already run its stages side by side, and a second level inside each library only added synchronisation
    # (8-16% more CPU per 640x480 frame with 2; benchmarks/live_soak.py budget, README "Watch the line live")
    threads: int = 1
    max_latency: float = 1.0  # seconds: older frames from a live source are dropped, not scored late
    # frames of look-ahead smoothing for video models; None: LIVE_LOOKAHEAD from a live source (a stream, a
    # camera, a file played in real time), the model's full kernel otherwise (a file read as fast as it goes:
    # then the scores equal analyze-video's)
    lookahead: int | None = None
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

    def lookahead_for(self, live: bool) -> int | None:
        """The look-ahead for a source: as set, else :data:`LIVE_LOOKAHEAD` when live, else the full kernel."""
        if self.lookahead is not None:
            return self.lookahead
        return LIVE_LOOKAHEAD if live else None
