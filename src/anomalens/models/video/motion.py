"""Dense motion for the video model: DIS optical flow and per-cell orientation histograms.

DIS (Kroeger et al., ECCV 2016; OpenCV's ``DISOpticalFlow``) gives sub-pixel dense flow at hundreds of frames
per second on a CPU core, so every frame gets real velocities: an object too fast, going the wrong way or
not moving at all shows up in physical units (pixels per frame), unlike frame differences, which confuse
contrast with speed.

A cell's motion descriptor is a histogram of flow orientations over a window of two cells, each bin holding
the magnitude of the flow pointing that way (the velocity representation of Reiss & Hoshen, 2022, "Attribute-based
representations for accurate and interpretable video anomaly detection", applied densely instead of per
detected object).

Flow is only trusted where the frame has texture. Where it is flat, the flow is not determined by the image
(the aperture problem) and DIS returns whatever its noise suggests: on the synthetic conveyor the static housing
showed flows of 2 px per frame at the 95th percentile under H.264 and 6 under MJPEG, whose blocking and fresh
noise in every frame look like motion (``benchmarks/reencode.py``). Each flow vector is therefore weighted by
:func:`texture_confidence` (near 1 on edges and texture, near 0 on flat areas), which took those figures below
0.05 px while edges keep their full speed.

The flow (:class:`FlowStream`, :func:`texture_confidence`) lives in :mod:`anomalens.data.flow`, torch-free,
shared with the runtime of exported bundles.

>>> stream = FlowStream("medium")
>>> stream.push(np.zeros((32, 48), np.uint8)) is None       # the first frame has no predecessor
True
>>> stream.push(np.zeros((32, 48), np.uint8)).shape          # (2, H, W): dx, dy in pixels per frame
(2, 32, 48)
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from anomalens.data.flow import FLOW_PRESETS, STILL_SPEED, FlowStream, rate_scale, scale_flow, still_texture, texture_confidence  # noqa: F401  (torch-free, shared with the runtime)


def grey_frames(frames01: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(B, 3, H, W)`` in [0, 1] -> grey ``uint8`` ``(B, h, w)`` at ``size`` (area-averaged, which also denoises)."""
    return grey_tensor(frames01, size).cpu().numpy()


