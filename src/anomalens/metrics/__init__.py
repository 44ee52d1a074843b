"""Metrics and thresholds: image AUROC / ROC / F1-max, pixel AUROC / AUPRO, and threshold calibration.

>>> from anomalens.metrics import image_auroc
>>> image_auroc([0, 1, 1], [0.2, 0.9, 0.5])
1.0
"""

from anomalens.metrics.classification import confusion_at, f1_max, image_auroc, roc_curve
from anomalens.metrics.segmentation import aupro, pixel_auroc, pro_curve
from anomalens.metrics.threshold import Calibration, calibrate

__all__ = [
    "Calibration",
    "aupro",
    "calibrate",
    "confusion_at",
    "f1_max",
    "image_auroc",
    "pixel_auroc",
    "pro_curve",
    "roc_curve",
]
