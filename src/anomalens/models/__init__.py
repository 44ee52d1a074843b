"""Detectors: ``image/`` and ``video/`` models behind the two contracts of :mod:`anomalens.models.base`
(``ImageDetector``, alias ``Detector``) and :mod:`anomalens.models.video.base` (``VideoDetector``), built from
shared ``components/``.

>>> detector = create_detector("patchcore", coreset_ratio=0.05)   # doctest: +SKIP
"""

from anomalens.models.base import (
    MODEL_REGISTRY,
    BaseDetector,
    Detector,
    ImageDetector,
    DetectorConfig,
    Prediction,
    create_detector,
    detector_class,
    load_detector,
    read_model_config,
    resolve_model_dir,
)

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
