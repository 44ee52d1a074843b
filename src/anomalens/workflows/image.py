"""The image workflow: train a detector on normal images, evaluate it on a labelled test set, score new images.

These are the functions the CLI (``anomalens train|evaluate|predict``) and the UI call; they own the file
layout of a run::

    results/<category>_<YYYYmmdd_HHMMSS>/
        model/            config.json + weights.safetensors (Detector.save)
        run.json          what was trained on what: data, settings, seed, validation files
        history.json      per-epoch records of models that train in epochs
        train.log         the messages shown during training
        evaluation/       metrics.json, report.md, roc_curve.png, score_distribution.png, samples.png
        predictions/      predictions.csv, predictions.json, <image>_overlay.png

Honest evaluation: training sees ``train/good`` minus a seeded validation split; model selection and the
threshold use only that validation split; ``test/`` is read by :func:`evaluate_image_model` alone.

>>> run = train_image_model("data", "bottle", model="patchcore", image_size=256)    # doctest: +SKIP
>>> evaluate_image_model(run.run_dir).metrics["image_auroc"]                        # doctest: +SKIP
>>> predict_images(run.run_dir, ["new_photo.png"]).results[0].anomalous             # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from anomalens.data.mvtec import NORMAL_TYPE, discover_category, load_test_set, split_train_validation
from anomalens.data.preprocessing import IMAGE_EXTENSIONS, Preprocessing, parse_image_size
from anomalens.errors import Cancelled, CheckpointError, ConfigError, DataError
from anomalens.metrics.classification import confusion_at, f1_max, image_auroc, roc_curve
from anomalens.metrics.segmentation import aupro, pixel_auroc
from anomalens.metrics.threshold import calibrate
from anomalens.models.base import Detector, create_detector, load_detector
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_dir, atomic_path, seed_everything, write_json_atomic, write_text_atomic
from anomalens.visualization.overlays import anomaly_contours, overlay, resize_map, to_hwc
from anomalens.visualization.plots import SampleRow, plot_roc, plot_samples, plot_score_distribution
from anomalens.workflows.rundir import (
    EVALUATION_DIR,
    PREDICTIONS_DIR,
    RUN_FILE,
    EvaluationResult,
    TrainResult,
    evaluation_context,
    log_training_summary,
    logging_reporter,
    check_results_dir,
    check_writable,
    open_run,
    run_record,
    save_run,
    staged_dir,
)

PRO_MAX_FPR = 0.3


# ---- training ---------------------------------------------------------------------------------
def train_image_model(
    data_dir: str | Path,
    category: str,
    model: str = "patchcore",
    results_dir: str | Path = "results",
    *,
    image_size: int | Sequence[int] = 256,
    validation_fraction: float = 0.1,
    seed: int = 0,
    device: str = "auto",
    reporter: Reporter = SILENT,
    run_name: str | None = None,
    **model_settings: Any,
) -> TrainResult:
    """Train ``model`` on ``data_dir/category/train/good`` minus a validation split and save a run folder.

    ``model_settings`` go to the model's config (``epochs``, ``lr``, ``backbone``, ``coreset_ratio``, ...).
    The run folder appears complete or not at all. On Ctrl-C or Cancel, a model that can keep its best
    epoch (the autoencoder) is saved and ``interrupted`` is True; otherwise nothing is written and the
    interruption propagates.
    """
    started = datetime.now()
    size = parse_image_size(image_size)
    check_results_dir(results_dir, reporter=reporter)  # before the work: writable, with room
    found = discover_category(data_dir, category)
    settings = {k: v for k, v in model_settings.items() if v is not None}
    detector = create_detector(model, device=device, image_size=size, seed=seed, **settings)
    if detector.kind != "image":
        raise ConfigError(f"model {model!r} is a {detector.kind} model; use an image model (patchcore, padim, autoencoder)")
    seed_everything(seed)
    log = logging_reporter(reporter)
    train_paths, validation_paths = split_train_validation(found.train_paths, validation_fraction, seed)
    log.log(
        f"training {model} on {found.root}: {len(train_paths)} training and {len(validation_paths)} validation "
        f"images at {size[0]}x{size[1]}, device {detector.device}, seed {seed}"
    )
    preprocessing = detector.preprocessing
    train = preprocessing.load_images(train_paths, reporter=log)
    validation = preprocessing.load_images(validation_paths, reporter=log) if validation_paths else None

    fit_started = time.perf_counter()
    try:
        detector.fit(train, validation, reporter=log)
    except (KeyboardInterrupt, Cancelled):
        if not detector.interrupted_:
            raise  # the model cannot keep a partial result: no run folder is written
    if detector.interrupted_ and not detector.history_:
        raise Cancelled("stopped before the first epoch finished: nothing to keep, nothing saved")
    if detector.interrupted_ and detector.calibration_ is None:
        # stopped during the threshold pass after training: finish it, it takes seconds
        log.log("choosing the threshold on the validation images")
        held_out = validation if validation is not None else train
        detector.calibration_ = calibrate(detector.predict(held_out).scores, detector.config.target_fpr)
    fit_seconds = time.perf_counter() - fit_started
    log_training_summary(log, detector, fit_seconds, "images")
    cal = detector.calibration_
    run = {
        **run_record("image", category, data_dir, model, started, seed, detector, validation_fraction, settings),
        "train_count": len(train_paths),
        "validation_files": [str(p.relative_to(found.root)) for p in validation_paths],
        "fit_seconds": round(fit_seconds, 3),
        "interrupted": detector.interrupted_,
        "threshold": cal.threshold,
    }
    run_dir = save_run(Path(results_dir), run_name or f"{category}_{started:%Y%m%d_%H%M%S}", detector, run, log.lines)
    reporter.log(f"saved the run to {run_dir}")
    return TrainResult(run_dir=run_dir, detector=detector, interrupted=detector.interrupted_)


# ---- runs ---------------------------------------------------------------------------------------
def _load_image_detector(checkpoint: str | Path | Detector, device: str) -> Detector:
    if isinstance(checkpoint, Detector):
        detector = checkpoint
    else:
        detector = load_detector(checkpoint, device=device, kind="image")
    if detector.calibration_ is None:
        raise CheckpointError("this model has no threshold (it was never fitted with validation images)")
    return detector


# ---- evaluation -------------------------------------------------------------------------------
def evaluate_image_model(
    checkpoint: str | Path,
    data_dir: str | Path | None = None,
    category: str | None = None,
    *,
    device: str = "auto",
    reporter: Reporter = SILENT,
) -> EvaluationResult:
    """Score the test split and write ``RUN_DIR/evaluation/`` (metrics, report and figures), atomically.

    ``data_dir`` and ``category`` default to those the run was trained on (``run.json``).
    """
    model_dir, run_dir, run = open_run(checkpoint)
    data_dir = data_dir if data_dir is not None else run.get("data_dir")
    category = category if category is not None else run.get("category")
    if data_dir is None or category is None:
        raise ConfigError(f"no {RUN_FILE} beside this model: give --data-dir and --category", model_dir)
    detector = _load_image_detector(model_dir, device)
    check_writable(run_dir, "run folder")  # before scoring: evaluation/ is written there
    found = discover_category(data_dir, category, require_test=True)
    decode_started = time.perf_counter()
    test = load_test_set(found, detector.preprocessing, reporter)
    decode_seconds = time.perf_counter() - decode_started
    predict_started = time.perf_counter()
    prediction = detector.predict(test.images, reporter=reporter)
    predict_seconds = time.perf_counter() - predict_started

    maps = prediction.maps
    if maps.shape[-2:] != test.masks.shape[-2:]:
        maps = np.stack([resize_map(m, tuple(test.masks.shape[-2:])) for m in maps])
    metrics = image_metrics(prediction.scores, test.labels, test.defect_types, detector)
    pixel = pixel_metrics(test.masks.numpy(), maps, test.has_mask, test.labels, test.defect_types, found.types_without_masks)
    for warning in pixel["warnings"][len(found.types_without_masks):]:  # load_test_set already named those types
        reporter.log(f"warning: {warning}")
    metrics.update(pixel)
    metrics.update(
        {
            **evaluation_context(detector, category, data_dir, model_dir),
            "timing": {
                "decode_seconds": round(decode_seconds, 3),
                "predict_seconds": round(predict_seconds, 3),
                "images_per_second": round(len(test.labels) / max(predict_seconds, 1e-9), 3),
            },
        }
    )
    if run.get("interrupted"):
        metrics["interrupted_training"] = True

    output_dir = run_dir / EVALUATION_DIR
    with atomic_dir(output_dir) as tmp:
        figures = _evaluation_figures(tmp, prediction, test, maps, metrics, detector)
        write_json_atomic(tmp / "metrics.json", metrics)
        write_text_atomic(tmp / "report.md", evaluation_report(metrics, run))
    reporter.log(f"wrote the evaluation to {output_dir}")
    return EvaluationResult(
        output_dir=output_dir,
        metrics=metrics,
        report_path=output_dir / "report.md",
        figures={name: output_dir / path.name for name, path in figures.items()},
    )


def image_metrics(scores: np.ndarray, labels: np.ndarray, defect_types: list[str], detector: Detector) -> dict[str, Any]:
    """Image AUROC, F1-max, the model threshold's confusion and the per-type table."""
    cal = detector.calibration_
    assert cal is not None
    fpr, tpr, _ = roc_curve(labels, scores)
    f1, f1_threshold = f1_max(labels, scores)
    per_type: dict[str, dict[str, Any]] = {}
    for name in sorted(set(defect_types), key=lambda t: (t != NORMAL_TYPE, t)):
        chosen = np.array([t == name for t in defect_types])
        flagged = scores[chosen] > cal.threshold
        per_type[name] = {
            "count": int(chosen.sum()),
            "mean_score": float(scores[chosen].mean()),
            "mean_normalized_score": float(cal.normalize(scores[chosen]).mean()),
            # for "good" this is the false-positive share; for a defect type its detection rate
            "share_flagged": float(flagged.mean()),
        }
        normal = np.array([t == NORMAL_TYPE for t in defect_types])
        if name != NORMAL_TYPE and normal.any():  # how well this type alone separates from normal images
            both = chosen | normal
            per_type[name]["image_auroc_vs_good"] = image_auroc(labels[both], scores[both])
    return {
        "image_auroc": image_auroc(labels, scores),
        "f1_max": f1,
        "f1_max_threshold": f1_threshold,
        "f1_max_threshold_normalized": float(cal.normalize(f1_threshold)),
        "threshold": cal.threshold,
        "threshold_rule": f"from validation-normal scores only, target false-positive rate {cal.target_fpr:g}",
        "at_model_threshold": confusion_at(labels, scores, cal.threshold),
        "counts": {"test_images": int(labels.size), "normal": int((labels == 0).sum()), "anomalous": int(labels.sum())},
        "per_defect_type": per_type,
        "roc_curve": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }


