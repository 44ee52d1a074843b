"""The one Gaussian kernel, and the blurs built on it: anomaly maps, SSIM windows, frame-score series (offline,
and causally for live streams: :class:`DelayedGaussian`, and with the running median and cap of
:func:`anomalens.metrics.smoothing.smooth_scores`, :class:`DelayedSmoothing`).

The kernel is truncated at ``round(4 * sigma)`` taps each side (scipy's and anomalib's default) unless a caller
needs a fixed window (SSIM's 11 pixels). Borders reflect, so an edge does not look darker than the middle;
inputs smaller than the kernel replicate their edge instead.

>>> gaussian_kernel1d(1.0).numel()
9
>>> gaussian_blur(torch.ones(1, 8, 8), sigma=1.0).allclose(torch.ones(1, 8, 8))
True
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
import torch.nn.functional as F

from anomalens.metrics.smoothing import smooth_series

TRUNCATE = 4.0  # kernel radius in sigmas


def gaussian_kernel1d(sigma: float, radius: int | None = None, device: torch.device | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``2 * radius + 1`` taps (radius ``round(4 * sigma)``, at least 1, by default)."""
    radius = max(1, int(TRUNCATE * sigma + 0.5)) if radius is None else radius
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(images: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, H, W)`` maps or ``(B, C, H, W)`` images; ``sigma <= 0`` returns the input."""
    if sigma <= 0:
        return images
    squeeze = images.ndim == 3
    x = images[:, None] if squeeze else images
    kernel = gaussian_kernel1d(sigma, radius, device=x.device).to(x.dtype)
    r = kernel.numel() // 2
    channels = x.shape[1]
    mode = "reflect" if r < min(x.shape[-2:]) else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return x[:, 0] if squeeze else x


def gaussian_blur_by_shifts(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """:func:`gaussian_blur` of ``(B, C, H, W)`` images as sums of shifted copies, equal to it within float rounding:
    on a CPU, PyTorch's depthwise convolution with these short kernels took 21-34 ms per 240x360 frame against 4-22
    here (sigma 0.5 to 2, one thread), and the noise-level matching blurs every matched frame several times."""
    if sigma <= 0:
        return images
    kernel = gaussian_kernel1d(sigma, device=images.device).to(images.dtype)
    r = kernel.numel() // 2
    mode = "reflect" if r < min(images.shape[-2:]) else "replicate"
    height, width = images.shape[-2:]
    padded = F.pad(images, (r, r, 0, 0), mode=mode)
    rows = kernel[0] * padded[..., :width]
    for i in range(1, 2 * r + 1):
        rows = rows + kernel[i] * padded[..., i : i + width]
    padded = F.pad(rows, (0, 0, r, r), mode=mode)
    out = kernel[0] * padded[..., :height, :]
    for i in range(1, 2 * r + 1):
        out = out + kernel[i] * padded[..., i : i + height, :]
    return out


def gaussian_smooth_1d(values: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth a series (frame scores) with a Gaussian of ``sigma`` samples, reflecting at both ends."""
    return smooth_series(values, series_kernel(sigma))


def series_kernel(sigma: float) -> np.ndarray:
    """The float64 taps :func:`gaussian_smooth_1d` convolves with (saved in exported video bundles); a single tap
    of 1 for ``sigma <= 0`` (no smoothing)."""
    if sigma <= 0:
        return np.ones(1)
    kernel = gaussian_kernel1d(sigma).double().numpy()
    return kernel / kernel.sum()


class DelayedGaussian:
    """:func:`gaussian_smooth_1d` one value at a time: each smoothed value comes out ``delay`` values after its
    own. With the full look-ahead (``delay`` = the kernel's radius, ``round(4 sigma)``; the default) it equals the
    offline result, ends included (:meth:`finish` reflects at the last value as the offline pass does). A
    shorter ``lookahead`` cuts the kernel's future side (weights renormalised): less delay, slightly different
    scores; 0 makes it a one-sided (purely causal) filter."""

    def __init__(self, sigma: float, lookahead: int | None = None) -> None:
        self.kernel = series_kernel(sigma)
        self.radius = len(self.kernel) // 2
        self.delay = self.radius if lookahead is None else max(0, min(int(lookahead), self.radius))
        self.window: deque[float] = deque(maxlen=2 * self.radius + 1)
        self.count = self.emitted = 0

    def push(self, value: float) -> list[float]:
        self.window.append(float(value))
        self.count += 1
        if self.count <= self.delay:
            return []
        self.emitted += 1
        return [self._at(self.emitted - 1, None)]

    def finish(self) -> list[float]:
        out = []
        while self.emitted < self.count:
            out.append(self._at(self.emitted, self.count))
            self.emitted += 1
        return out

    def _at(self, t: int, total: int | None) -> float:
        first = self.count - len(self.window)
        if self.delay < self.radius:  # cut kernel: the frames it may see, weights renormalised
            last = t + self.delay if total is None else min(t + self.delay, total - 1)
            js = range(max(0, t - self.radius), last + 1)
            weights = self.kernel[[j - t + self.radius for j in js]]
            return float(sum(w * self.window[j - first] for j, w in zip(js, weights)) / weights.sum())
        # the offline rule: no smoothing below two values, "edge" padding up to the radius, "reflect" beyond
        if total is not None and total < 2:
            return self.window[t - first]
        clamp = total is not None and total <= self.radius
        value = 0.0
        for j, weight in zip(range(t - self.radius, t + self.radius + 1), self.kernel):
            if clamp:
                j = min(max(j, 0), total - 1)  # type: ignore[operator]
            else:
                j = -j if j < 0 else j
                if total is not None and j > total - 1:
                    j = 2 * (total - 1) - j
            value += weight * self.window[j - first]
        return value


