"""Dense optical flow between consecutive frames (OpenCV's DIS), without torch.

Shared by the video model (:mod:`anomalens.models.video.motion`) and the torch-free runtime of exported video
bundles (:mod:`anomalens.inference.video`), so that both measure motion with the same code and presets.

>>> stream = FlowStream("medium")
>>> stream.push(np.zeros((32, 48), np.uint8)) is None       # the first frame has no predecessor
True
>>> stream.push(np.zeros((32, 48), np.uint8)).shape          # (2, H, W): dx, dy in pixels per frame
(2, 32, 48)
"""

from __future__ import annotations

import cv2
import numpy as np

from anomalens.errors import ConfigError

FLOW_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class FlowStream:
    """Optical flow of each grey ``uint8`` frame ``(H, W)`` from the one pushed before it."""

    def __init__(self, preset: str = "medium") -> None:
        if preset not in FLOW_PRESETS:
            raise ConfigError(f"flow preset must be one of {', '.join(FLOW_PRESETS)}, got {preset!r}")
        self.dis = cv2.DISOpticalFlow_create(FLOW_PRESETS[preset])
        self.previous: np.ndarray | None = None

    def push(self, grey: np.ndarray) -> np.ndarray | None:
        """The flow ``(2, H, W)`` float32 from the previous frame to ``grey``; None for the first frame."""
        grey = np.ascontiguousarray(grey, dtype=np.uint8)
        previous, self.previous = self.previous, grey
        if previous is None:
            return None
        return self.dis.calc(previous, grey, None).transpose(2, 0, 1)
