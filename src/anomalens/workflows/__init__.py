"""Workflows: what a user does (train, evaluate, predict, benchmark), as functions the CLI and UI call.

One module per concern: ``train.py``, ``evaluate.py``, ``predict.py``, ``benchmark.py``, ``reports.py``
(Markdown/CSV writers), ``runs.py`` (the run folder), ``kinds.py`` (the image/video dispatch table),
``demo.py``.

Imported lazily, so that ``from anomalens.workflows import list_runs`` does not load every model.

>>> from anomalens.workflows import train_image_model, evaluate_image_model   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainOptions": "anomalens.workflows.train",
    "TrainResult": "anomalens.workflows.train",
    "train_image_model": "anomalens.workflows.train",
    "train_video_model": "anomalens.workflows.train",
    "EvaluationResult": "anomalens.workflows.evaluate",
    "evaluate_image_model": "anomalens.workflows.evaluate",
    "evaluate_video_model": "anomalens.workflows.evaluate",
    "ImageResult": "anomalens.workflows.predict",
    "PredictionReport": "anomalens.workflows.predict",
    "VideoAnalysis": "anomalens.workflows.predict",
    "predict_images": "anomalens.workflows.predict",
    "analyze_video": "anomalens.workflows.predict",
    "RunInfo": "anomalens.workflows.runs",
    "list_runs": "anomalens.workflows.runs",
    "load_detector": "anomalens.workflows.runs",
    "DATA_KINDS": "anomalens.workflows.kinds",
    "detect_kind": "anomalens.workflows.kinds",
    "run_benchmark": "anomalens.workflows.benchmark",
    "format_benchmark_table": "anomalens.workflows.reports",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'anomalens.workflows' has no attribute {name!r}")
