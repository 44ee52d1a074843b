"""Defect regions: connected groups of pixels above the pixel threshold, with their box, area and peak.

numpy only (no scipy, no torch), so the library (``predict``), the torch-free runtime (``anomalens.inference``)
and the server all find the same regions. Labelling works on horizontal runs of mask pixels: runs of
consecutive rows that touch (8-connectivity) are merged with a union-find, which touches each run once instead
of each pixel.

>>> mask = np.zeros((6, 8), bool); mask[1:3, 1:3] = True; mask[4, 5:8] = True
>>> labels, count = label_components(mask)
>>> count
2
>>> [r.area for r in find_regions(mask.astype(float), threshold=0.5)]
[4, 3]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Region:
    """One connected defect region of an anomaly map, in pixels of the map (the model's input size).

    ``x``, ``y``, ``width``, ``height``: bounding box (top-left corner, inclusive); ``area``: pixel count;
    ``peak_score``: the highest raw map value inside; ``peak_x``, ``peak_y``: where it is.
    """

    x: int
    y: int
    width: int
    height: int
    area: int
    peak_score: float
    peak_x: int
    peak_y: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, starts and (exclusive) ends of the horizontal runs of True pixels, row by row."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # same row-major order, one end per start
    return rows, starts, ends


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """``bool`` ``(H, W)`` -> (``int32`` labels, 0 = background, 1..count in reading order of first pixel; count)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    rows, starts, ends = _runs(mask)
    n = len(rows)
    labels = np.zeros(mask.shape, dtype=np.int32)
    if n == 0:
        return labels, 0
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_begin = np.searchsorted(rows, np.arange(mask.shape[0] + 1))
    for row in range(1, mask.shape[0]):
        above = range(row_begin[row - 1], row_begin[row])
        here = range(row_begin[row], row_begin[row + 1])
        if not above or not here:
            continue
        a = above.start
        for h in here:
            # runs [s, e) touch diagonally too: overlap of [s-1, e+1) with the run above
            while a < above.stop and ends[a] < starts[h]:
                a += 1
            b = a
            while b < above.stop and starts[b] <= ends[h]:
                ra, rh = find(b), find(h)
                if ra != rh:
                    parent[max(ra, rh)] = min(ra, rh)
                b += 1
    roots = np.array([find(i) for i in range(n)])
    _, component = np.unique(roots, return_inverse=True)  # roots are run indices: reading order of first run
    for i in range(n):
        labels[rows[i], starts[i] : ends[i]] = component[i] + 1
    return labels, int(component.max()) + 1


def find_regions(score_map: np.ndarray, threshold: float, min_area: int = 1) -> list[Region]:
    """Connected regions of ``score_map > threshold`` (``(H, W)`` raw map), largest first."""
    score_map = np.asarray(score_map, dtype=np.float32)
    labels, count = label_components(score_map > threshold)
    if count == 0:
        return []
    flat = labels.ravel()
    inside = flat > 0
    ids = flat[inside] - 1
    positions = np.flatnonzero(inside)
    ys, xs = np.divmod(positions, score_map.shape[1])
    values = score_map.ravel()[inside]
    area = np.bincount(ids, minlength=count)
    y0 = np.full(count, score_map.shape[0]); np.minimum.at(y0, ids, ys)
    y1 = np.zeros(count, int); np.maximum.at(y1, ids, ys)
    x0 = np.full(count, score_map.shape[1]); np.minimum.at(x0, ids, xs)
    x1 = np.zeros(count, int); np.maximum.at(x1, ids, xs)
    # the peak of each region: sort by (region, value) and take the last entry of each region
    order = np.lexsort((values, ids))
    last = np.flatnonzero(np.r_[ids[order][1:] != ids[order][:-1], True])
    peak = order[last]
    regions = [
        Region(x=int(x0[i]), y=int(y0[i]), width=int(x1[i] - x0[i] + 1), height=int(y1[i] - y0[i] + 1), area=int(area[i]),
               peak_score=float(values[peak[i]]), peak_x=int(xs[peak[i]]), peak_y=int(ys[peak[i]]))
        for i in range(count)
        if area[i] >= min_area
    ]
    return sorted(regions, key=lambda r: (-r.area, r.y, r.x))