def pixel_metrics(
    masks: np.ndarray, maps: np.ndarray, has_mask: np.ndarray, labels: np.ndarray, defect_types: list[str],
    types_without_masks: Iterable[str] = (),
) -> dict[str, Any]:
    """Pixel AUROC and AUPRO over the samples whose pixel truth is known; None (with a warning) otherwise."""
    warnings = [f"defect type {t!r} has no masks; its images are left out of the pixel metrics" for t in types_without_masks]
    known = np.asarray(has_mask, bool)
    result: dict[str, Any] = {"pixel_auroc": None, "aupro": None, "aupro_max_fpr": PRO_MAX_FPR,
                              "pixel_metric_images": int(known.sum()), "warnings": warnings}
    if not (known & (labels == 1)).any() or not masks[known].any():
        warnings.append("no ground-truth masks of anomalous images: pixel AUROC and AUPRO are not computed")
        return result
    result["pixel_auroc"] = pixel_auroc(masks[known], maps[known])
    result["aupro"] = aupro(masks[known], maps[known], max_fpr=PRO_MAX_FPR)
    return result


def _pick_samples(scores: np.ndarray, defect_types: list[str], per_type: int = 2, limit: int = 12) -> list[int]:
    """Per type the lowest- and highest-scoring images (the hardest and the clearest cases)."""
    picked: list[int] = []
    for name in sorted(set(defect_types), key=lambda t: (t != NORMAL_TYPE, t)):
        idx = np.array([i for i, t in enumerate(defect_types) if t == name])
        order = idx[np.argsort(scores[idx], kind="stable")]
        chosen = order[np.unique(np.linspace(0, len(order) - 1, min(per_type, len(order))).round().astype(int))]
        picked.extend(int(i) for i in chosen[::-1])
    return picked[:limit]


