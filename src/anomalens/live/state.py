"""What a running watch shows (the UI's Live view reads it): the latest frame and map, recent scores and messages,
and the status figures, behind one lock.

>>> state = WatchState()
>>> state.latest_overlay() is None            # nothing scored yet
True
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from anomalens.visualization.overlays import overlay


@dataclass
class WatchState:
    """What the watcher shows while it runs (for the UI): read under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    status: dict[str, Any] = field(default_factory=dict)
    image: np.ndarray | None = None  # the latest scored frame
    heatmap: np.ndarray | None = None  # and its raw map
    calibration: Any = None  # to normalise the map when it is shown
    scores: deque = field(default_factory=lambda: deque(maxlen=600))  # (frame, normalised score)
    events: deque = field(default_factory=lambda: deque(maxlen=50))  # latest messages, newest last

    def latest_overlay(self, width: int = 480) -> np.ndarray | None:
        """The latest scored frame with its heatmap blended in, ``width`` pixels wide (computed when asked)."""
        with self.lock:
            image, heatmap = self.image, self.heatmap
        if image is None or heatmap is None:
            return None
        heatmap = self.calibration.normalize(heatmap.astype(np.float32))
        h, w = image.shape[:2]
        if w != width:
            image = np.asarray(Image.fromarray(image).resize((width, max(1, round(h * width / w))), Image.BILINEAR))
        return overlay(image, heatmap)