class DelayedMedian:
    """:func:`~anomalens.metrics.smoothing.running_median` one value at a time: each median comes out ``delay``
    values after its own. With the full look-ahead (``width // 2``; the default) it equals the offline result, ends
    included; a shorter ``lookahead`` takes the window further back (``lookahead`` 0: the value and the
    ``width - 1`` before it)."""

    def __init__(self, width: int, lookahead: int | None = None) -> None:
        if width < 1 or width % 2 == 0:
            raise ValueError(f"the running median's width must be odd and positive, got {width}")
        half = width // 2
        self.delay = half if lookahead is None else max(0, min(int(lookahead), half))
        self.behind = width - 1 - self.delay
        self.window: deque[float] = deque(maxlen=width)
        self.count = self.emitted = 0

    def push(self, value: float) -> list[float]:
        self.window.append(float(value))
        self.count += 1
        out = []
        while self.emitted + self.delay <= self.count - 1:
            out.append(self._at(self.emitted, self.count - 1))
            self.emitted += 1
        return out

    def finish(self) -> list[float]:
        out = []
        while self.emitted < self.count:
            out.append(self._at(self.emitted, self.count - 1))
            self.emitted += 1
        return out

    def _at(self, t: int, last: int) -> float:
        if self.count < 2:  # the offline rule: fewer than two values are kept as they are
            return self.window[-1]
        first = self.count - len(self.window)
        picked = [self.window[min(max(j, 0), last) - first] for j in range(t - self.behind, t + self.delay + 1)]
        return float(np.median(np.asarray(picked, dtype=np.float32)))


class DelayedSmoothing:
    """:func:`~anomalens.metrics.smoothing.smooth_scores` one value at a time: the running median, the Gaussian
    (with a ``spill``, of the part of each value up to it, the part above through a running median of 3) and the
    cap, each value out ``delay`` values after its own (the median's ``width // 2`` plus the Gaussian's radius with
    the full look-ahead, which gives the offline result). A shorter ``lookahead`` goes to the median first (it needs
    one frame), the rest to the Gaussian and the spill's median."""

    def __init__(self, sigma: float, median_width: int = 1, cap: float | None = None, lookahead: int | None = None,
                 spill: float | None = None) -> None:
        self.median = DelayedMedian(median_width, lookahead)
        rest = None if lookahead is None else max(0, int(lookahead) - self.median.delay)
        self.gaussian = DelayedGaussian(sigma, rest)
        self.cap = cap
        self.limit = None if spill is None else float(np.float32(spill))  # float32, as the offline rule splits
        self.excess = None if spill is None else DelayedMedian(3, rest)
        self.delay = self.median.delay + max(self.gaussian.delay, self.excess.delay if self.excess else 0)
        # what is not out yet: each frame's median (the cap needs it), its Gaussian part, its part above the spill
        self.medians: deque[float] = deque()
        self.smoothed: deque[float] = deque()
        self.excesses: deque[float] = deque()

    def push(self, value: float) -> list[float]:
        for median in self.median.push(value):
            self._split(median)
        return self._out()

    def finish(self) -> list[float]:
        for median in self.median.finish():
            self._split(median)
        self.smoothed.extend(self.gaussian.finish())
        if self.excess is not None:
            self.excesses.extend(self.excess.finish())
        return self._out()

    def _split(self, median: float) -> None:
        self.medians.append(median)
        if self.excess is None or self.limit is None:
            self.smoothed.extend(self.gaussian.push(median))
            return
        self.smoothed.extend(self.gaussian.push(min(median, self.limit)))
        self.excesses.extend(self.excess.push(max(median - self.limit, 0.0)))

    def _out(self) -> list[float]:
        ready = len(self.smoothed) if self.excess is None else min(len(self.smoothed), len(self.excesses))
        out = []
        for _ in range(ready):
            value, own = self.smoothed.popleft(), self.medians.popleft()
            if self.excess is not None:
                value += self.excesses.popleft()
            if self.cap is not None:
                value = min(value, float(np.float32(own) + np.float32(self.cap)))
            out.append(value)
        return out
