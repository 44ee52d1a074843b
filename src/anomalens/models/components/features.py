"""Locally aware patch features from a frozen backbone, shared by PatchCore, PaDiM and the video model.

As in PatchCore (Roth et al., 2022): take a mid-level (stride 8) and a deeper (stride 16) stage, average each
over a small neighbourhood so that every patch feature sees its surroundings, upsample the deeper one to the
stride-8 grid, concatenate, and optionally reduce the channels with a fixed, seeded random projection.
On a CPU the whole computation runs through ONNX Runtime (:mod:`.onnx_backbone`), on GPUs through PyTorch.

>>> extractor = PatchFeatureExtractor("lite0")
>>> extractor(torch.rand(2, 3, 256, 256)).shape     # 40 + 112 channels at stride 8
torch.Size([2, 152, 32, 32])
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from anomalens.errors import ConfigError
from anomalens.models.components.anomaly_map import upsample_aligned
from anomalens.models.components.backbone import STAGE_STRIDES, load_backbone, normalize_input
from anomalens.models.components.onnx_backbone import OnnxFeatureRunner, feature_runtime


class PatchFeatureExtractor(nn.Module):
    """``(B, 3, H, W)`` RGB in [0, 1] -> ``(B, C, ceil(H/8), ceil(W/8))`` patch features.

    ``stages``: backbone stages to combine (the first sets the output grid); ``neighbourhood``: side of the
    average-pooling window (1 = none); ``projection_dim``: if set, a Gaussian random projection to that many
    channels (fixed by ``seed``, so a saved config rebuilds the same extractor).
    """

    def __init__(
        self,
        backbone: str = "lite0",
        stages: Sequence[int] = (2, 4),
        neighbourhood: int = 3,
        projection_dim: int | None = None,
        seed: int = 0,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if neighbourhood < 1 or neighbourhood % 2 == 0:
            raise ConfigError(f"neighbourhood must be an odd number >= 1, got {neighbourhood}")
        self.backbone = load_backbone(backbone, pretrained=pretrained).to(memory_format=torch.channels_last)
        self.stages = tuple(int(s) for s in stages)
        if not self.stages or any(not 0 <= s < len(STAGE_STRIDES) for s in self.stages):
            raise ConfigError(f"stages must be in 0..{len(STAGE_STRIDES) - 1}, got {list(stages)}")
        self.neighbourhood = neighbourhood
        self.stride = STAGE_STRIDES[self.stages[0]]
        raw_channels = sum(self.backbone.stage_channels[s] for s in self.stages)
        matrix = None
        if projection_dim is not None and projection_dim < raw_channels:
            generator = torch.Generator().manual_seed(seed)
            matrix = torch.randn(raw_channels, projection_dim, generator=generator) / projection_dim**0.5
        self.register_buffer("projection", matrix, persistent=False)
        self.out_channels = raw_channels if self.projection is None else int(projection_dim)  # type: ignore[arg-type]
        self._runners: dict[tuple[int, int], Any] = {}  # input size -> ONNX Runtime session, or None for torch
        self.keep_buffers = False  # the runtime keeps its buffers between calls (see keep_runtime_buffers)
        self.eval()

    def train(self, mode: bool = True) -> "PatchFeatureExtractor":
        # The backbone stays frozen in eval mode (batch-norm statistics are ImageNet's), whatever the caller does
        return super().train(False)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Feature-map size for an input of ``height`` x ``width`` (each stride-2 layer rounds up)."""
        h, w = height, width
        for _ in range(self.stride.bit_length() - 1):
            h, w = (h + 1) // 2, (w + 1) // 2
        return h, w

    def keep_runtime_buffers(self) -> None:
        """From now on ONNX Runtime keeps its buffers between calls (its memory arena), for callers that run one
        or two images at a time, again and again (a live stream): allocating them anew for every frame cost 7-10 ms
        of a 640x480 stream's frame in the watch's process, which maps every block above 256 KB afresh. Costs the
        largest batch's buffers for good, so training and offline scoring leave it off."""
        if not self.keep_buffers:
            self.keep_buffers = True
            self._runners.clear()

    def reset_runtime(self) -> None:
        """Forget exported sessions (after the projection changed, e.g. when a saved model is loaded)."""
        self._runners.clear()

    @torch.no_grad()
    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """Features through ONNX Runtime (or OpenVINO) for CPU inputs (unless the runtime is ``torch``), else PyTorch."""
        # an ONNX export (anomalens.export) traces the PyTorch computation: a session cannot be traced
        runner = None if torch.compiler.is_exporting() else self._runner(x01)
        if runner is not None:
            return runner(x01)
        return self.torch_forward(x01)

    def _runner(self, x01: torch.Tensor) -> Any:
        runtime = feature_runtime()
        if runtime == "torch" or x01.device.type != "cpu":
            return None
        size = (int(x01.shape[-2]), int(x01.shape[-1]))
        if size not in self._runners:
            try:
                engine = "openvino" if runtime == "openvino" else "onnx"
                self._runners[size] = OnnxFeatureRunner.for_extractor(self, size, engine, self.keep_buffers)
            except Exception as exc:  # the exporter or ONNX Runtime failed: PyTorch computes the same features
                if runtime != "auto":
                    raise
                logging.getLogger(__name__).warning("ONNX Runtime unavailable for the backbone (%s); using PyTorch", exc)
                self._runners[size] = None
        return self._runners[size]

    @torch.no_grad()
    def torch_forward(self, x01: torch.Tensor) -> torch.Tensor:
        """The features computed by PyTorch (what the ONNX export contains)."""
        # channels-last runs the depthwise convolutions about 1.5x faster on CPU
        x = normalize_input(x01).contiguous(memory_format=torch.channels_last)
        maps = [m.contiguous() for m in self.backbone.forward_stages(x, self.stages)]
        size = tuple(maps[0].shape[-2:])
        pad = self.neighbourhood // 2
        pooled = []
        for feature in maps:
            if self.neighbourhood > 1:
                feature = F.avg_pool2d(feature, self.neighbourhood, stride=1, padding=pad, count_include_pad=False)
            if feature.shape[-2:] != size:
                feature = upsample_aligned(feature, size, stride=feature_stride(size, feature.shape[-2:]))
            pooled.append(feature)
        features = torch.cat(pooled, dim=1)
        if self.projection is not None:
            features = torch.einsum("bchw,cd->bdhw", features, self.projection)
        return features


def feature_stride(fine: tuple[int, int], coarse: tuple[int, int]) -> int:
    """Ratio of two grid sizes of the same input (each stride-2 layer rounds up, so use powers of two)."""
    ratio = max(fine[0] / coarse[0], fine[1] / coarse[1])
    return 1 << round(math.log2(ratio))
