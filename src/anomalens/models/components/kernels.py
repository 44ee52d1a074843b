"""The one Gaussian kernel, and the blurs built on it: anomaly maps, SSIM windows, frame-score series.

The kernel is truncated at ``round(4 * sigma)`` taps each side (scipy's and anomalib's default) unless a caller
needs a fixed window (SSIM's 11 pixels). Borders reflect, so an edge does not look darker than the middle;
inputs smaller than the kernel replicate their edge instead.

>>> gaussian_kernel1d(1.0).numel()
9
>>> gaussian_blur(torch.ones(1, 8, 8), sigma=1.0).allclose(torch.ones(1, 8, 8))
True
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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


def gaussian_smooth_1d(values: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth a series (frame scores) with a Gaussian of ``sigma`` samples, reflecting at both ends."""
    if sigma <= 0 or len(values) < 2:
        return values.astype(np.float32)
    kernel = gaussian_kernel1d(sigma).double().numpy()
    kernel /= kernel.sum()
    radius = len(kernel) // 2
    padded = np.pad(values.astype(np.float64), radius, mode="reflect" if len(values) > radius else "edge")
    return np.convolve(padded, kernel, mode="valid").astype(np.float32)
