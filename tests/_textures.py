"""Synthetic normal textures and defects for the detector tests (64-128 px, generated, deterministic)."""

from __future__ import annotations

import math

import torch


def woven_textures(count: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> torch.Tensor:
    """``uint8`` images ``(count, 3, H, W)`` of a fabric-like pattern: same weave, random phase and noise."""
    generator = torch.Generator().manual_seed(seed)
    h, w = size
    y = torch.arange(h, dtype=torch.float32)[:, None]
    x = torch.arange(w, dtype=torch.float32)[None, :]
    images = []
    for _ in range(count):
        phase = torch.rand(2, generator=generator) * 2 * math.pi
        weave = torch.sin(2 * math.pi * x / 8 + phase[0]) * torch.sin(2 * math.pi * y / 8 + phase[1])
        noise = torch.randn(h, w, generator=generator) * 0.05
        grey = 0.45 + 0.2 * weave + noise
        colour = torch.stack([grey * 0.9, grey * 0.8, grey * 0.6])
        images.append((colour.clamp(0, 1) * 255).round().to(torch.uint8))
    return torch.stack(images)


def add_spot(images: torch.Tensor, top: int, left: int, side: int) -> torch.Tensor:
    """A copy of ``images`` with a bright white square (the defect) at ``(top, left)``."""
    out = images.clone()
    out[:, :, top : top + side, left : left + side] = 255
    return out
