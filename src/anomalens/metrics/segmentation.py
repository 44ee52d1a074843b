"""Pixel-level metrics: pixel AUROC and AUPRO (Bergmann et al., "Uninformed Students", CVPR 2020).

Both take ground-truth masks ``(N, H, W)`` (bool) and anomaly maps ``(N, H, W)`` (any real scale) of the
images whose pixel truth is known (normal test images count: all their pixels are normal).

AUPRO: for a threshold ``t`` the *per-region overlap* is the mean over every connected defect region
(8-connected, over all images) of the share of its pixels with ``map > t``; the false-positive rate is the
share of all normal pixels above ``t``. AUPRO is the area under PRO(FPR) for FPR in [0, 0.3], divided by
0.3, so 1.0 is perfect. Unlike pixel AUROC it weighs a small scratch as much as a large missing piece.

Memory stays bounded: maps are visited image by image and counted at a grid of thresholds. When the maps
hold few distinct values (hand-made cases) every distinct value is a threshold and the result is exact;
otherwise thresholds are quantiles of the normal pixels, evenly spaced in FPR (``num_thresholds`` of them
between FPR 0 and ``max_fpr``), and the curve is integrated with the trapezoid rule.

>>> masks = np.zeros((1, 4, 4), bool); masks[0, :2, :2] = True
>>> maps = masks.astype(float)
>>> pixel_auroc(masks, maps), aupro(masks, maps)
(1.0, 1.0)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from anomalens.metrics.classification import image_auroc

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 calls it trapz
EIGHT_CONNECTED = np.ones((3, 3), dtype=int)
EXACT_PIXEL_LIMIT = 1 << 24  # above ~16M pixels, pixel AUROC is counted in fine histogram bins
HISTOGRAM_BINS = 1 << 16
EXACT_THRESHOLD_LIMIT = 4096  # at most this many distinct values: every one is a threshold (exact)
EXACT_CHECK_PIXELS = 1 << 21  # count distinct values only up to ~2M pixels (sorting more costs memory)
QUANTILE_SAMPLE = 1 << 21  # normal pixels sampled to place the threshold grid


def _check_maps(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks).astype(bool, copy=False)
    maps = np.asarray(maps, dtype=np.float32)
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None] if maps.ndim == 2 else maps
    if masks.shape != maps.shape or masks.ndim != 3:
        raise ValueError(f"masks {masks.shape} and anomaly maps {maps.shape} must both be (N, H, W) of one shape")
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps contain NaN or inf values")
    n_pos = int(masks.sum())
    if n_pos == 0:
        raise ValueError("pixel metrics need anomalous pixels, but no ground-truth mask marks any")
    if n_pos == masks.size:
        raise ValueError("pixel metrics need normal pixels, but the masks mark every pixel as anomalous")
    return masks, maps


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """AUROC over all pixels (ties one half); exact up to ~16M pixels, beyond that counted in 65536 quantile bins."""
    masks, maps = _check_maps(masks, maps)
    if masks.size <= EXACT_PIXEL_LIMIT:
        return image_auroc(masks.ravel().astype(np.int8), maps.ravel())
    # bin edges at quantiles of a sample, so that a few extreme values cannot squeeze the rest into one bin
    step = max(1, int(np.ceil(maps.size / QUANTILE_SAMPLE)))
    sample = np.concatenate([values.ravel()[::step] for values in maps])
    edges = np.unique(np.quantile(sample, np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1))[1:-1])
    pos = np.zeros(edges.size + 1, np.int64)
    neg = np.zeros(edges.size + 1, np.int64)
    for mask, values in zip(masks, maps):
        bins = np.searchsorted(edges, values, side="right")
        pos += np.bincount(bins[mask], minlength=pos.size)
        neg += np.bincount(bins[~mask], minlength=neg.size)
    neg_below = np.cumsum(neg) - neg
    u = float((pos * neg_below).sum() + 0.5 * (pos * neg).sum())
    return u / (float(pos.sum()) * float(neg.sum()))


def _thresholds(masks: np.ndarray, maps: np.ndarray, max_fpr: float, num_thresholds: int) -> np.ndarray:
    """Descending thresholds: every distinct value when few, else quantiles of normal pixels even in FPR."""
    if maps.size <= EXACT_CHECK_PIXELS:
        distinct = np.unique(maps)
        if distinct.size <= EXACT_THRESHOLD_LIMIT:
            # the last one flags every pixel: FPR 1 (-inf: "lowest - 1" is the lowest itself in float32 above 1.7e7)
            return np.r_[distinct[::-1].astype(np.float64), -np.inf]
    # a strided sample of the normal pixels, image by image, places the grid; the counts stay exact
    step = max(1, int(np.ceil(maps.size / QUANTILE_SAMPLE)))
    samples, top = [], -np.inf
    for mask, values in zip(masks, maps):
        normal = values[~mask]
        if normal.size:
            samples.append(normal[::step])
            top = max(top, float(normal.max()))
    levels = np.linspace(0.0, min(1.0, max_fpr * 1.05), num_thresholds)
    grid = np.quantile(np.concatenate(samples), 1.0 - levels)
    # the exact maximum of the normal pixels gives FPR 0; below the global minimum every pixel is flagged
    grid = np.r_[top, grid, -np.inf]  # not "min - 1": float32 maps compare it in float32, where it is the min
    return np.unique(grid)[::-1]


def pro_curve(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3, num_thresholds: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, pro)`` at a descending grid of thresholds, a pixel counting as flagged when ``map > t``.

    The curve starts at the origin (no pixel flagged).
    """
    masks, maps = _check_maps(masks, maps)
    thresholds = _thresholds(masks, maps, max_fpr, num_thresholds)
    false_positives = np.zeros(thresholds.size, np.int64)
    overlap_sum = np.zeros(thresholds.size, np.float64)
    n_regions = 0
    n_negatives = 0
    ascending = thresholds[::-1]
    for mask, values in zip(masks, maps):
        normal = np.sort(values[~mask])
        n_negatives += normal.size
        # pixels above t = count - number <= t (searchsorted 'right' on ascending thresholds)
        false_positives += (normal.size - np.searchsorted(normal, ascending, side="right"))[::-1]
        labels, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
        if count == 0:
            continue
        order = np.argsort(labels.ravel(), kind="stable")
        sorted_labels = labels.ravel()[order]
        flat = values.ravel()[order]
        starts = np.searchsorted(sorted_labels, np.arange(1, count + 1), side="left")
        ends = np.searchsorted(sorted_labels, np.arange(1, count + 1), side="right")
        for start, end in zip(starts, ends):
            region = np.sort(flat[start:end])
            overlap_sum += ((region.size - np.searchsorted(region, ascending, side="right")) / region.size)[::-1]
        n_regions += count
    fpr = np.r_[0.0, false_positives / max(n_negatives, 1)]
    pro = np.r_[0.0, overlap_sum / max(n_regions, 1)]
    return fpr, pro


def aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3, num_thresholds: int = 1000) -> float:
    """Area under the per-region-overlap curve up to ``max_fpr``, divided by ``max_fpr`` (1.0 = perfect)."""
    if not 0.0 < max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    fpr, pro = pro_curve(masks, maps, max_fpr, num_thresholds)
    # FPR grows as the threshold falls; ties in FPR keep the best PRO reached there (a vertical step)
    keep = fpr <= max_fpr
    x, y = fpr[keep], pro[keep]
    if x[-1] < max_fpr and not (fpr > max_fpr).any():  # the curve stops short: its last PRO holds to max_fpr
        x, y = np.r_[x, max_fpr], np.r_[y, y[-1]]
    elif x[-1] < max_fpr:
        after = int(np.argmax(fpr > max_fpr))
        x0, y0, x1, y1 = fpr[after - 1], pro[after - 1], fpr[after], pro[after]
        y_end = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
        x, y = np.r_[x, max_fpr], np.r_[y, y_end]
    return float(_trapezoid(y, x) / max_fpr)
