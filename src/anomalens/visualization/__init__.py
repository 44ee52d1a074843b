"""Pictures of results: heatmaps and overlays (:mod:`.overlays`), report figures (:mod:`.plots`)."""

from anomalens.visualization.overlays import (
    anomaly_contours,
    draw_contours,
    heatmap_rgb,
    hstack_panels,
    mask_outline,
    overlay,
    resize_map,
    to_hwc,
)

__all__ = [
    "anomaly_contours",
    "draw_contours",
    "heatmap_rgb",
    "hstack_panels",
    "mask_outline",
    "overlay",
    "resize_map",
    "to_hwc",
]
