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
    """One connected defect region of an anomaly map, in pixels of the image it was scored from (of the map, the
    model's input size, where the image's size is not known).

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


def pixel_cells(pixels: int, cells: int) -> np.ndarray:
    """For each of ``pixels`` image pixels along one side, the map cell (of ``cells``) it falls in: the nearest by
    centres, as resizing between the image and the model's input maps them.

    >>> pixel_cells(6, 3).tolist(), pixel_cells(2, 4).tolist()
    ([0, 0, 1, 1, 2, 2], [1, 3])
    """
    if pixels < 1 or cells < 1:
        raise ValueError(f"sizes must be positive, got {pixels} pixels and {cells} cells")
    return np.minimum(((np.arange(pixels) + 0.5) * (cells / pixels)).astype(np.int64), cells - 1)


def size_fields(size: tuple[int, int] | None) -> dict[str, int]:
    """The JSON fields naming the size regions are given in (``image_height``, ``image_width``); none if unknown."""
    return {} if size is None else {"image_height": int(size[0]), "image_width": int(size[1])}


MAX_EVENT_REGIONS = 20  # the largest regions of an event's peak frame sent with it (a noisy frame can have hundreds)


def event_regions(score_map: np.ndarray, threshold: float, image_size: tuple[int, int] | None) -> dict[str, Any]:
    """Where an event is: ``peak_regions``, the :data:`MAX_EVENT_REGIONS` largest regions of its peak frame's raw
    map above ``threshold`` (as dicts, in the frame's own pixels when ``image_size`` is known), and that size."""
    regions = find_regions(score_map, threshold, image_size=image_size)
    return {"peak_regions": [r.to_dict() for r in regions[:MAX_EVENT_REGIONS]], **size_fields(image_size)}


def half_excess_level(score_map: np.ndarray, threshold: float) -> float:
    """The level a video event's regions are cut at: half-way between ``threshold`` and the map's highest cell
    (the threshold itself when nothing exceeds it). A video map is coarse (8-pixel cells, the motion cue's 16 and
    more, each averaged with its neighbours), so a strong event's spill passes the threshold far from its source: a
    conveyor belt that stops, 224 standard units at the belt, still stood 15 above a threshold of 2 at the top of
    the frame, and the region was the whole frame; at half its excess it is the belt. The same idea as a peak's
    full width at half maximum, measured from the threshold."""
    peak = float(np.max(score_map)) if np.size(score_map) else threshold
    return threshold if not peak > threshold else threshold + 0.5 * (peak - threshold)


def mask_at_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A map-sized ``bool`` mask ``(h, w)`` -> the image's own ``size`` (H, W), each pixel taking its cell's value:
    the pixels that :func:`find_regions` counts with ``image_size=size``."""
    mask = np.asarray(mask)
    return mask[np.ix_(pixel_cells(size[0], mask.shape[0]), pixel_cells(size[1], mask.shape[1]))]


def _spans(pixels: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: how many image pixels fall in it, the first and the last of them (an empty cell: H and -1)."""
    owner = pixel_cells(pixels, cells)
    first, last = np.full(cells, pixels), np.full(cells, -1)
    np.minimum.at(first, owner, np.arange(pixels))
    np.maximum.at(last, owner, np.arange(pixels))
    return np.bincount(owner, minlength=cells), first, last


def find_regions(score_map: np.ndarray, threshold: float, min_area: int = 1,
                 image_size: tuple[int, int] | None = None) -> list[Region]:
    """Connected regions of ``score_map > threshold`` (``(h, w)`` raw map), largest first.

    With ``image_size`` (H, W), the size of the image the map was scored from, each region is given in that image's
    pixels: the pixels whose nearest map cell (:func:`pixel_cells`) lies in the region (box, area, the peak at the
    centre of its cell), the pixels :func:`mask_at_size` marks; ``min_area`` counts those pixels too. Regions are
    connected on the map: for an image at least as large, exactly the regions of the map resized to it. For a
    smaller one, cells no image pixel falls in add nothing (the peak is the highest cell that some pixel has), and a
    region with none of them is left out.
    """
    score_map = np.asarray(score_map, dtype=np.float32)
    labels, count = label_components(score_map > threshold)
    if count == 0:
        return []
    h, w = score_map.shape
    flat = labels.ravel()
    inside = flat > 0
    ids = flat[inside] - 1
    ys, xs = np.divmod(np.flatnonzero(inside), w)
    values = score_map.ravel()[inside]
    if image_size is None or tuple(image_size) == (h, w):
        weight = np.ones(len(ids))
        y_first = y_last = ys
        x_first = x_last = xs
        bound = (h, w)
    else:
        height, width = int(image_size[0]), int(image_size[1])
        row_count, row_first, row_last = _spans(height, h)
        col_count, col_first, col_last = _spans(width, w)
        weight = (row_count[ys] * col_count[xs]).astype(float)
        seen = weight > 0  # cells no image pixel falls in add nothing, not even to the box
        ids, ys, xs, values, weight = ids[seen], ys[seen], xs[seen], values[seen], weight[seen]
        y_first, y_last, x_first, x_last = row_first[ys], row_last[ys], col_first[xs], col_last[xs]
        bound = (height, width)
        if ids.size == 0:  # a small image none of whose pixels fall in a region's cells
            return []
    area = np.rint(np.bincount(ids, weights=weight, minlength=count)).astype(np.int64)
    y0 = np.full(count, bound[0]); np.minimum.at(y0, ids, y_first)
    y1 = np.full(count, -1); np.maximum.at(y1, ids, y_last)
    x0 = np.full(count, bound[1]); np.minimum.at(x0, ids, x_first)
    x1 = np.full(count, -1); np.maximum.at(x1, ids, x_last)
    # the peak of each region: sort by (region, value) and take the last entry of each region
    order = np.lexsort((values, ids))
    last = np.flatnonzero(np.r_[ids[order][1:] != ids[order][:-1], True])
    peak = np.full(count, -1)
    peak[ids[order][last]] = order[last]
    regions = [
        Region(x=int(x0[i]), y=int(y0[i]), width=int(x1[i] - x0[i] + 1), height=int(y1[i] - y0[i] + 1), area=int(area[i]),
               peak_score=float(values[peak[i]]), peak_x=int((x_first[peak[i]] + x_last[peak[i]]) // 2),
               peak_y=int((y_first[peak[i]] + y_last[peak[i]]) // 2))
        for i in range(count)
        if area[i] >= max(min_area, 1)
    ]
    return sorted(regions, key=lambda r: (-r.area, r.y, r.x))
