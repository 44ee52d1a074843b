"""The web UI's handlers in one namespace, for scripts and tests: each lives with its tab in :mod:`anomalens.ui.tabs`.

>>> from anomalens.ui import handlers as h
>>> view = h.inspect_images(settings, run_dir, ["part.png"], key="tab1")   # doctest: +SKIP
"""

from __future__ import annotations

from anomalens.ui.common import UISettings, list_models, model_choices, model_rows, threshold_text
from anomalens.ui.tabs.evaluate import EvaluationView, evaluate_model, read_report
from anomalens.ui.tabs.inspect import (
    INSPECTION_HEADERS,
    ImageInspection,
    ImageItem,
    inspect_images,
    inspection_downloads,
    inspection_gallery,
    inspection_rows,
    inspection_summary,
    reconstruction_gallery,
)
from anomalens.ui.tabs.train import (DatasetChoice, TrainOutcome, choose_dataset, default_settings, model_types, parse_advanced,
                                     score_regions, train_model)
from anomalens.ui.tabs.video import EVENT_HEADERS, VideoView, analyze_video_file

__all__ = [
    "UISettings", "list_models", "model_choices", "model_rows", "threshold_text", "ImageItem", "ImageInspection",
    "INSPECTION_HEADERS", "inspect_images", "inspection_rows", "inspection_gallery", "reconstruction_gallery",
    "inspection_summary", "inspection_downloads", "VideoView", "EVENT_HEADERS", "analyze_video_file", "DatasetChoice",
    "choose_dataset", "model_types", "default_settings", "parse_advanced", "TrainOutcome", "train_model", "score_regions",
    "EvaluationView", "evaluate_model", "read_report",
]
