"""Watching a running line: live sources, causal scoring with bounded latency, events, and where they go.

``anomalens watch`` and the UI's Live tab are thin layers over :class:`~anomalens.live.watcher.Watcher`.

>>> from anomalens.live import Watcher, WatchSettings                               # doctest: +SKIP
>>> Watcher("results/video_line3", "rtsp://127.0.0.1:8554/live", "watch_out").run()  # doctest: +SKIP
"""

from anomalens.live.watcher import Watcher, WatchSettings, watch

__all__ = ["Watcher", "WatchSettings", "watch"]
