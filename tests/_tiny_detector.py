"""A tiny image detector for workflow and CLI tests: no backbone, fits in milliseconds.

It tests the plumbing (run folders, thresholds, reports, Cancel), not detection: the synthetic washers move
and turn, so a per-pixel model finds their defects poorly. Tests that need real detection use PatchCore.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from anomalens.data.preprocessing import to_float
from anomalens.errors import Cancelled
from anomalens.models.base import Detector, DetectorConfig


@dataclass
class TinyConfig(DetectorConfig):
    batch_size: int = 8
    epochs: int = 0  # > 0: pretend to train in epochs (to test Ctrl-C / Cancel handling)
    pool: int = 4


class TinyDetector(Detector):
    """Per-pixel mean and spread of pooled normal images; map = |x - mean| / spread, score = its maximum."""

    name = "tiny"
    kind = "image"
    config_class = TinyConfig

    def __init__(self, config=None, device="cpu"):
        super().__init__(config, device)
        h, w = self.config.image_size
        self.mean_ = torch.zeros(3, h // self.config.pool, w // self.config.pool)
        self.std_ = torch.ones_like(self.mean_)

    def _fit(self, train, validation, reporter):
        pooled = F.avg_pool2d(to_float(train), self.config.pool)
        self.mean_, self.std_ = pooled.mean(0), pooled.std(0) + 0.02
        self.history_ = []
        try:
            for epoch in reporter.iter(range(1, self.config.epochs + 1), "train"):
                reporter.check_cancelled()
                self.history_.append({"epoch": epoch, "train_loss": 1.0 / epoch})
                reporter.log(f"epoch {epoch}")
        except (KeyboardInterrupt, Cancelled):
            self.interrupted_ = True  # like the autoencoder: keep what was learned so far

    def _score_batch(self, batch):
        pooled = F.avg_pool2d(batch, self.config.pool)
        diff = ((pooled - self.mean_.to(batch.device)) / self.std_.to(batch.device)).abs().mean(1, keepdim=True)
        maps = F.interpolate(diff, size=batch.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        return maps.flatten(1).amax(1), maps, None

    def state_tensors(self):
        return {"mean": self.mean_, "std": self.std_}

    def load_state_tensors(self, tensors):
        if tuple(tensors["mean"].shape[-2:]) != tuple(s // self.config.pool for s in self.config.image_size):
            raise ValueError("weights do not match image_size")
        self.mean_, self.std_ = tensors["mean"], tensors["std"]


def register_tiny_detector(monkeypatch) -> str:
    """Register :class:`TinyDetector` as model ``tiny`` until the test ends; return its name."""
    from anomalens.models import base

    monkeypatch.setitem(base.MODEL_REGISTRY, "tiny", f"{TinyDetector.__module__}:TinyDetector")
    return "tiny"