def _evaluation_figures(folder: Path, prediction: Any, test: Any, maps: np.ndarray, metrics: dict, detector: Detector) -> dict[str, Path]:
    cal = detector.calibration_
    scores = prediction.scores
    marker = (metrics["at_model_threshold"]["false_positive_rate"], metrics["at_model_threshold"]["recall"])
    figures = {
        "roc_curve": plot_roc(np.array(metrics["roc_curve"]["fpr"]), np.array(metrics["roc_curve"]["tpr"]),
                              metrics["image_auroc"], folder / "roc_curve.png",
                              title=f"{metrics.get('category', '')} - image-level ROC", marker=marker),
        "score_distribution": plot_score_distribution(scores, test.defect_types, cal.threshold,
                                                      folder / "score_distribution.png"),
    }
    rows = []
    for i in _pick_samples(scores, test.defect_types):
        verdict = "ANOMALOUS" if scores[i] > cal.threshold else "normal"
        title = f"{test.defect_types[i]}/{test.paths[i].name}\nnormalised {float(cal.normalize(scores[i])):.2f} {verdict}"
        view = prediction.views[i] if prediction.views is not None else None
        rows.append(SampleRow(title=title, image=to_hwc(test.images[i]), normalized_map=cal.normalize(maps[i]),
                              view=view, mask=test.masks[i].numpy() if test.has_mask[i] else None))
    figures["samples"] = plot_samples(rows, folder / "samples.png")
    return figures


