"""Defect regions and the pixel threshold: labelling against scipy, boxes/areas/peaks of known shapes, the pixel
threshold chosen on normal validation maps only, and regions in ``predict``."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from anomalens.metrics.regions import find_regions, label_components
from anomalens.metrics.threshold import Calibration, calibrate, pixel_threshold


def test_labelling_matches_scipy_8_connectivity():
    rng = np.random.default_rng(0)
    for _ in range(200):
        mask = rng.random((int(rng.integers(1, 30)), int(rng.integers(1, 30)))) > rng.uniform(0.3, 0.8)
        labels, count = label_components(mask)
        expected, expected_count = ndimage.label(mask, structure=np.ones((3, 3)))
        assert count == expected_count
        assert np.array_equal(labels > 0, mask)
        assert len(set(zip(labels[mask].tolist(), expected[mask].tolist()))) == count  # the same partition


def test_regions_of_known_shapes():
    score_map = np.zeros((20, 30), np.float32)
    score_map[2:6, 3:9] = 1.0
    score_map[4, 5] = 3.0  # the peak of the first region
    score_map[10:19, 20] = 2.0  # a vertical line
    score_map[12, 21] = 2.5  # touching it diagonally -> same region? (12,21) is next to (12,20): yes
    score_map[0, 29] = 0.4  # below the threshold
    regions = find_regions(score_map, threshold=0.5)
    assert [(r.x, r.y, r.width, r.height, r.area) for r in regions] == [(3, 2, 6, 4, 24), (20, 10, 2, 9, 10)]
    assert (regions[0].peak_score, regions[0].peak_x, regions[0].peak_y) == (3.0, 5, 4)
    assert (regions[1].peak_score, regions[1].peak_x, regions[1].peak_y) == (2.5, 21, 12)
    assert find_regions(score_map, threshold=10.0) == []
    diagonal = np.eye(5, dtype=np.float32)
    assert len(find_regions(diagonal, 0.5)) == 1  # 8-connected


def test_pixel_threshold_comes_from_normal_maps_and_never_exceeds_the_image_threshold():
    rng = np.random.default_rng(1)
    normal_maps = rng.normal(1.0, 0.1, size=(10, 32, 32))
    cal = calibrate(normal_maps.max(axis=(1, 2)), normal_maps=normal_maps)
    assert cal.pixel_threshold == pytest.approx(pixel_threshold(normal_maps, cal.threshold))
    assert cal.pixel_threshold <= cal.threshold
    assert (normal_maps > cal.pixel_threshold).mean() < 0.005  # about 0.1% of normal pixels, by the same rule
    # a flagged image always has a region, since its maximum exceeds the image threshold >= the pixel threshold
    anomalous = normal_maps[0].copy()
    anomalous[5:9, 5:9] = cal.threshold + 1.0
    assert find_regions(anomalous, cal.region_threshold())
    # models saved before pixel thresholds load, and fall back to the image threshold
    old = {k: v for k, v in cal.to_dict().items() if not k.startswith("pixel")}
    assert Calibration.from_dict(old).region_threshold() == cal.threshold


def test_predict_lists_regions_and_writes_masks(patchcore_run, synthetic_image_dataset, tmp_path):
    from anomalens.cli import main
    from anomalens.workflows.runs import read_model_config

    root, category = synthetic_image_dataset
    images = sorted((root / category / "test").rglob("*.png"))
    assert main(["predict", "--checkpoint", str(patchcore_run), *map(str, images), "--output-dir", str(tmp_path / "p"),
                 "--masks", "--device", "cpu"]) == 0
    table = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert table["pixel_threshold"] <= table["threshold"]
    flagged = [r for r in table["results"] if r["anomalous"]]
    assert flagged and all(r["regions"] for r in flagged)
    first = flagged[0]
    mask = np.asarray(Image.open(first["mask"])) > 0
    assert mask.sum() == sum(region["area"] for region in first["regions"])
    peak = max(region["peak_score"] for region in first["regions"])
    config = read_model_config(patchcore_run)["config"]
    if config["score_region"] == "part" and config["score_window"] > 1:  # a mean over squares, never above the peak
        assert peak >= first["score"] * (1 - 1e-5)
    else:  # the map's highest pixel
        assert peak == pytest.approx(first["score"], rel=1e-5)
