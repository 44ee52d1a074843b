"""Metrics and thresholds: image AUROC / ROC / F1-max, pixel AUROC / AUPRO, and threshold calibration.

>>> from anomalens.metrics import image_auroc
>>> image_auroc([0, 1, 1], [0.2, 0.9, 0.5])
1.0

Names are imported on first use: ``anomalens.metrics.threshold`` and ``anomalens.metrics.regions`` need only
numpy, and the torch-free runtime (``anomalens.inference``) imports them without pulling in scipy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "confusion_at": "classification", "f1_max": "classification", "image_auroc": "classification",
    "roc_curve": "classification", "aupro": "segmentation", "pixel_auroc": "segmentation",
    "pro_curve": "segmentation", "Calibration": "threshold", "calibrate": "threshold",
    "above_threshold": "threshold",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"anomalens.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'anomalens.metrics' has no attribute {name!r}")
