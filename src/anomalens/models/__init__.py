"""Detectors: ``image/`` and ``video/`` models behind the two contracts of :mod:`anomalens.models.base`
(``ImageDetector``, alias ``Detector``) and :mod:`anomalens.models.video.base` (``VideoDetector``), built from
shared ``components/``.

>>> detector = create_detector("patchcore", coreset_ratio=0.05)   # doctest: +SKIP

Names are imported on first use (as in :mod:`anomalens.metrics`): ``models/schema.py`` needs no torch, and the
torch-free runtime of bundles checks a bundle's calibration with it, so importing this package must not load
``base.py`` (torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomalens.models.base import (MODEL_REGISTRY, BaseDetector, Detector, DetectorConfig, ImageDetector,
                                       Prediction, create_detector, detector_class, load_detector, read_model_config,
                                       resolve_model_dir)

__all__ = [
    "MODEL_REGISTRY",
    "BaseDetector",
    "Detector",
    "ImageDetector",
    "DetectorConfig",
    "Prediction",
    "create_detector",
    "detector_class",
    "load_detector",
    "read_model_config",
    "resolve_model_dir",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("anomalens.models.base"), name)
    raise AttributeError(f"module 'anomalens.models' has no attribute {name!r}")