def grey_tensor(frames01: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`grey_frames` as a tensor (also traced into exported video bundles, :mod:`anomalens.export.video`)."""
    grey = F.interpolate(frames01.mean(dim=1, keepdim=True), size=size, mode="area")
    return grey[:, 0].mul(255).round().clamp(0, 255).to(torch.uint8)


def orientation_histograms(flow: torch.Tensor, bins: int, cell: int, still: torch.Tensor | None = None) -> torch.Tensor:
    """Flow ``(B, 2, H, W)`` -> ``(B, bins, ceil(H/cell), ceil(W/cell))`` magnitude per orientation bin.

    Each bin holds the mean over a ``2*cell`` window (centred on the cell) of the flow magnitude pointing into
    that bin's sector, so a fast object that covers part of the window still stands out. With ``still``
    ``(B, H, W)`` (:func:`~anomalens.data.flow.still_texture`) its window mean is one more channel, after the bins.
    """
    magnitude = flow.norm(dim=1, keepdim=True)
    angle = torch.atan2(flow[:, 1:2], flow[:, 0:1])  # image coordinates: y points down
    index = ((angle + math.pi) * (bins / (2 * math.pi))).long().clamp_(0, bins - 1)
    weighted = torch.zeros(flow.shape[0], bins, *flow.shape[2:], dtype=flow.dtype).scatter_(1, index, magnitude)
    if still is not None:
        weighted = torch.cat([weighted, still[:, None].to(flow.dtype)], dim=1)
    pooled = F.avg_pool2d(weighted, 2 * cell, stride=cell, padding=cell // 2, ceil_mode=True)
    return pooled[..., : math.ceil(flow.shape[2] / cell), : math.ceil(flow.shape[3] / cell)]


def typical_flow(histograms: torch.Tensor, size: tuple[int, int], neighbours: int = 0) -> np.ndarray:
    """The usual flow at each position, ``(K, 2, H, W)``, from a memory of normal orientation histograms.

    ``histograms`` ``(M, bins, h, w)``: each entry's bins are summed as vectors along their sector's centre
    (the mean flow of the window, up to the sectors' rounding), then the median over entries is taken per cell
    and upsampled to ``size``. On a conveyor this is the belt's motion; where nothing usually moves, zero.
    The direction is known to half a sector (see :func:`sector_tolerance`). With ``neighbours`` = n, the
    ``K = (2n + 1)^2`` candidates are the usual flows of the cells up to n cells away (as the model's own
    position tolerance), so that the edge of a moving belt is normal whether it moves or not.
    """
    bins = histograms.shape[1]
    centres = -math.pi + (torch.arange(bins, dtype=torch.float32) + 0.5) * (2 * math.pi / bins)
    hist = histograms.float()
    vectors = torch.stack([(hist * centres.cos()[:, None, None]).sum(1), (hist * centres.sin()[:, None, None]).sum(1)], 1)
    usual = vectors.median(dim=0).values[None]  # (1, 2, h, w)
    h, w = usual.shape[-2:]
    padded = F.pad(usual, (neighbours,) * 4, mode="replicate") if neighbours else usual
    shifted = [padded[..., dy : dy + h, dx : dx + w] for dy in range(2 * neighbours + 1) for dx in range(2 * neighbours + 1)]
    return F.interpolate(torch.cat(shifted), size=size, mode="bilinear", align_corners=False).numpy()


def sector_tolerance(usual: np.ndarray, bins: int) -> np.ndarray:
    """``(H, W)``: how far the true normal flow may lie from :func:`typical_flow`'s estimate ``usual``.

    Histograms keep each direction only to its sector (``2 pi / bins`` wide), so the estimate can point up to
    half a sector off: a chord of ``2 |usual| sin(pi / (2 bins))``, 39% of the speed for 8 bins.
    """
    return 2.0 * np.hypot(usual[..., 0, :, :], usual[..., 1, :, :]) * math.sin(math.pi / (2 * bins))


def flow_views(greys: np.ndarray, flows: list[np.ndarray], size: tuple[int, int], full_speed: float,
               usual: np.ndarray | None = None, tolerance: np.ndarray | float = 0.0) -> np.ndarray:
    """:func:`flow_view` of a batch of grey frames ``(B, H, W)`` and their flows (``(2, H, W)`` each), drawn at
    ``size`` (``usual`` and ``tolerance`` given at that size): frames and flows are area-averaged to it first, so
    the display costs a fraction of drawing at full size and resizing the result. ``uint8`` ``(B, 3, *size)``."""
    height, width = size
    out = np.empty((len(greys), 3, height, width), np.uint8)
    for i, (grey, flow) in enumerate(zip(greys, flows)):
        small_grey = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
        small_flow = cv2.resize(np.ascontiguousarray(flow.transpose(1, 2, 0)), (width, height), interpolation=cv2.INTER_AREA)
        out[i] = flow_view(small_grey, small_flow.transpose(2, 0, 1), full_speed, usual, tolerance)
    return out


def flow_view(grey: np.ndarray, flow: np.ndarray, full_speed: float, usual: np.ndarray | None = None,
              tolerance: np.ndarray | float = 0.0) -> np.ndarray:
    """What the motion cue sees, for display: the grey frame tinted by the flow (hue = direction,
    strength = speed, full colour at ``full_speed`` pixels per frame). ``uint8`` ``(3, H, W)``.

    With ``usual`` (:func:`typical_flow`, ``(K, 2, H, W)`` candidates) the tint shows how the motion differs
    from the nearest of the normal motions at each place, beyond ``tolerance`` pixels per frame: a belt that
    always moves stays grey, a belt that stops or speeds up, or a part going the wrong way, is coloured.
    Without it, all motion is coloured."""
    if usual is None:
        dx, dy = flow
        magnitude = np.hypot(dx, dy)
    else:
        residual = flow[None] - usual.reshape(-1, *flow.shape)  # (K, 2, H, W)
        excess = np.maximum(np.hypot(residual[:, 0], residual[:, 1]) - tolerance, 0.0)  # (K, H, W)
        nearest = excess.argmin(axis=0)[None]
        magnitude = np.take_along_axis(excess, nearest, axis=0)[0]
        dx = np.take_along_axis(residual[:, 0], nearest, axis=0)[0]
        dy = np.take_along_axis(residual[:, 1], nearest, axis=0)[0]
    hue = ((np.arctan2(dy, dx) + np.pi) * (90.0 / np.pi)).astype(np.uint8)  # OpenCV hue runs 0-179
    hsv = np.stack([hue, np.full_like(hue, 255), np.full_like(hue, 255)], axis=-1)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(np.float32)
    alpha = np.clip(magnitude / full_speed, 0.0, 1.0)[..., None]
    mixed = (1.0 - alpha) * grey[..., None].astype(np.float32) + alpha * colour
    return np.clip(mixed.round(), 0, 255).astype(np.uint8).transpose(2, 0, 1)
