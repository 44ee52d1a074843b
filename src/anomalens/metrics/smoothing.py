"""Smoothing a series of frame scores with given kernel taps, in numpy only (no torch).

The Gaussian taps come from :func:`anomalens.models.components.kernels.series_kernel` (the one Gaussian); this
is the convolution both the library (``gaussian_smooth_1d``) and the torch-free runtime of exported video
bundles (which reads the taps from ``bundle.json``) apply to them.

>>> smooth_series(np.array([0.0, 0.0, 3.0, 0.0, 0.0]), np.array([0.25, 0.5, 0.25])).tolist()
[0.0, 0.75, 1.5, 0.75, 0.0]
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
