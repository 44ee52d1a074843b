"""Thresholds chosen from normal data alone, and scores normalised so that 0.5 is the threshold.

The rule (:func:`calibrate`): with ``target_fpr`` the share of normal images the user accepts to see flagged
(default 1%), the threshold is the larger of

* the empirical ``1 - target_fpr`` quantile of the validation-normal scores, and
* ``mean + z * std`` of those scores, ``z`` the standard-normal quantile of ``1 - target_fpr``,

so that a small validation set (where the quantile is just its maximum) still leaves headroom for the tail.
Normalised score: ``sigmoid((s - threshold) / scale)`` with ``scale`` the std of the validation scores; 0.5
exactly at the threshold, monotone, the same mapping for image scores and anomaly maps, so heatmaps of
different images share one scale (a normal image stays cold).

>>> cal = calibrate(np.array([1.0, 1.1, 0.9, 1.05, 0.95]))
>>> round(float(cal.normalize(cal.threshold)), 3)
0.5
>>> round(float(cal.denormalize(0.5)), 6) == round(cal.threshold, 6)
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

DEFAULT_TARGET_FPR = 0.01


@dataclass(frozen=True)
class Calibration:
    """Threshold and normalisation learned from validation-normal scores; saved with the model."""

    threshold: float
    scale: float
    target_fpr: float
    validation_mean: float
    validation_std: float
    validation_max: float
    validation_count: int

    def normalize(self, values: np.ndarray | float) -> np.ndarray:
        """Raw scores or maps -> (0, 1), 0.5 at the threshold."""
        z = (np.asarray(values, dtype=np.float64) - self.threshold) / self.scale
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)

    def denormalize(self, normalized: np.ndarray | float) -> np.ndarray:
        """The inverse of :meth:`normalize`: the raw score that a normalised score in (0, 1) stands for."""
        p = np.clip(np.asarray(normalized, dtype=np.float64), 1e-6, 1.0 - 1e-6)
        return self.threshold + self.scale * np.log(p / (1.0 - p))

    def is_anomalous(self, values: np.ndarray | float) -> np.ndarray:
        """The one decision rule: a raw score (or map value) strictly above the threshold is anomalous."""
        return np.asarray(values) > self.threshold

    def with_threshold(self, threshold: float) -> "Calibration":
        data = asdict(self)
        data["threshold"] = float(threshold)
        return Calibration(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def calibrate(validation_scores: np.ndarray, target_fpr: float = DEFAULT_TARGET_FPR) -> Calibration:
    """Choose the threshold from scores of normal images (or frames) held out from training."""
    scores = np.asarray(validation_scores, dtype=np.float64).ravel()
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        raise ValueError("calibration needs at least one finite validation score")
    if not 0.0 < target_fpr < 0.5:
        raise ValueError(f"target_fpr must be in (0, 0.5), got {target_fpr}")
    mean, std = float(scores.mean()), float(scores.std())
    spread = std if std > 0 else max(abs(mean) * 0.05, 1e-6)
    z = NormalDist().inv_cdf(1.0 - target_fpr)
    quantile = float(np.quantile(scores, 1.0 - target_fpr))
    threshold = max(quantile, mean + z * spread)
    return Calibration(
        threshold=threshold,
        scale=spread,
        target_fpr=target_fpr,
        validation_mean=mean,
        validation_std=std,
        validation_max=float(scores.max()),
        validation_count=int(scores.size),
    )
