"""What one scored image gives, the same from a checkpoint (the library) or from a bundle (the runtime).

>>> results = results_from_outputs(scores, maps, None, calibration)     # doctest: +SKIP
>>> r = results[0]; r.score, r.normalized_score, r.anomalous, r.regions  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from anomalens.metrics.regions import Region, find_regions, mask_at_size, size_fields
from anomalens.metrics.threshold import Calibration


@dataclass
class InferenceResult:
    """One image's verdict.

    ``score``: raw image score; ``normalized_score``: in (0, 1), 0.5 at the threshold; ``anomalous``: score above
    the threshold; ``heatmap``: normalised anomaly map ``(H, W)`` at the model's input size (same scale for every
    image); ``mask``: ``bool`` ``(H, W)``, pixels above the pixel threshold, at the model's input size too;
    ``regions``: connected parts of the mask, largest first, in pixels of the image as given (``image_size``,
    its ``(height, width)``; of the model's input where it is not known: arrays already resized by the caller);
    ``view``: the model's reconstruction (RGB ``uint8``) for reconstruction models.
    """

    score: float
    normalized_score: float
    anomalous: bool
    threshold: float
    pixel_threshold: float
    heatmap: np.ndarray
    mask: np.ndarray
    regions: list[Region] = field(default_factory=list)
    view: np.ndarray | None = None
    image_size: tuple[int, int] | None = None

    def image_mask(self) -> np.ndarray:
        """The defect mask at the image's own size (the pixels its regions count), or at the model's if unknown."""
        return mask_at_size(self.mask, self.image_size) if self.image_size is not None else self.mask

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (no arrays)."""
        return {
            "score": self.score,
            "normalized_score": self.normalized_score,
            "anomalous": self.anomalous,
            "threshold": self.threshold,
            "pixel_threshold": self.pixel_threshold,
            "regions": [r.to_dict() for r in self.regions],
            **size_fields(self.image_size),
        }


def results_from_outputs(
    scores: np.ndarray, maps: np.ndarray, views: np.ndarray | None, calibration: Calibration, min_region_area: int = 1,
    image_sizes: Sequence[tuple[int, int] | None] | None = None,
) -> list[InferenceResult]:
    """Raw scores ``(N,)``, maps ``(N, H, W)`` and views ``(N, 3, H, W)`` in [0, 1] (or None) -> one result each;
    ``image_sizes``: each image's own ``(height, width)``, in whose pixels its regions are given."""
    normalized_scores = calibration.normalize(scores)
    normalized_maps = calibration.normalize(maps)
    region_threshold = calibration.region_threshold()
    results = []
    for i in range(len(scores)):
        view = None
        if views is not None:
            view = (np.clip(views[i], 0.0, 1.0).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
        score = float(scores[i])
        size = tuple(int(v) for v in image_sizes[i]) if image_sizes is not None and image_sizes[i] is not None else None
        results.append(InferenceResult(
            score=score,
            normalized_score=float(normalized_scores[i]),
            anomalous=bool(calibration.is_anomalous(score)),
            threshold=float(calibration.threshold),
            pixel_threshold=float(region_threshold),
            heatmap=normalized_maps[i],
            mask=maps[i] > region_threshold,
            regions=find_regions(maps[i], region_threshold, min_region_area, image_size=size),  # type: ignore[arg-type]
            view=view,
            image_size=size,  # type: ignore[arg-type]
        ))
    return results
