"""The side-by-side video: Original | Reconstruction (or the model's view) | Heatmap overlay, with a score bar.

One output frame per input frame, at the input frame rate, or at each frame's own time for a variable-rate video
(``times``), so that the output plays as long as the input: the renderer walks the decoded video and the
per-frame results together and fails loudly if their lengths differ. Heatmaps use the model's calibration
(0.5 = threshold, fixed colour scale), so a normal frame stays blue and an anomalous one glows; the bar at
the bottom shows the normalised frame score with a tick at the threshold.

>>> renderer = SideBySideRenderer((240, 360), view_label="Reconstruction")          # doctest: +SKIP
>>> canvas = renderer.render(frame, normalized_map, view, score=1.3, normalized_score=0.7, index=5, fps=25)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from anomalens.data.video_io import write_video
from anomalens.metrics.classification import verdict_word
from anomalens.metrics.threshold import above_threshold
from anomalens.progress import SILENT, Reporter
from anomalens.visualization.overlays import anomaly_contours, heatmap_rgb, overlay, resize_map, to_hwc

TITLE_HEIGHT = 20
BAR_HEIGHT = 30
NORMAL_RGB = (60, 170, 90)
ANOMALY_RGB = (215, 40, 40)


@lru_cache(maxsize=4)
def _font(size: int):
    return ImageFont.load_default(size=size)


def panel_size(native: tuple[int, int], max_height: int = 360, max_width: int = 480, min_height: int = 192) -> tuple[int, int]:
    """Panel (H, W): native size scaled to fit the limits (small frames are enlarged so text stays readable)."""
    h, w = native
    scale = min(1.0, max_height / h, max_width / w)
    if h * scale < min_height:
        scale = min_height / h
    return (int(round(h * scale / 2)) * 2, int(round(w * scale / 2)) * 2)


class SideBySideRenderer:
    """Composes one output frame from a native frame and the model's results for it."""

    def __init__(self, native_size: tuple[int, int], view_label: str | None = "Reconstruction") -> None:
        self.panel = panel_size(native_size)
        self.view_label = view_label
        titles = ["Original", view_label or "Anomaly map", "Heatmap overlay"]
        h, w = self.panel
        self.size = (TITLE_HEIGHT + h + BAR_HEIGHT, 3 * w)
        header = Image.new("RGB", (3 * w, TITLE_HEIGHT), (24, 24, 24))
        draw = ImageDraw.Draw(header)
        for i, title in enumerate(titles):
            draw.text((i * w + 6, 3), title, fill=(235, 235, 235), font=_font(13))
        self.header = np.asarray(header)

    def _fit(self, image: np.ndarray) -> np.ndarray:
        h, w = self.panel
        if image.shape[:2] == (h, w):
            return image
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def render(
        self,
        frame: np.ndarray,
        normalized_map: np.ndarray,
        view: np.ndarray | None,
        score: float,
        normalized_score: float,
        index: int,
        fps: float,
        contour_level: float = 0.5,
        time: float | None = None,
        anomalous: bool | None = None,
    ) -> np.ndarray:
        """RGB ``uint8`` canvas ``(H, W, 3)``; ``normalized_map`` in [0, 1] at any resolution; the overlay outlines
        where it exceeds ``contour_level`` (0.5: the threshold). The bar shows ``time`` (seconds; None:
        ``index / fps``) and the verdict ``anomalous`` (the calibration's, on the raw score; None: judged from the
        normalised score, whose float32 rounding can put a score just above the threshold at exactly 0.5)."""
        h, w = self.panel
        original = self._fit(to_hwc(frame))
        heat = resize_map(np.asarray(normalized_map, dtype=np.float32), (h, w))
        middle = self._fit(to_hwc(view)) if view is not None else heatmap_rgb(heat)
        blended = anomaly_contours(overlay(original, heat, alpha=0.45), heat, level=contour_level)
        canvas = np.empty((*self.size, 3), dtype=np.uint8)
        canvas[:TITLE_HEIGHT] = self.header
        canvas[TITLE_HEIGHT : TITLE_HEIGHT + h] = np.concatenate([original, middle, blended], axis=1)
        if anomalous is None:
            anomalous = bool(above_threshold(normalized_score, 0.5))  # normalised 0.5 is the threshold
        canvas[TITLE_HEIGHT + h :] = self._bar(score, normalized_score, index, index / fps if time is None else time,
                                               anomalous)
        return canvas

    def _bar(self, score: float, normalized_score: float, index: int, seconds: float, anomalous: bool) -> np.ndarray:
        width = self.size[1]
        bar = Image.new("RGB", (width, BAR_HEIGHT), (24, 24, 24))
        draw = ImageDraw.Draw(bar)
        text = f"frame {index}  {seconds:6.2f} s  score " + ("not scored" if math.isnan(score) else f"{score:.4g}")
        draw.text((6, 8), text, fill=(235, 235, 235), font=_font(13))
        left = min(width // 2, 250)
        right = width - 100
        if right - left >= 40:
            fill = max(0.0, min(1.0, float(normalized_score)))
            draw.rectangle([left, 8, right, BAR_HEIGHT - 8], outline=(120, 120, 120), fill=(50, 50, 50))
            end = left + int(round(fill * (right - left)))
            if end > left:
                draw.rectangle([left, 9, end, BAR_HEIGHT - 9], fill=ANOMALY_RGB if anomalous else NORMAL_RGB)
            tick = left + (right - left) // 2  # normalised 0.5 is the threshold
            draw.line([tick, 4, tick, BAR_HEIGHT - 4], fill=(255, 255, 255), width=2)
        label, colour = verdict_word(anomalous), (ANOMALY_RGB if anomalous else NORMAL_RGB)
        draw.text((width - 96, 8), label, fill=colour, font=_font(13))
        return np.asarray(bar)


def render_side_by_side(
    path: str | Path,
    native_frames: Iterable[np.ndarray],
    native_size: tuple[int, int],
    scores: np.ndarray,
    normalized_scores: np.ndarray,
    normalized_maps: Iterable[np.ndarray],
    views: np.ndarray | None,
    fps: float,
    view_label: str | None = "Reconstruction",
    reporter: Reporter = SILENT,
    contour_levels: Iterable[float] | None = None,
    times: np.ndarray | None = None,
    anomalous: np.ndarray | None = None,
) -> Path:
    """Write the side-by-side MP4: exactly one output frame per score, at ``fps``, or each at its own time in
    ``times`` (seconds, one per score: a variable-rate video's, see ``VideoClip.frame_times``).

    ``native_frames`` is re-decoded video (not held in memory); ``normalized_maps`` yields one map per frame, and
    ``contour_levels`` (None: the threshold, 0.5) the normalised level each frame's outline is drawn at: a video
    event's regions are cut at half the map's excess over the threshold, and the outline shows the same.
    ``anomalous`` (one verdict per score, the calibration's: ``Calibration.is_anomalous``) is what each frame's bar
    says; None: judged from the normalised scores.
    """
    renderer = SideBySideRenderer(native_size, view_label if views is not None else None)
    total = len(scores)
    if times is not None and len(times) != total:
        raise ValueError(f"{len(times)} frame times for {total} scores")

    def frames() -> Iterator[np.ndarray]:
        count = 0
        maps = iter(normalized_maps)
        levels = iter(contour_levels) if contour_levels is not None else None
        for index, frame in enumerate(reporter.iter(native_frames, "render video", total=total)):
            if index >= total:
                raise RuntimeError(f"the video decoded more frames than were scored ({total})")
            view = views[index] if views is not None else None
            level = 0.5 if levels is None else float(next(levels))
            yield renderer.render(frame, next(maps), view, float(scores[index]), float(normalized_scores[index]), index, fps,
                                  contour_level=level, time=None if times is None else float(times[index]),
                                  anomalous=None if anomalous is None else bool(anomalous[index]))
            count += 1
        if count != total:
            raise RuntimeError(f"the video decoded {count} frames on the second pass but {total} were scored")

    return write_video(path, frames(), fps, times=times)
