"""Noise-level matching: frames with finer noise or texture than any training frame are low-passed down to it.

A model trained on one camera's footage learns its fine grain as part of "normal". A heavily compressed
recording has none (the codec flattens sensor noise); the same scene from a better camera, at a higher bitrate,
or as MJPEG with its block edges has plenty, and every patch's fine texture is then new to the memory: a model
trained on the synthetic conveyor at H.264 CRF 30 (key frame every 10 frames) flagged 100% of the same scene's
normal frames stored at CRF 18 (docs/video_experiments.md, "Fifteenth round"). The reverse (less grain than in
training) is not matched: adding noise would invent it.

The measure is Immerkær's fast noise estimate (:func:`noise_level`; J. Immerkær, "Fast Noise Variance
Estimation", CVIU 1996): the mean absolute response of the grey frame, at the model's input size, to a 3x3
operator that cancels every plane and ramp (so smooth shading and gradual edges count little), scaled to the
standard deviation of white noise. On the conveyor at the model's 240x360 it read 0.18-0.24 grey levels (of 255)
for the CRF 30 training frames and 0.62-0.80 for the same scene at CRF 18; a whole-frame statistic such as the RMS
gradient, dominated by the scene's edges, moved by 4%. (Measured also on the frame averaged over 2x2 pixels, it
never asked for more blur than at the finest scale, on any encoding of the conveyor: not kept.)

At fit time the detector keeps the training frames' limit, their highest noise level plus its distance from their
median (:func:`noise_limit`: the most a normal frame is taken to reach, beyond the highest of finitely many). When
scoring, a frame above the limit is blurred just enough to come down to it (:func:`match_noise_level`), and a frame
at or below it passes through untouched, bit for bit, so footage like the training data scores exactly as without
the matching. "Just enough": the frame is blended between the two neighbours on a ladder of Gaussian blurs
(:data:`LADDER_SIGMAS`) that bracket the limit, at the weight that interpolates their noise levels; the mean
absolute response of a blend is at most that interpolation, so the result lies at or a little below the limit. A
frame that the widest blur cannot bring down gets that widest blur.

>>> frames = torch.rand(2, 3, 32, 32)
>>> limit = noise_level(gaussian_blur_by_shifts(frames, 1.0)).max().reshape(1)
>>> matched, which = match_noise_level(frames, limit)
>>> bool((noise_level(matched) <= limit * 1.0001).all()), which.tolist()
(True, [True, True])
>>> match_noise_level(frames, torch.tensor([float("inf")]))[0] is frames
True
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from anomalens.models.components.kernels import gaussian_blur_by_shifts

# Gaussian sigmas (pixels of the model input) of the blurs a frame is blended between: dense at the small sigmas
# that remove grain and a codec's fine texture (CRF 18 footage on a CRF 30 model needed about 0.6)
LADDER_SIGMAS = (0.5, 0.75, 1.0, 1.5, 2.0)
# Immerkaer's operator: the difference of two Laplacians, zero on any plane or ramp; its response to white noise of
# standard deviation s has mean absolute value s * 6 * sqrt(2 / pi)
_OPERATOR = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_TO_SIGMA = math.sqrt(math.pi / 2) / 6


def _grey_level(grey: torch.Tensor) -> torch.Tensor:
    """Immerkaer's estimate ``(B,)`` of grey frames ``(B, 1, H, W)`` in [0, 1], in grey levels of 255."""
    response = F.conv2d(grey, _OPERATOR.to(grey.dtype).to(grey.device).view(1, 1, 3, 3))
    return response.abs().flatten(1).mean(1) * (_TO_SIGMA * 255.0)


def noise_level(frames: torch.Tensor) -> torch.Tensor:
    """Immerkaer's noise estimate ``(B,)`` of ``(B, 3, H, W)`` float frames in [0, 1]: the standard deviation of
    white noise that would give the grey frame's mean absolute operator response, in grey levels of 255."""
    return _grey_level(frames.mean(dim=1, keepdim=True))


def noise_limit(levels: torch.Tensor) -> torch.Tensor:
    """The training frames' noise ``levels`` -> the highest a normal frame is taken to reach, ``(1,)``: the highest
    level plus its distance from their median (one more such step beyond the highest of finitely many frames)."""
    return (2 * levels.max() - levels.median()).reshape(1).float()


