"""Train, evaluate and time one model on one category in a single call, for the README's figures.

The benchmark runs the same code a user runs (train on the normal training data minus the validation split,
then evaluate on the test part), times the fit and the scoring, and records the process's peak memory. The
data kind (image or video) is detected from the dataset's layout (:mod:`anomalens.workflows.kinds`).

>>> result = run_benchmark("../shared/data/mvtec_ad", "bottle", model="patchcore")   # doctest: +SKIP
>>> print(format_benchmark_table(result))                                            # doctest: +SKIP
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from anomalens.errors import DataError
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import write_json_atomic
from anomalens.workflows.kinds import detect_kind, layout_help
from anomalens.workflows.reports import IMAGE_HEADLINE_KEYS, format_benchmark_table  # noqa: F401 (public here too)
from anomalens.workflows.runs import read_run_file

BENCHMARK_FILE = "benchmark.json"


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far in MiB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB on Linux


def run_benchmark(
    data_dir: str | Path,
    category: str,
    model: str | None = None,
    results_dir: str | Path = "results",
    output: str | Path | None = None,
    *,
    device: str = "auto",
    seed: int | None = None,
    reporter: Reporter = SILENT,
    **settings: Any,
) -> dict[str, Any]:
    """Train + evaluate + time; write the result as JSON to ``output`` (default ``RUN_DIR/benchmark.json``).

    ``settings`` are the train settings (``image_size``, ``validation_fraction`` and model settings such as
    ``epochs``); ``model`` defaults to the data kind's. Returns the dict that was written.
    """
    kind = detect_kind(data_dir, category)
    if kind is None:
        raise DataError(layout_help(), Path(data_dir) / category)
    result = kind.benchmark(data_dir, category, model, results_dir, device=device, seed=seed, reporter=reporter, **settings)
    write_json_atomic(Path(output) if output is not None else Path(result["run_dir"]) / BENCHMARK_FILE, result)
    return result


def _train_and_evaluate(kind: str, data_dir: str | Path, category: str, model: str | None, results_dir: str | Path, *,
                        device: str = "auto", reporter: Reporter = SILENT, **settings: Any) -> tuple:
    """(train result, evaluation result, its metrics, run.json) of one benchmark run."""
    from anomalens.workflows.kinds import data_kind

    table = data_kind(kind)
    trained = table.train(data_dir, category, model, results_dir, device=device, reporter=reporter, **settings)
    evaluation = table.evaluate(trained.run_dir, device=device, reporter=reporter)
    return trained, evaluation, evaluation.metrics, read_run_file(trained.run_dir)


def benchmark_image_model(data_dir: str | Path, category: str, model: str | None = None,
                          results_dir: str | Path = "results", **options: Any) -> dict[str, Any]:
    """Train + evaluate + time an image model (``options``: those of training); returns the benchmark record."""
    trained, evaluation, metrics, run = _train_and_evaluate("image", data_dir, category, model, results_dir, **options)
    detector = trained.detector
    return {
        "model": run["model"],
        "category": category,
        **{key: metrics.get(key) for key in IMAGE_HEADLINE_KEYS},
        "f1_max_threshold": metrics.get("f1_max_threshold"),
        "threshold": metrics.get("threshold"),
        "at_model_threshold": metrics.get("at_model_threshold"),
        "fit_seconds": run.get("fit_seconds"),
        "images_per_second": metrics["timing"]["images_per_second"],
        "peak_rss_mb": peak_rss_mb(),
        **detector.size_summary(),
        "epochs": epochs_run(detector),
        "best_epoch": getattr(detector, "best_epoch_", None),
        "interrupted": trained.interrupted,
        "per_defect_type": metrics.get("per_defect_type"),
        "counts": metrics.get("counts"),
        "train_images": run.get("train_count"),
        "validation_images": len(run.get("validation_files", [])),
        **provenance(run, trained, evaluation),
    }


def benchmark_video_model(data_dir: str | Path, category: str, model: str | None = None,
                          results_dir: str | Path = "results", **options: Any) -> dict[str, Any]:
    """Train + evaluate + time a video model (``options``: those of training); returns the benchmark record."""
    trained, evaluation, metrics, run = _train_and_evaluate("video", data_dir, category, model, results_dir, **options)
    return {
        "model": run["model"],
        "category": category,
        "frame_auroc": metrics.get("frame_auroc"),
        "mean_clip_frame_auroc": metrics.get("mean_clip_frame_auroc"),
        "video_auroc": metrics.get("video_auroc"),
        "frame_auroc_minmax_per_clip": metrics.get("frame_auroc_minmax_per_clip"),
        "threshold": metrics.get("threshold"),
        "at_model_threshold": metrics.get("at_model_threshold"),
        "fit_seconds": run.get("fit_seconds"),
        "frames_per_second": metrics["timing"]["frames_per_second"],
        "peak_rss_mb": peak_rss_mb(),
        "epochs": epochs_run(trained.detector),
        "interrupted": trained.interrupted,
        "per_type": metrics.get("per_type"),
        "counts": metrics.get("counts"),
        "train_clips": len(run.get("train_clips", [])),
        "train_frames": run.get("train_frames"),
        "validation_clips": run.get("validation_clips"),
        **provenance(run, trained, evaluation),
    }


def epochs_run(detector: Any) -> int:
    """Training epochs the detector ran; 1 for single-pass models (PatchCore, PaDiM, stfeatures read the data once)."""
    return sum(1 for record in detector.history_ if "epoch" in record) or 1


def provenance(run: dict[str, Any], trained: Any, evaluation: Any) -> dict[str, Any]:
    """The fields every benchmark record ends with: the run's settings, and on what and where it ran."""
    return {
        "image_size": run.get("image_size"),
        "settings": run.get("settings"),
        "config": run.get("config"),
        "seed": run.get("seed"),
        "device": str(trained.detector.device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch_version": torch.__version__,
        "run_dir": str(trained.run_dir),
        "evaluation_dir": str(evaluation.output_dir),
    }
