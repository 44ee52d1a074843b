"""Heatmaps, overlays and outlines as plain ``uint8`` arrays, shared by reports, the video renderer and the UI.

Maps come in already normalised by the model's calibration (0.5 = the threshold, see
:mod:`anomalens.metrics.threshold`), and the colormap is fixed over 0..1: a normal image stays cold and
a defect glows, whatever the other images look like. Never min-max scale a map per image (that would make
every image look equally "hot").

>>> import numpy as np
>>> heat = heatmap_rgb(np.full((4, 4), 0.5, np.float32))
>>> heat.shape, heat.dtype
((4, 4, 3), dtype('uint8'))
>>> overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4))).shape
(4, 4, 3)
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

COLORMAP = "turbo"  # perceptually ordered, blue (normal) -> red (anomalous), readable by most colour-blind viewers
# The overlay's opacity ramps from 0 at OVERLAY_CLEAR to full at OVERLAY_FULL (normalised map values; 0.5 is the
# threshold): normal areas look like the photo instead of being tinted by the colormap's "cold" end.
OVERLAY_CLEAR = 0.25
OVERLAY_FULL = 0.75


@lru_cache(maxsize=4)
def _lut(name: str = COLORMAP) -> np.ndarray:
    """256 RGB colours of a matplotlib colormap (matplotlib is imported once, lazily)."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def to_hwc(image: Any) -> np.ndarray:
    """An image as RGB ``uint8`` ``(H, W, 3)``: accepts ``(3, H, W)`` or ``(H, W, 3)``, uint8 or float in [0, 1],
    numpy or torch, and grayscale ``(H, W)``."""
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[2] not in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise ValueError(f"expected an image of shape (H, W, 3) or (3, H, W), got {array.shape}")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.dtype != np.uint8:
        array = np.clip(array.astype(np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def resize_map(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float map ``(h, w)`` to ``shape`` (H, W); no change when it already fits."""
    values = np.asarray(values, dtype=np.float32)
    if values.shape == tuple(shape):
        return values
    img = Image.fromarray(np.ascontiguousarray(values)).resize((shape[1], shape[0]), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)


def heatmap_rgb(normalized_map: np.ndarray, colormap: str = COLORMAP) -> np.ndarray:
    """A normalised map ``(H, W)`` in [0, 1] -> RGB ``uint8`` ``(H, W, 3)`` with a fixed colormap."""
    values = np.nan_to_num(np.asarray(normalized_map, dtype=np.float32), nan=0.0)
    if values.ndim != 2:
        raise ValueError(f"expected a map of shape (H, W), got {values.shape}")
    index = np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return _lut(colormap)[index]


def overlay(image_uint8_hwc: np.ndarray, normalized_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the heatmap of ``normalized_map`` over an RGB image; the map is resized to the image if needed.

    The opacity follows the map: none where it is below ``OVERLAY_CLEAR`` (clearly normal: the photo shows as
    it is), ``alpha`` from ``OVERLAY_FULL`` on, linear between, so only suspicious areas are coloured.
    """
    image = to_hwc(image_uint8_hwc)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    values = np.nan_to_num(resize_map(normalized_map, image.shape[:2]), nan=0.0)
    heat = heatmap_rgb(values).astype(np.float32)
    opacity = alpha * np.clip((values - OVERLAY_CLEAR) / (OVERLAY_FULL - OVERLAY_CLEAR), 0.0, 1.0)[..., None]
    blended = image.astype(np.float32) * (1.0 - opacity) + heat * opacity
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)


def mask_outline(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """The boundary pixels of a boolean mask (inside edge, ``thickness`` pixels wide)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros_like(mask)
    eroded = ndimage.binary_erosion(mask, iterations=max(1, int(thickness)), border_value=0)
    return mask & ~eroded


def draw_contours(
    image_uint8_hwc: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 255, 0), thickness: int = 1
) -> np.ndarray:
    """A copy of the image with the outline of ``mask`` drawn in ``color`` (mask resized to the image if needed)."""
    image = to_hwc(image_uint8_hwc).copy()
    mask = np.asarray(mask)
    if mask.shape != image.shape[:2]:
        mask = resize_map(mask.astype(np.float32), image.shape[:2]) > 0.5
    image[mask_outline(mask, thickness)] = np.asarray(color, dtype=np.uint8)
    return image


def anomaly_contours(
    image_uint8_hwc: np.ndarray,
    normalized_map: np.ndarray,
    level: float = 0.5,
    color: tuple[int, int, int] = (255, 255, 255),
    thickness: int = 1,
) -> np.ndarray:
    """Outline the regions where the normalised map exceeds ``level`` (0.5 = the model's threshold)."""
    image = to_hwc(image_uint8_hwc)
    region = resize_map(normalized_map, image.shape[:2]) > level
    return draw_contours(image, region, color=color, thickness=thickness)


def hstack_panels(panels: list[np.ndarray], gap: int = 2, background: int = 255) -> np.ndarray:
    """Put equally tall RGB panels side by side with a thin gap (panels of other heights are resized)."""
    if not panels:
        raise ValueError("no panels to stack")
    arrays = [to_hwc(p) for p in panels]
    height = arrays[0].shape[0]
    fitted = []
    for a in arrays:
        if a.shape[0] != height:
            width = max(1, round(a.shape[1] * height / a.shape[0]))
            a = np.asarray(Image.fromarray(a).resize((width, height), Image.BILINEAR))
        fitted.append(a)
    spacer = np.full((height, gap, 3), background, np.uint8)
    out: list[np.ndarray] = []
    for i, a in enumerate(fitted):
        if i:
            out.append(spacer)
        out.append(a)
    return np.concatenate(out, axis=1)
