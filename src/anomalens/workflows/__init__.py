"""Workflows: what a user does (train, evaluate, predict, benchmark), as functions the CLI and UI call.

Imported lazily, so that ``from anomalens.workflows import list_runs`` does not load every model.

>>> from anomalens.workflows import train_image_model, evaluate_image_model   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainResult": "anomalens.workflows.image",
    "EvaluationResult": "anomalens.workflows.image",
    "ImageResult": "anomalens.workflows.image",
    "PredictionReport": "anomalens.workflows.image",
    "train_image_model": "anomalens.workflows.image",
    "evaluate_image_model": "anomalens.workflows.image",
    "predict_images": "anomalens.workflows.image",
    "RunInfo": "anomalens.workflows.runs",
    "list_runs": "anomalens.workflows.runs",
    "run_benchmark": "anomalens.workflows.benchmark",
    "format_benchmark_table": "anomalens.workflows.benchmark",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'anomalens.workflows' has no attribute {name!r}")