def match_noise_level(frames: torch.Tensor, limit: torch.Tensor | None,
                      shortcut: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, 3, H, W)`` float frames with those noisier than ``limit`` ``(1,)`` blurred down to it (module
    docstring), and which frames were ``(B,)`` bool.

    ``limit`` ``None`` (a model saved before the matching) or infinite returns ``frames`` itself. ``shortcut`` (the
    library's path) blurs only the frames above the limit, and only at the rungs they need; without it (an exported
    graph, which cannot index by the data) a batch with any frame above the limit has every frame blurred at every
    rung and the same values selected, inside a ``torch.cond`` (an ONNX ``If``): a batch with none above costs the
    measurement alone there too. The rungs are measured on the grey frame (a blur commutes with the channel mean),
    so the library blurs only the chosen ones in colour."""
    if limit is None:
        return frames, torch.zeros(frames.shape[0], dtype=torch.bool, device=frames.device)
    target = torch.as_tensor(limit, dtype=frames.dtype, device=frames.device).reshape(())
    grey = frames.mean(dim=1, keepdim=True)
    above = _grey_level(grey) > target
    if not shortcut:
        if torch.compiler.is_exporting() or torch.compiler.is_compiling():  # the graph's branch: an ONNX If
            return torch.cond(above.any(), _blended_where, _unchanged, (frames, grey, above, target)), above
        # eager, the same arithmetic without compiling the branches (seconds per batch size)
        return (_blended_where if bool(above.any()) else _unchanged)(frames, grey, above, target), above
    if not bool(above.any()):
        return frames, above
    matched = frames.clone()
    matched[above] = _blended(frames[above], grey[above], target, every_rung=False)
    return matched, above


def _blended_where(frames: torch.Tensor, grey: torch.Tensor, above: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The graph's branch for a batch with a frame above the limit: every frame blended, those above it taken."""
    return torch.where(above[:, None, None, None], _blended(frames, grey, target, every_rung=True), frames)


def _unchanged(frames: torch.Tensor, grey: torch.Tensor, above: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The graph's branch for a batch with no frame above the limit (a branch returns a tensor of its own)."""
    return frames.clone()


def _blended(frames: torch.Tensor, grey: torch.Tensor, target: torch.Tensor, every_rung: bool) -> torch.Tensor:
    """Frames above the limit blended between the two rungs that bracket it. ``every_rung``: blur every frame at
    every rung and select (a graph, which cannot index by the data); else blur each frame in colour at its own two
    rungs only (the library)."""
    rungs = len(LADDER_SIGMAS)
    measured = torch.stack([_grey_level(grey)]
                           + [_grey_level(gaussian_blur_by_shifts(grey, sigma)) for sigma in LADDER_SIGMAS])
    # the first rung at or below the limit (the widest if none is), and the weight that interpolates the two levels
    at_or_below = measured <= target  # (K + 1, B)
    upper = torch.where(at_or_below[1:].any(0), at_or_below[1:].to(torch.int64).argmax(0) + 1,
                        torch.full_like(at_or_below[0], rungs, dtype=torch.int64))
    lower = upper - 1
    batch = torch.arange(frames.shape[0], device=frames.device)
    high, low = measured[lower, batch], measured[upper, batch]
    weight = ((high - target) / (high - low).clamp_min(1e-12)).clamp(0, 1)
    weight = torch.where(low > target, torch.ones_like(weight), weight)[:, None, None, None]
    if every_rung:
        levels = torch.stack([frames] + [gaussian_blur_by_shifts(frames, sigma) for sigma in LADDER_SIGMAS])
        return (1 - weight) * levels[lower, batch] + weight * levels[upper, batch]
    below, above = torch.empty_like(frames), torch.empty_like(frames)
    for rung in sorted(set(lower.tolist()) | set(upper.tolist())):
        as_lower, as_upper = lower == rung, upper == rung
        chosen = as_lower | as_upper
        blurred = frames[chosen] if rung == 0 else gaussian_blur_by_shifts(frames[chosen], LADDER_SIGMAS[rung - 1])
        below[as_lower] = blurred[as_lower[chosen]]
        above[as_upper] = blurred[as_upper[chosen]]
    return (1 - weight) * below + weight * above
