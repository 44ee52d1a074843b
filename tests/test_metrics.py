"""Image and pixel metrics against hand-computed cases and independent references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from anomalens.metrics import aupro, confusion_at, f1_max, image_auroc, pixel_auroc, pro_curve, roc_curve
from anomalens.metrics import segmentation


# ---- image AUROC --------------------------------------------------------------------------------
def test_auroc_perfect_inverted_and_ties():
    labels = [0, 0, 1, 1]
    assert image_auroc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert image_auroc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert image_auroc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5


def test_auroc_partial_ties_count_one_half():
    # pairs (pos, neg): 0.5 vs 0.5 tie -> 1/2, 0.5 vs 0.1 -> 1, 0.9 vs both -> 2; total 3.5 of 4
    assert image_auroc([0, 0, 1, 1], [0.5, 0.1, 0.5, 0.9]) == pytest.approx(3.5 / 4)


def test_auroc_matches_sklearn_on_random_scores_with_ties():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounding makes many ties
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1]])
def test_one_class_only_is_a_clear_error(labels):
    with pytest.raises(ValueError, match="both normal and anomalous"):
        image_auroc(labels, np.arange(len(labels), dtype=float))
    with pytest.raises(ValueError, match="both normal and anomalous"):
        f1_max(labels, np.arange(len(labels), dtype=float))


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        image_auroc([0, 1], [0.1])
    with pytest.raises(ValueError, match="not finite"):
        image_auroc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="0 \\(normal\\) or 1"):
        image_auroc([0, 2], [0.1, 0.2])


def test_roc_curve_hand_computed():
    fpr, tpr, thresholds = roc_curve([0, 1, 0, 1], [0.1, 0.4, 0.35, 0.8])
    assert fpr.tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert thresholds[0] == np.inf and thresholds[1:].tolist() == [0.8, 0.4, 0.35, 0.1]


def test_roc_curve_groups_ties_into_one_point():
    fpr, tpr, _ = roc_curve([0, 1, 0, 1], [0.5, 0.5, 0.1, 0.9])
    assert list(zip(fpr, tpr)) == [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]


def test_f1_max_hand_computed():
    # flag >= 0.4: tp 2, fp 1, fn 0 -> F1 0.8; flag >= 0.9: tp 1, fn 1 -> 0.667; flag >= 0.2: tp 2 fp 2 -> 0.667
    f1, threshold = f1_max([0, 0, 1, 1], [0.2, 0.5, 0.4, 0.9])
    assert f1 == pytest.approx(0.8)
    assert threshold == 0.4


def test_confusion_at_uses_strictly_greater():
    result = confusion_at([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9], threshold=0.5)
    assert (result["true_positives"], result["false_positives"], result["false_negatives"]) == (1, 0, 1)
    assert result["false_positive_rate"] == 0.0 and result["recall"] == 0.5


def test_confusion_at_counts_a_score_that_is_not_a_number_as_flagged():
    # the model's own verdict: an image or frame that could not be scored is anomalous, so it is counted as flagged
    result = confusion_at([0, 0, 1, 1], [0.2, float("nan"), float("nan"), 0.1], threshold=0.5)
    assert (result["true_positives"], result["false_positives"], result["false_negatives"], result["true_negatives"]) \
        == (1, 1, 1, 1)


# ---- pixel AUROC ---------------------------------------------------------------------------------
def _random_case(seed=0, n=6, size=32):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    masks[0, 3:9, 3:7] = True
    masks[1, 20:30, 10:12] = True
    masks[1, 2:4, 2:4] = True
    masks[2, 5:25, 5:25] = True
    maps = (rng.normal(size=masks.shape) + 1.5 * masks).astype(np.float32)
    return masks, maps


def test_pixel_auroc_matches_sklearn():
    masks, maps = _random_case()
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9)


def test_pixel_auroc_binned_path_stays_close(monkeypatch):
    masks, maps = _random_case()
    exact = pixel_auroc(masks, maps)
    monkeypatch.setattr(segmentation, "EXACT_PIXEL_LIMIT", 100)
    assert pixel_auroc(masks, maps) == pytest.approx(exact, abs=1e-3)
    maps[0, 0, 0] = 1e9  # one extreme value must not squeeze all others into one bin
    assert pixel_auroc(masks, maps) == pytest.approx(exact, abs=1e-3)


def test_pixel_metrics_need_both_kinds_of_pixel():
    maps = np.zeros((2, 4, 4))
    with pytest.raises(ValueError, match="no ground-truth mask"):
        pixel_auroc(np.zeros((2, 4, 4), bool), maps)
    with pytest.raises(ValueError, match="every pixel"):
        aupro(np.ones((2, 4, 4), bool), maps)
    with pytest.raises(ValueError, match="shape"):
        aupro(np.ones((2, 4, 4), bool), np.zeros((2, 4, 5)))


# ---- AUPRO -----------------------------------------------------------------------------------------
def test_aupro_perfect_and_worst():
    masks, _ = _random_case()
    assert aupro(masks, masks.astype(np.float32)) == pytest.approx(1.0)
    assert aupro(masks, (~masks).astype(np.float32)) == pytest.approx(0.0)


def test_aupro_hand_computed_two_regions():
    # Region A = (0,0),(0,1) scores 0.9, 0.3; region B = (1,4) score 0.6 (not touching A); 7 normal pixels:
    # one at 0.8, six at 0.1. (FPR, PRO) steps: (0, .25) -> (1/7, .25) -> (1/7, 1) -> (1, 1).
    # Area up to 0.3: .25 * 1/7 + 1 * (0.3 - 1/7) = 0.3 - 0.75/7; / 0.3 = 9/14.
    masks = np.zeros((1, 2, 5), bool)
    masks[0, 0, :2] = True
    masks[0, 1, 4] = True
    maps = np.full((1, 2, 5), 0.1)
    maps[0, 0, :2] = [0.9, 0.3]
    maps[0, 1, 4] = 0.6
    maps[0, 0, 4] = 0.8
    assert aupro(masks, maps) == pytest.approx(9 / 14)


def test_aupro_regions_are_eight_connected():
    # Moving B to (1,2) touches A diagonally: one region {0.9, 0.3, 0.6}. PRO: 1/3 on [0, 1/7], then 1.
    # Area: 1/3 * 1/7 + (0.3 - 1/7); / 0.3 = 43/63.
    masks = np.zeros((1, 2, 5), bool)
    masks[0, 0, :2] = True
    masks[0, 1, 2] = True
    maps = np.full((1, 2, 5), 0.1)
    maps[0, 0, :2] = [0.9, 0.3]
    maps[0, 1, 2] = 0.6
    maps[0, 0, 4] = 0.8
    assert aupro(masks, maps) == pytest.approx(43 / 63)


def _brute_force_aupro(masks, maps, max_fpr=0.3):
    """Independent reference: every distinct value as a threshold, regions from scipy, plain loops."""
    region_values = []
    for mask, values in zip(masks, maps):
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        region_values += [values[labels == k] for k in range(1, count + 1)]
    normal = maps[~masks]
    thresholds = np.r_[np.inf, np.unique(maps)[::-1], -np.inf]
    fpr = np.array([(normal > t).mean() for t in thresholds])
    pro = np.array([np.mean([(v > t).mean() for v in region_values]) for t in thresholds])
    inside = fpr <= max_fpr
    j = int(np.argmax(fpr > max_fpr))
    end = pro[j - 1] + (pro[j] - pro[j - 1]) * (max_fpr - fpr[j - 1]) / (fpr[j] - fpr[j - 1])
    x, y = np.r_[fpr[inside], max_fpr], np.r_[pro[inside], end]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / max_fpr)


def test_aupro_threshold_grid_matches_brute_force():
    masks, maps = _random_case(seed=1)  # 6144 distinct values: the bounded-memory grid is used
    assert np.unique(maps).size > segmentation.EXACT_THRESHOLD_LIMIT
    assert aupro(masks, maps) == pytest.approx(_brute_force_aupro(masks, maps), abs=1e-3)
    rounded = np.round(maps, 1)  # few distinct values: exact path
    assert aupro(masks, rounded) == pytest.approx(_brute_force_aupro(masks, rounded), abs=1e-12)


def test_aupro_does_not_depend_on_the_maps_magnitude():
    """Maps of raw distances near 1e9 (float32): "lowest value - 1" was the lowest value itself, the curve never
    reached FPR 1, and AUPRO came out 1.63 by extrapolation; both threshold grids end below every pixel now."""
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 0, :3] = True
    maps = np.full((1, 10, 10), 1e9, np.float32)
    maps[0, 0, :3] = 2e9
    maps[0, 5, :] = 1.5e9
    assert aupro(masks, maps) == pytest.approx(aupro(masks, maps / np.float32(1e9))) == pytest.approx(1.0)
    masks, small = _random_case(seed=1)  # the quantile grid
    assert aupro(masks, small * np.float32(1e9) + np.float32(1e9)) == pytest.approx(aupro(masks, small), abs=2e-3)
    fpr, _ = pro_curve(masks, small * np.float32(1e9) + np.float32(1e9))
    assert fpr[-1] == pytest.approx(1.0)


def test_pro_curve_is_monotone_from_origin_to_one():
    masks, maps = _random_case(seed=2)
    fpr, pro = pro_curve(masks, maps)
    assert fpr[0] == 0 and pro[0] == 0
    assert fpr[-1] == pytest.approx(1.0) and pro[-1] == pytest.approx(1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(pro) >= -1e-12)
