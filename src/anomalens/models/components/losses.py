"""Reconstruction losses and per-pixel error maps for the autoencoder (plain functions, no state).

The same three kinds serve as training loss and as anomaly map, so that what the model learns to make
small is exactly what is scored:

* ``mse``: squared difference, averaged over the colour channels;
* ``ssim``: ``1 - SSIM`` (local structural similarity, Gaussian window 11 px, sigma 1.5), averaged over channels;
* ``combined``: ``(1 - ssim_weight) * mse + ssim_weight * (1 - SSIM)``.

Images are floats in [0, 1], shape ``(B, C, H, W)``; maps are ``(B, H, W)``.

>>> a = torch.rand(2, 3, 64, 64)
>>> error_map(a, a, "mse").abs().max().item()
0.0
>>> round(reconstruction_loss(a, a, "ssim").item(), 6)
0.0
"""

from __future__ import annotations

import torch

from anomalens.models.components.kernels import gaussian_blur

LOSS_KINDS = ("mse", "ssim", "combined")
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_C1 = 0.01**2  # SSIM stabilisers for data in [0, 1] (Wang et al. 2004)
_C2 = 0.03**2


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel, per-channel SSIM of two ``(B, C, H, W)`` batches in [0, 1]; 1 where they agree."""
    radius = SSIM_WINDOW // 2
    mu_a = gaussian_blur(a, SSIM_SIGMA, radius)
    mu_b = gaussian_blur(b, SSIM_SIGMA, radius)
    var_a = gaussian_blur(a * a, SSIM_SIGMA, radius) - mu_a * mu_a
    var_b = gaussian_blur(b * b, SSIM_SIGMA, radius) - mu_b * mu_b
    cov = gaussian_blur(a * b, SSIM_SIGMA, radius) - mu_a * mu_b
    numerator = (2 * mu_a * mu_b + _C1) * (2 * cov + _C2)
    denominator = (mu_a * mu_a + mu_b * mu_b + _C1) * (var_a + var_b + _C2)
    return numerator / denominator


def check_loss_kind(kind: str) -> str:
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSS_KINDS)}")
    return kind


def error_map(reconstruction: torch.Tensor, target: torch.Tensor, kind: str = "mse", ssim_weight: float = 0.5) -> torch.Tensor:
    """Per-pixel reconstruction error ``(B, H, W)`` of the given kind, averaged over colour channels."""
    check_loss_kind(kind)
    if kind == "mse":
        return (reconstruction - target).pow(2).mean(dim=1)
    structural = (1.0 - ssim_map(reconstruction, target)).mean(dim=1)
    if kind == "ssim":
        return structural
    squared = (reconstruction - target).pow(2).mean(dim=1)
    return (1.0 - ssim_weight) * squared + ssim_weight * structural


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor, kind: str = "mse", ssim_weight: float = 0.5) -> torch.Tensor:
    """Scalar training loss: the mean of :func:`error_map` over pixels and images."""
    return error_map(reconstruction, target, kind, ssim_weight).mean()
