"""Smoothing a series of frame scores in time, in numpy only (no torch).

The Gaussian taps come from :func:`anomalens.models.components.kernels.series_kernel` (the one Gaussian); this
is the convolution both the library (``gaussian_smooth_1d``) and the torch-free runtime of exported video
bundles (which reads the taps from ``bundle.json``) apply to them. :func:`smooth_scores` is the whole rule by
which stfeatures smooths each cue: a running median, the Gaussian of the part of each value up to the spill limit
(the part above through a running median of 3), and optionally the cap a little above each frame's own (median)
value; :class:`anomalens.models.components.kernels.DelayedSmoothing` is the same rule one frame at a time.

>>> smooth_series(np.array([0.0, 0.0, 3.0, 0.0, 0.0]), np.array([0.25, 0.5, 0.25])).tolist()
[0.0, 0.75, 1.5, 0.75, 0.0]
>>> smooth_scores(np.array([0.0, 0.0, 3.0, 0.0, 0.0]), np.array([0.25, 0.5, 0.25]), median_width=3).tolist()
[0.0, 0.0, 0.0, 0.0, 0.0]
>>> smooth_scores(np.array([0.0, 0.0, 4.0, 4.0, 4.0]), np.array([0.25, 0.5, 0.25]), cap=0.0).tolist()
[0.0, 0.0, 3.0, 4.0, 4.0]
>>> smooth_scores(np.array([0.0, 0.0, 4.0, 4.0, 4.0]), np.array([0.25, 0.5, 0.25]), spill=1.0).tolist()
[0.0, 0.25, 3.75, 4.0, 4.0]
"""

from __future__ import annotations

import numpy as np


def smooth_series(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve ``values`` with the normalised, odd-length ``kernel``, reflecting at both ends ("edge" when the
    series is shorter than the kernel's radius); fewer than two values are returned as they are. float32 out."""
    values = np.asarray(values)
    kernel = np.asarray(kernel, dtype=np.float64)
    if len(values) < 2 or len(kernel) < 2:
        return values.astype(np.float32)
    radius = len(kernel) // 2
    padded = np.pad(values.astype(np.float64), radius, mode="reflect" if len(values) > radius else "edge")
    return np.convolve(padded, kernel, mode="valid").astype(np.float32)


def running_median(values: np.ndarray, width: int) -> np.ndarray:
    """The median of each value and its ``width // 2`` neighbours on either side, the first and last values
    repeated beyond the ends; ``width`` 1 (or fewer than two values) returns the values. float32 out."""
    values = np.asarray(values)
    if width <= 1 or len(values) < 2:
        return values.astype(np.float32)
    if width % 2 == 0:
        raise ValueError(f"the running median's width must be odd, got {width}")
    half = width // 2
    padded = np.pad(values.astype(np.float32), half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1).astype(np.float32)


def smooth_scores(values: np.ndarray, kernel: np.ndarray, median_width: int = 1, cap: float | None = None,
                  spill: float | None = None) -> np.ndarray:
    """One cue's frame scores smoothed in time: a running median of ``median_width`` values (a spike shorter than
    half of it goes, a step stays where it is), then the ``kernel``; with ``spill``, only the part of each value up
    to ``spill`` goes through the kernel and the part above it through a running median of 3 instead, so that a
    frame passes at most ``spill`` of its score on to its neighbours while its own stays (None: all of it); with a
    ``cap``, no value more than ``cap`` above its own median, so that smoothing lowers a frame but lifts it by at
    most ``cap`` with its neighbours' scores (None: no cap). float32 out."""
    median = running_median(values, median_width)
    if spill is None:
        smoothed = smooth_series(median, kernel)
    else:
        limit = np.float32(spill)
        smoothed = smooth_series(np.minimum(median, limit), kernel) + running_median(np.maximum(median - limit, 0), 3)
    return np.minimum(smoothed, median + np.float32(cap)) if cap is not None else smoothed
