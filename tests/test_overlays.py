"""Heatmaps on a fixed scale, overlays, outlines and report figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anomalens.visualization import anomaly_contours, draw_contours, heatmap_rgb, hstack_panels, mask_outline, overlay, resize_map, to_hwc
from anomalens.visualization.plots import SampleRow, plot_roc, plot_samples, plot_score_distribution


def test_heatmap_colour_depends_on_the_value_only_never_on_the_other_pixels():
    cold = np.full((4, 4), 0.1, np.float32)
    mixed = cold.copy()
    mixed[0, 0] = 0.9
    # a per-image min-max scaling would turn the cold image's 0.1 into the hottest colour
    assert np.array_equal(heatmap_rgb(cold)[1, 1], heatmap_rgb(mixed)[1, 1])
    assert not np.array_equal(heatmap_rgb(mixed)[0, 0], heatmap_rgb(mixed)[1, 1])
    low, high = heatmap_rgb(np.array([[0.0, 1.0]]))[0]
    assert low[2] > low[0] and high[0] > high[2]  # blue for normal, red for anomalous
    assert np.array_equal(heatmap_rgb(np.array([[np.nan, 2.0]]))[0], heatmap_rgb(np.array([[0.0, 1.0]]))[0])


def test_overlay_blends_with_alpha_and_resizes_the_map():
    image = np.full((8, 8, 3), 100, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    assert np.array_equal(overlay(image, heat + 1.0, alpha=0.0), image)
    full = overlay(image, heat + 1.0, alpha=1.0)
    assert full.shape == (8, 8, 3) and np.array_equal(full[0, 0], heatmap_rgb(np.ones((1, 1)))[0, 0])
    # clearly normal areas (well below the threshold 0.5) keep the photo's own colours: no tint
    assert np.array_equal(overlay(image, heat + 0.2, alpha=1.0), image)
    half = overlay(image, heat + 0.5, alpha=1.0).astype(int)  # at the threshold: half opacity
    expected = (image.astype(int) + heatmap_rgb(np.full((1, 1), 0.5))[0, 0].astype(int)) / 2
    assert np.abs(half[0, 0] - expected[0, 0]).max() <= 1
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, heat, alpha=1.5)


def test_outline_and_contours():
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    outline = mask_outline(mask)
    assert outline.sum() == 16 and not outline[3, 3] and outline[1, 1]
    drawn = draw_contours(np.zeros((7, 7, 3), np.uint8), mask, color=(0, 255, 0))
    assert drawn[1, 3].tolist() == [0, 255, 0] and drawn[3, 3].tolist() == [0, 0, 0]
    heat = np.zeros((7, 7), np.float32)
    heat[2:5, 2:5] = 0.9  # above the threshold (0.5) only in the middle
    outlined = anomaly_contours(np.zeros((7, 7, 3), np.uint8), heat, color=(255, 0, 0))
    assert outlined[2, 2].tolist() == [255, 0, 0] and outlined[0, 0].tolist() == [0, 0, 0]
    assert not mask_outline(np.zeros((3, 3), bool)).any()


def test_to_hwc_accepts_the_layouts_we_meet():
    chw = torch.zeros((3, 5, 6), dtype=torch.uint8)
    assert to_hwc(chw).shape == (5, 6, 3)
    floats = np.ones((3, 5, 6), np.float32)
    assert to_hwc(floats).dtype == np.uint8 and to_hwc(floats).max() == 255
    assert to_hwc(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert resize_map(np.ones((2, 3)), (4, 6)).shape == (4, 6)
    assert hstack_panels([np.zeros((4, 4, 3), np.uint8), np.zeros((8, 8, 3), np.uint8)], gap=2).shape == (4, 10, 3)


def test_report_figures_are_written(tmp_path):
    roc = plot_roc(np.array([0, 0, 1]), np.array([0, 1, 1]), 1.0, tmp_path / "roc.png", marker=(0.0, 1.0))
    dist = plot_score_distribution(np.array([0.1, 0.2, 0.9, 0.8]), ["good", "good", "spot", "scratch"], 0.5, tmp_path / "dist.png")
    image = np.zeros((16, 16, 3), np.uint8)
    rows = [SampleRow("good", image, np.zeros((16, 16))), SampleRow("spot", image, np.ones((16, 16)), image, np.ones((16, 16), bool))]
    samples = plot_samples(rows, tmp_path / "samples.png")
    for path in (roc, dist, samples):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dist.png", "roc.png", "samples.png"]  # no temporary files left
