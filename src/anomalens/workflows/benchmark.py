"""Train, evaluate and time one model on one category in a single call, for the README's figures.

The benchmark runs the same code a user runs (train on ``train/good`` minus the validation split, then
evaluate on ``test/``), times the fit and the scoring of the test images, and records the process's peak
memory. Video categories are handed to the video workflow.

>>> result = run_benchmark("../shared/data/mvtec_ad", "bottle", model="patchcore")   # doctest: +SKIP
>>> print(format_benchmark_table(result))                                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from anomalens.models.base import DEFAULT_IMAGE_MODEL
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import write_json_atomic
from anomalens.workflows.image import evaluate_image_model, train_image_model

HEADLINE_KEYS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
VIDEO_HEADLINE_KEYS = ("frame_auroc", "mean_clip_frame_auroc", "video_auroc")


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far in MiB (None where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)  # bytes on macOS, KiB on Linux


def _is_video(data_dir: str | Path, category: str) -> bool:
    try:
        from anomalens.data.video_datasets import is_video_category
    except ImportError:
        return False
    return bool(is_video_category(data_dir, category))


def run_benchmark(
    data_dir: str | Path,
    category: str,
    model: str | None = None,
    results_dir: str | Path = "results",
    output: str | Path | None = None,
    *,
    device: str = "auto",
    seed: int = 0,
    reporter: Reporter = SILENT,
    **settings: Any,
) -> dict[str, Any]:
    """Train + evaluate + time; write the result as JSON to ``output`` (default ``RUN_DIR/benchmark.json``).

    ``settings`` are the train settings (``image_size``, ``validation_fraction`` and model settings such as
    ``epochs``). Returns the dict that was written.
    """
    if _is_video(data_dir, category):
        from anomalens.workflows.video import benchmark_video_model

        result = benchmark_video_model(data_dir, category, model, results_dir=results_dir, device=device, seed=seed,
                                       reporter=reporter, **settings)
        if output is not None:
            write_json_atomic(output, result)
        return result

    model = model or DEFAULT_IMAGE_MODEL
    trained = train_image_model(data_dir, category, model, results_dir, device=device, seed=seed, reporter=reporter,
                                **settings)
    evaluation = evaluate_image_model(trained.run_dir, device=device, reporter=reporter)
    metrics = evaluation.metrics
    detector = trained.detector
    run = json.loads((trained.run_dir / "run.json").read_text(encoding="utf-8"))
    result: dict[str, Any] = {
        "model": model,
        "category": category,
        **{key: metrics.get(key) for key in HEADLINE_KEYS},
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
        **provenance(run, trained, evaluation, seed),
    }
    write_json_atomic(Path(output) if output is not None else trained.run_dir / "benchmark.json", result)
    return result


def epochs_run(detector: Any) -> int:
    """Training epochs the detector ran; 1 for single-pass models (PatchCore, PaDiM, stfeatures read the data once)."""
    return sum(1 for record in detector.history_ if "epoch" in record) or 1


def provenance(run: dict[str, Any], trained: Any, evaluation: Any, seed: int) -> dict[str, Any]:
    """The fields every benchmark record ends with: the run's settings, and on what and where it ran."""
    return {
        "image_size": run.get("image_size"),
        "settings": run.get("settings"),
        "config": run.get("config"),
        "seed": seed,
        "device": str(trained.detector.device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch_version": torch.__version__,
        "run_dir": str(trained.run_dir),
        "evaluation_dir": str(evaluation.output_dir),
    }


def format_benchmark_table(result: dict[str, Any]) -> str:
    """A small plain-text table of the headline numbers, for the terminal."""

    def fmt(value: Any) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    rows = [("model", result.get("model")), ("category", result.get("category"))]
    rows += [(key, result.get(key)) for key in HEADLINE_KEYS + VIDEO_HEADLINE_KEYS if key in result]
    rows += [(key, result.get(key)) for key in ("fit_seconds", "images_per_second", "frames_per_second", "peak_rss_mb",
                                                "epochs", "device") if key in result]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {fmt(value)}" for name, value in rows]
    return "\n".join(lines)
