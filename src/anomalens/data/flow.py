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
from anomalens.limits import is_frame_rate

FLOW_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class FlowStream:
    """Optical flow of each grey ``uint8`` frame ``(H, W)`` from the one pushed before it.

    With ``min_contrast`` > 0 each vector is weighted by :func:`texture_confidence` of the earlier frame (where
    the flow is defined)."""

    def __init__(self, preset: str = "medium", min_contrast: float = 0.0) -> None:
        if preset not in FLOW_PRESETS:
            raise ConfigError(f"flow preset must be one of {', '.join(FLOW_PRESETS)}, got {preset!r}")
        if min_contrast < 0:
            raise ConfigError(f"flow min_contrast must be >= 0, got {min_contrast}")
        self.dis = cv2.DISOpticalFlow_create(FLOW_PRESETS[preset])
        self.min_contrast = float(min_contrast)
        self.previous: np.ndarray | None = None

    def push(self, grey: np.ndarray) -> np.ndarray | None:
        """The flow ``(2, H, W)`` float32 from the previous frame to ``grey``; None for the first frame."""
        grey = np.ascontiguousarray(grey, dtype=np.uint8)
        previous, self.previous = self.previous, grey
        if previous is None:
            return None
        flow = self.dis.calc(previous, grey, None).transpose(2, 0, 1)
        if self.min_contrast > 0:
            flow = flow * texture_confidence(previous, self.min_contrast)
        return flow


def texture_confidence(grey: np.ndarray, min_contrast: float) -> np.ndarray:
    """How far the flow at each pixel of a grey ``uint8`` frame ``(H, W)`` can be trusted, in [0, 1]:
    ``g^2 / (g^2 + min_contrast^2)``, with ``g`` the local gradient (grey levels per pixel, after a Gaussian of
    1 px that takes off pixel noise). A gradient of ``min_contrast`` counts half; sensor noise on a flat area
    (a few levels) counts little, any real edge fully."""
    smooth = cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.0)
    gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0, ksize=3) * 0.125  # Sobel weights sum to 8 per unit slope
    gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1, ksize=3) * 0.125
    g2 = gx * gx + gy * gy
    return g2 / (g2 + np.float32(min_contrast) ** 2)


def rate_scale(training_fps: float | None, fps: float | None) -> float:
    """The factor that turns flow measured between frames of a clip at ``fps`` frames per second into pixels per
    frame of footage at ``training_fps`` (the rate a model learned motion at): ``fps / training_fps`` (pixels per
    second, ``flow * fps``, over the training rate). At half the rate each step spans twice the time, so its flow is
    halved. Exactly 1 when either rate is unknown (None, 0) or they agree to a millionth (a rate saved and read back),
    so that such clips are measured exactly as before rates were considered.

    >>> rate_scale(10.0, 5.0), rate_scale(25.0, 25.0), rate_scale(None, 12.5), rate_scale(25.0, None)
    (0.5, 1.0, 1.0, 1.0)
    """
    if not (is_frame_rate(training_fps) and is_frame_rate(fps)):
        return 1.0
    ratio = float(fps) / float(training_fps)  # type: ignore[arg-type]
    return 1.0 if abs(ratio - 1.0) < 1e-6 else ratio


def scale_flow(flow: np.ndarray | None, scale: float) -> np.ndarray | None:
    """A flow ``(2, H, W)`` times ``scale`` (:func:`rate_scale`), float32; the very same array when ``scale`` is 1."""
    if flow is None or scale == 1.0:
        return flow
    return flow * np.float32(scale)


# pixels per frame at which a textured pixel counts as still by exp(-1) (see still_texture). A speed, like the flow
# it is compared with: with a rescaled flow (rate_scale, the model's motion_per_second) it is per frame of the
# training footage, so a belt that still runs at half the frame rate does not count as still
STILL_SPEED = 0.5
STILL_CONTRAST = 4.0  # grey-level gradient at which a pixel counts as half textured (texture_confidence)


def still_texture(grey: np.ndarray, flow: np.ndarray, weight: float) -> np.ndarray:
    """``(H, W)``: ``weight`` where a grey ``uint8`` frame has texture that does not move, falling to 0 on flat
    areas and where it moves: ``weight * texture_confidence * exp(-speed / STILL_SPEED)``.

    A stopped conveyor belt gives empty orientation histograms, and so does a part's flat interior riding a
    running belt (flow is undetermined there): both looked like normal "no motion" in every belt cell, so a stop
    raised the motion cue by a fraction of a standard unit. The belt's stripes are textured, the interior is not;
    on the synthetic conveyor this map averaged 0.0000 over the running belt and 0.21 over the stopped one."""
    speed = np.hypot(flow[0], flow[1])
    return (weight * texture_confidence(grey, STILL_CONTRAST) * np.exp(-speed / STILL_SPEED)).astype(np.float32)
