"""Watching a running line: live sources, causal scoring with bounded latency, events, and where they go.

``anomalens watch`` and the UI's Live tab are thin layers over :class:`~anomalens.live.watcher.Watcher`.

>>> from anomalens.live import Watcher, WatchSettings                               # doctest: +SKIP
>>> Watcher("results/video_line3", "rtsp://127.0.0.1:8554/live", "watch_out").run()  # doctest: +SKIP
"""

from typing import Any

__all__ = ["Watcher", "WatchSettings", "watch"]


def __getattr__(name: str) -> Any:
    # imported on first use: the watcher pulls in torch and the models, the CLI's help must not wait for them
    if name in ("Watcher", "watch"):
        from anomalens.live import watcher

        return getattr(watcher, name)
    if name == "WatchSettings":
        from anomalens.live.settings import WatchSettings

        return WatchSettings
    raise AttributeError(name)
