"""Train, evaluate and time one model on one category in a single call, for the README's figures.

The benchmark runs the same code a user runs (train on the normal training data minus the validation split,
then evaluate on the test part), times the fit and the scoring, and records the process's peak memory. The
data kind (image or video) is detected from the dataset's layout (:mod:`anomalens.workflows.kinds`).

>>> result = run_benchmark("../shared/data/mvtec_ad", "bottle", model="patchcore")   # doctest: +SKIP
>>> print(format_benchmark_table(result))                                            # doctest: +SKIP

With ``runtimes`` (``anomalens benchmark --runtimes onnx:fp32 openvino:bf16 onnx:int8``), an image model is also
exported to each runtime and scored side by side with PyTorch on the same decoded test images
(:func:`compare_runtimes`): images/s, image and pixel AUROC, largest score and heatmap differences, verdicts.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from anomalens.errors import ConfigError, DataError
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import write_json_atomic
from anomalens.workflows.kinds import detect_kind, layout_help
from anomalens.workflows.reports import IMAGE_HEADLINE_KEYS, format_benchmark_table  # noqa: F401 (public here too)
from anomalens.workflows.runs import read_run_file
from anomalens.workflows.storage import check_writable_file

BENCHMARK_FILE = "benchmark.json"
# every exported runtime, engine:precision (what --runtimes all means)
RUNTIMES = ("onnx:fp32", "onnx:int8", "openvino:fp32", "openvino:bf16", "openvino:int8")


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
    runtimes: Sequence[str] = (),
    repeats: int = 1,
    **settings: Any,
) -> dict[str, Any]:
    """Train + evaluate + time; write the result as JSON to ``output`` (default ``RUN_DIR/benchmark.json``).

    ``runtimes`` (``engine:precision``, e.g. ``onnx:fp32``): also export the model to each and compare it with
    PyTorch on the test images (:func:`compare_runtimes`, under ``"runtimes"``), timed ``repeats`` rounds in turn.

    ``settings`` are the train settings (``image_size``, ``validation_fraction`` and model settings such as
    ``epochs``); ``model`` defaults to the data kind's. Returns the dict that was written.
    """
    kind = detect_kind(data_dir, category)
    if kind is None:
        raise DataError(layout_help(), Path(data_dir) / category)
    if output is not None:
        check_writable_file(output, "--output file")  # before the training, not after it
    if runtimes:
        runtimes = parse_runtimes(runtimes)  # refused before any training
        if kind.name != "image":
            raise ConfigError("--runtimes compares exported image models; video bundles are checked by anomalens export")
    result = kind.benchmark(data_dir, category, model, results_dir, device=device, seed=seed, reporter=reporter, **settings)
    if runtimes:
        result["runtimes"] = compare_runtimes(result["run_dir"], data_dir, category, runtimes, repeats=repeats, reporter=reporter)
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
        "cpu_ms_per_image": metrics["timing"].get("cpu_ms_per_image"),  # CPU time of scoring; less load-sensitive
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


# ---- exported runtimes side by side with PyTorch ------------------------------------------------------------
def parse_runtimes(specs: Sequence[str]) -> list[str]:
    """``engine:precision`` strings checked against what export offers (``all``: every runtime)."""
    from anomalens.inference.bundle import PRECISIONS

    if list(specs) == ["all"]:
        return list(RUNTIMES)
    for spec in specs:
        engine, _, precision = spec.partition(":")
        if precision not in PRECISIONS.get(engine, ()):
            raise ConfigError(f"--runtimes {spec}: expected engine:precision, one of {', '.join(RUNTIMES)} (or all)")
    return list(specs)


def _timed_side_by_side(scorers: dict[str, Callable[[np.ndarray], Any]], images: np.ndarray,
                        repeats: int) -> dict[str, tuple[float, Any]]:
    """Images/s of each scorer over ``images`` and its output. The scorers take turns, ``repeats`` rounds, the best
    round of each kept: on a shared machine, a change of load then touches every row alike."""
    for score in scorers.values():
        score(images[:4])  # warm-up: graph compilation, thread pools
    best: dict[str, tuple[float, Any]] = {}
    for _ in range(max(1, repeats)):
        for name, score in scorers.items():
            started = time.perf_counter()
            out = score(images)
            rate = len(images) / (time.perf_counter() - started)
            if name not in best or rate > best[name][0]:
                best[name] = (rate, out)
    return best


def compare_runtimes(run_dir: str | Path, data_dir: str | Path, category: str, runtimes: Sequence[str] = RUNTIMES, *,
                     repeats: int = 1, reporter: Reporter = SILENT) -> list[dict[str, Any]]:
    """Export the image model of ``run_dir`` to each runtime and score the test split with PyTorch and with each
    bundle, on the same decoded images, in one process (decoding is not timed, so rows compare the scoring alone).

    One row each: images/s, image and pixel AUROC, the largest score difference from PyTorch (also over the
    threshold), the largest heatmap difference (normalised scale), the share of identical verdicts (bundles at a
    reduced precision use their own recalibrated threshold), the bundle's size. The test split is read only to measure.

    The bundles are written to a temporary folder and removed afterwards: a benchmark never replaces the bundles a
    user exported into ``RUN_DIR/export``.
    """
    from anomalens.data.mvtec import discover_category, load_test_set
    from anomalens.export import export_model
    from anomalens.inference import Inferencer
    from anomalens.workflows.runs import load_detector

    runtimes = parse_runtimes(runtimes)
    detector = load_detector(run_dir, device="cpu", kind="image")
    test = load_test_set(discover_category(data_dir, category, require_test=True), detector.preprocessing)
    nhwc = test.images.permute(0, 2, 3, 1).numpy().copy()
    with tempfile.TemporaryDirectory(prefix="anomalens-runtimes-") as scratch:
        bundles, export_seconds, bundle_bytes = {}, {}, {}
        for spec in runtimes:
            engine, precision = spec.split(":")
            started = time.perf_counter()
            bundle = export_model(run_dir, engine, precision, Path(scratch) / f"{engine}_{precision}", reporter=reporter)
            export_seconds[spec] = time.perf_counter() - started
            bundle_bytes[spec] = sum(f.stat().st_size for f in bundle.folder.rglob("*") if f.is_file())
            bundles[spec] = Inferencer.load(bundle.folder)
        return _runtime_rows(detector, test, nhwc, bundles, export_seconds, bundle_bytes, repeats, reporter)


def _runtime_rows(detector: Any, test: Any, nhwc: np.ndarray, bundles: dict[str, Any], export_seconds: dict[str, float],
                  bundle_bytes: dict[str, int], repeats: int, reporter: Reporter) -> list[dict[str, Any]]:
    """Time PyTorch and every loaded bundle side by side and compare each with PyTorch (see compare_runtimes)."""
    from anomalens.metrics.classification import image_auroc
    from anomalens.metrics.segmentation import pixel_auroc

    labels, masks, known = test.labels, test.masks.numpy(), test.has_mask
    scorers: dict[str, Callable[[np.ndarray], Any]] = {"pytorch": lambda x: detector.predict(test.images[: len(x)])}
    scorers.update({spec: inferencer.run for spec, inferencer in bundles.items()})
    timed = _timed_side_by_side(scorers, nhwc, repeats)
    rate, reference = timed["pytorch"]
    ref_scores, ref_maps = reference.scores, reference.maps
    cal = detector.calibration_
    assert cal is not None
    rows = [{"runtime": "pytorch", "precision": "fp32", "images_per_second": round(rate, 2),
             "image_auroc": image_auroc(labels, ref_scores), "pixel_auroc": pixel_auroc(masks[known], ref_maps[known]),
             "max_score_difference": 0.0, "max_heatmap_difference": 0.0, "same_verdicts": 1.0, "threshold": cal.threshold,
             "search": getattr(getattr(detector, "index_", None), "kind", None)}]
    for spec, inferencer in bundles.items():
        engine, precision = spec.split(":")
        rate, (scores, maps, _) = timed[spec]
        bundle_cal = inferencer.calibration
        difference = float(np.abs(scores - ref_scores).max())
        rows.append({
            "runtime": engine, "precision": precision, "images_per_second": round(rate, 2),
            "image_auroc": image_auroc(labels, scores), "pixel_auroc": pixel_auroc(masks[known], maps[known]),
            "max_score_difference": difference, "max_score_difference_over_scale": difference / cal.scale,
            "max_heatmap_difference": float(np.abs(cal.normalize(maps) - cal.normalize(ref_maps)).max()),
            "same_verdicts": float((bundle_cal.is_anomalous(scores) == cal.is_anomalous(ref_scores)).mean()),
            "threshold": bundle_cal.threshold, "export_seconds": round(export_seconds[spec], 1),
            "engine_details": inferencer.engine.description,  # type: ignore[attr-defined]
            "search": inferencer.search.kind if inferencer.search is not None else None,
            "bundle_megabytes": round(bundle_bytes[spec] / 2**20, 1),
        })
        reporter.log(f"{spec}: {rate:.1f} images/s, image AUROC {rows[-1]['image_auroc']:.4f}, largest score difference {difference:.3g}")
    return rows


def format_runtime_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`compare_runtimes` as a plain-text table."""
    lines = [f"{'runtime':<10} {'precision':<20} {'images/s':>9} {'img AUROC':>9} {'px AUROC':>9} {'max |ds|':>10} "
             f"{'max |dmap|':>10} {'verdicts':>8}"]
    for r in rows:
        lines.append(f"{r['runtime']:<10} {r['precision']:<20} {r['images_per_second']:>9.1f} {r['image_auroc']:>9.4f} "
                     f"{r['pixel_auroc']:>9.4f} {r['max_score_difference']:>10.3g} {r['max_heatmap_difference']:>10.3g} "
                     f"{r['same_verdicts']:>8.0%}")
    return "\n".join(lines)