def evaluation_report(metrics: dict[str, Any], run: dict[str, Any]) -> str:
    """``report.md``: headline metrics, the threshold rule and the per-defect-type table."""

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    at = metrics["at_model_threshold"]
    lines = [
        f"# Evaluation: {metrics['model']} on {metrics['category']}",
        "",
        f"- checkpoint: `{metrics['checkpoint']}`",
        f"- data: `{metrics['data_dir']}` ({metrics['counts']['normal']} normal, {metrics['counts']['anomalous']} anomalous test images)",
        f"- image size: {metrics['image_size'][0]}x{metrics['image_size'][1]}, device {metrics['device']}",
    ]
    if run.get("interrupted"):
        lines.append("- note: training was stopped early; the best model up to then was kept")
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| image AUROC | {fmt(metrics['image_auroc'])} |",
        f"| pixel AUROC | {fmt(metrics['pixel_auroc'])} |",
        f"| AUPRO (FPR <= {metrics['aupro_max_fpr']}) | {fmt(metrics['aupro'])} |",
        f"| F1-max (oracle threshold {metrics['f1_max_threshold']:.5g}) | {fmt(metrics['f1_max'])} |",
        f"| F1 at the model threshold | {fmt(at['f1'])} |",
        "",
        f"Threshold {metrics['threshold']:.6g}: {metrics['threshold_rule']}. It was fixed before the test set was read; "
        f"at it {at['false_positives']} of {at['false_positives'] + at['true_negatives']} normal test images are flagged "
        f"and {at['true_positives']} of {at['true_positives'] + at['false_negatives']} anomalous ones are found. "
        "F1-max picks its threshold on the test labels, so it measures separability only.",
        "",
        f"Pixel metrics use {metrics['pixel_metric_images']} images with known pixel truth.",
        *[f"- warning: {w}" for w in metrics.get("warnings", [])],
        "",
        "| type | images | mean score | mean normalised score | flagged at threshold | image AUROC vs good |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in metrics["per_defect_type"].items():
        auroc = row.get("image_auroc_vs_good")
        lines.append(
            f"| {name} | {row['count']} | {row['mean_score']:.5g} | {row['mean_normalized_score']:.3f} | "
            f"{row['share_flagged']:.0%} | {'' if auroc is None else f'{auroc:.4f}'} |"
        )
    lines += ["", "Figures: `roc_curve.png`, `score_distribution.png`, `samples.png`.", ""]
    return "\n".join(lines)


# ---- prediction -------------------------------------------------------------------------------
@dataclass
class ImageResult:
    path: Path
    score: float
    normalized_score: float
    anomalous: bool
    overlay_path: Path | None
    image: np.ndarray  # preprocessed RGB uint8 (H, W, 3)
    heatmap: np.ndarray  # normalised anomaly map (H, W) in [0, 1]
    reconstruction: np.ndarray | None  # model view RGB uint8, if the model has one

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "score": self.score,
            "normalized_score": self.normalized_score,
            "anomalous": self.anomalous,
            "overlay": str(self.overlay_path) if self.overlay_path is not None else None,
        }


@dataclass
class PredictionReport:
    results: list[ImageResult]
    csv_path: Path | None
    json_path: Path | None


def collect_image_paths(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (sorted); a missing path is an error."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataError(f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})", path)
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError("file not found", path)
    if not paths:
        raise DataError("no images given")
    return paths


