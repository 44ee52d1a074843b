"""Detectors: one file per model, all behind the contract in :mod:`anomalens.models.base`."""

from anomalens.models.base import (
    DEFAULT_IMAGE_MODEL,
    DEFAULT_VIDEO_MODEL,
    MODEL_REGISTRY,
    Detector,
    DetectorConfig,
    Prediction,
    create_detector,
    detector_class,
    load_detector,
    read_model_config,
    resolve_model_dir,
)

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_VIDEO_MODEL",
    "MODEL_REGISTRY",
    "Detector",
    "DetectorConfig",
    "Prediction",
    "create_detector",
    "detector_class",
    "load_detector",
    "read_model_config",
    "resolve_model_dir",
]
