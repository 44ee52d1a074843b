"""anomalens: find anomalies in industrial images and video after learning only from normal examples.

The public API, the same functions the CLI and the web UI call:

>>> import anomalens
>>> run = anomalens.train_image_model("data", "bottle")                 # doctest: +SKIP
>>> anomalens.evaluate_image_model(run.run_dir).metrics["image_auroc"]   # doctest: +SKIP
>>> report = anomalens.predict_images(run.run_dir, ["part_0001.png"])    # doctest: +SKIP
>>> detector = anomalens.load_detector(run.run_dir)                     # doctest: +SKIP

Names are imported on first use, so ``import anomalens`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

# written into every config.json and bundle.json; a new model format or bundle version needs a new one (and the
# same in pyproject.toml): an older anomalens quotes it when it refuses the file (tests/test_format_versions.py)
__version__ = "0.3.0"

_EXPORTS = {
    "train_image_model": "anomalens.workflows.train",
    "evaluate_image_model": "anomalens.workflows.evaluate",
    "predict_images": "anomalens.workflows.predict",
    "train_video_model": "anomalens.workflows.train",
    "evaluate_video_model": "anomalens.workflows.evaluate",
    "analyze_video": "anomalens.workflows.predict",
    "run_benchmark": "anomalens.workflows.benchmark",
    "list_runs": "anomalens.workflows.runs",
    "load_detector": "anomalens.models.base",
    "create_detector": "anomalens.models.base",
    "Detector": "anomalens.models.base",
    "ImageDetector": "anomalens.models.base",
    "VideoDetector": "anomalens.models.video.base",
    "Preprocessing": "anomalens.data.preprocessing",
    "Reporter": "anomalens.progress",
    "AnomalensError": "anomalens.errors",
    "make_synthetic_image_dataset": "anomalens.data.synthetic",
    "make_synthetic_video_dataset": "anomalens.data.synthetic_video",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'anomalens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