def predict_images(
    checkpoint_or_detector: str | Path | Detector,
    inputs: str | Path | Iterable[str | Path | np.ndarray],
    output_dir: str | Path | None = None,
    *,
    device: str = "auto",
    reporter: Reporter = SILENT,
    batch_size: int = 32,
) -> PredictionReport:
    """Score images: raw score, normalised score (0.5 = threshold), verdict and an overlay per image.

    ``inputs``: image files, folders (searched recursively) or RGB arrays ``(H, W, 3)``. Files are written to
    ``output_dir`` (default ``RUN_DIR/predictions/`` for a checkpoint; none for a Detector object unless
    given): one ``<name>_overlay.png`` per image (heatmap over the image, regions above the threshold
    outlined) and ``predictions.csv`` / ``predictions.json``, moved in only once every image has been scored.
    """
    detector = _load_image_detector(checkpoint_or_detector, device)
    if output_dir is None and not isinstance(checkpoint_or_detector, Detector):
        output_dir = open_run(checkpoint_or_detector)[1] / PREDICTIONS_DIR
    items = _prediction_inputs(inputs)
    preprocessing = detector.preprocessing
    cal = detector.calibration_
    assert cal is not None

    results: list[ImageResult] = []
    names = _overlay_names([p for p, _ in items])
    with staged_dir(output_dir) as folder:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            images = torch.stack([_prepare(preprocessing, path, array) for path, array in
                                  reporter.iter(chunk, f"read images {start + 1}-{start + len(chunk)} of {len(items)}")])
            prediction = detector.predict(images, reporter=reporter)
            heatmaps = cal.normalize(prediction.maps)
            for j, (path, _) in enumerate(chunk):
                image = to_hwc(images[j])
                heatmap = resize_map(heatmaps[j], image.shape[:2])
                overlay_path = None
                if folder is not None:
                    overlay_path = folder / names[start + j]
                    _write_png(overlay_path, anomaly_contours(overlay(image, heatmap, 0.45), heatmap))
                score = float(prediction.scores[j])
                results.append(ImageResult(
                    path=path,
                    score=score,
                    normalized_score=float(cal.normalize(score)),
                    anomalous=bool(score > cal.threshold),
                    overlay_path=overlay_path,
                    image=image,
                    heatmap=heatmap,
                    reconstruction=to_hwc(prediction.views[j]) if prediction.views is not None else None,
                ))
        csv_path = json_path = None
        if folder is not None:
            final = Path(output_dir)  # type: ignore[arg-type]
            for r in results:  # paths as they will be once the folder is in place
                r.overlay_path = final / r.overlay_path.name if r.overlay_path is not None else None
            _write_prediction_tables(folder, results, detector, checkpoint_or_detector)
            csv_path, json_path = final / "predictions.csv", final / "predictions.json"
    if output_dir is not None:
        reporter.log(f"wrote {len(results)} predictions to {output_dir}")
    return PredictionReport(results=results, csv_path=csv_path, json_path=json_path)


def _prediction_inputs(inputs: Any) -> list[tuple[Path, np.ndarray | None]]:
    if isinstance(inputs, np.ndarray) and inputs.ndim == 3:
        inputs = [inputs]
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    items: list[tuple[Path, np.ndarray | None]] = []
    for i, item in enumerate(inputs):
        if isinstance(item, np.ndarray):
            items.append((Path(f"image_{i:04d}.png"), item))
        else:
            items.extend((p, None) for p in collect_image_paths([item]))
    if not items:
        raise DataError("no images given")
    return items


def _prepare(preprocessing: Preprocessing, path: Path, array: np.ndarray | None) -> torch.Tensor:
    return preprocessing.prepare_array(array) if array is not None else preprocessing.load_image(path)


def _overlay_names(paths: list[Path]) -> list[str]:
    """``<stem>_overlay.png``, prefixed by the parent folder when stems repeat (MVTec's 000.png in every type)."""
    stems = [p.stem for p in paths]
    names, used = [], set()
    for p in paths:
        base = f"{p.parent.name}_{p.stem}" if stems.count(p.stem) > 1 and p.parent.name else p.stem
        name, n = f"{base}_overlay.png", 2
        while name in used:
            name, n = f"{base}_{n}_overlay.png", n + 1
        used.add(name)
        names.append(name)
    return names


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _write_prediction_tables(folder: Path, results: list[ImageResult], detector: Detector, source: Any) -> None:
    import csv
    import io

    cal = detector.calibration_
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "score", "normalized_score", "anomalous", "threshold", "overlay"])
    for r in results:
        writer.writerow([str(r.path), f"{r.score:.6g}", f"{r.normalized_score:.4f}", int(r.anomalous), f"{cal.threshold:.6g}",
                         str(r.overlay_path) if r.overlay_path else ""])
    write_text_atomic(folder / "predictions.csv", buffer.getvalue())
    write_json_atomic(folder / "predictions.json", {
        "model": detector.name,
        "checkpoint": None if isinstance(source, Detector) else str(Path(source).resolve()),
        "threshold": cal.threshold,
        "normalized_threshold": 0.5,
        "created": datetime.now().isoformat(timespec="seconds"),
        "count": len(results),
        "anomalous": sum(r.anomalous for r in results),
        "results": [r.to_dict() for r in results],
    })
