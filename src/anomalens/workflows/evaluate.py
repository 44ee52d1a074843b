"""Evaluation: score the labelled test part of a dataset with a trained run and write ``RUN_DIR/evaluation/``.

One skeleton (:func:`evaluate_model`) serves both kinds: open the run, load the fitted detector (refusing the
other kind first), find the data it was trained on unless told otherwise, measure, and write metrics.json,
report.md and figures atomically. The threshold is the model's own, fixed before any test data is read.

>>> evaluate_image_model("results/bottle_20261128_120000").metrics["image_auroc"]        # doctest: +SKIP
>>> evaluate_video_model("results/video_ucsd_ped2_20261128_120000").metrics["frame_auroc"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from anomalens.data.mvtec import NORMAL_TYPE
from anomalens.data.video_datasets import ClipRef
from anomalens.data.video_io import DEFAULT_FRAME_FOLDER_FPS
from anomalens.errors import ConfigError, DataError
from anomalens.metrics.classification import confusion_at, f1_max, image_auroc, roc_curve, verdict_word
from anomalens.metrics.drift import assess_drift
from anomalens.metrics.events import (
    calibrated_events,
    clip_frame_auroc,
    minmax_per_clip_frame_auroc,
    pooled_frame_auroc,
    video_auroc,
)
from anomalens.metrics.segmentation import aupro, pixel_auroc
from anomalens.metrics.threshold import Calibration, threshold_rule
from anomalens.models.base import BaseDetector
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_dir, write_json_atomic, write_text_atomic
from anomalens.visualization.overlays import resize_map, to_hwc
from anomalens.visualization.plots import SampleRow, plot_roc, plot_samples, plot_score_distribution
from anomalens.visualization.timeline import plot_timeline
from anomalens.workflows.reports import evaluation_report, frame_scores_csv, image_scores_csv, video_report
from anomalens.workflows.runs import EVALUATION_DIR, METRICS_FILE, RUN_FILE, load_fitted_detector, open_run, safe_name
from anomalens.workflows.storage import check_writable


PRO_MAX_FPR = 0.3
REPORT_FILE = "report.md"
IMAGE_SCORES_FILE = "image_scores.csv"
HARDEST_CASES_FILE = "hardest_cases.png"
HARDEST_PER_SIDE = 4  # normal images and defective ones shown in the hardest-cases figure


@dataclass
class EvaluationResult:
    output_dir: Path
    metrics: dict
    report_path: Path
    figures: dict[str, Path]


@dataclass
class _Measured:
    """What one kind's measuring step returns to the skeleton."""

    metrics: dict[str, Any]
    write: Callable[[Path, Path], dict[str, Path]]  # (staging folder, final folder) -> figures by name
    report: Callable[[dict[str, Any], dict[str, Any]], str]


def evaluate_model(
    kind: str,
    checkpoint: str | Path,
    data_dir: str | Path | None = None,
    category: str | None = None,
    *,
    device: str = "auto",
    reporter: Reporter = SILENT,
    batch_size: int | None = None,
) -> EvaluationResult:
    """Evaluate the ``kind`` ("image" or "video") model of a run on the test part of its data; write the results.

    ``data_dir`` and ``category`` default to those the run was trained on (``run.json``); ``batch_size``
    (images or frames scored together) to the model's.
    """
    measure = _MEASURE[kind]
    model_dir, run_dir, run = open_run(checkpoint)
    detector = load_fitted_detector(model_dir, kind, device)  # first: a model of the other kind is refused at once
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
        detector.config.batch_size = batch_size  # a scoring setting: the learned state does not depend on it
    data_dir = data_dir if data_dir is not None else run.get("data_dir")
    category = category if category is not None else run.get("category")
    if data_dir is None or category is None:
        raise ConfigError(f"no {RUN_FILE} beside this model: give data_dir and category", model_dir)
    check_writable(run_dir, "run folder")  # before scoring: evaluation/ is written there
    measured = measure(detector, Path(data_dir), category, reporter)
    metrics = measured.metrics
    metrics.update({
        "model": detector.name,
        "category": category,
        "data_dir": str(Path(data_dir).resolve()),
        "checkpoint": str(model_dir.resolve()),
        "image_size": list(detector.config.image_size),
        "device": str(detector.device),
        "timing": metrics.pop("timing"),
    })
    if run.get("interrupted"):
        metrics["interrupted_training"] = True
    output_dir = run_dir / EVALUATION_DIR
    with atomic_dir(output_dir) as tmp:
        figures = measured.write(tmp, output_dir)
        write_json_atomic(tmp / METRICS_FILE, metrics)
        write_text_atomic(tmp / REPORT_FILE, measured.report(metrics, run))
    reporter.log(f"wrote the evaluation to {output_dir}")
    return EvaluationResult(output_dir=output_dir, metrics=metrics, report_path=output_dir / REPORT_FILE, figures=figures)


# ---- images -------------------------------------------------------------------------------------------
class _Kept:
    """Batches passed on as they are decoded and kept, so that the test images are decoded once; sized, so that
    the scoring's progress bar has a total."""

    def __init__(self, batches: Any) -> None:
        self.batches, self.kept = batches, []

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for batch in self.batches:
            self.kept.append(batch)
            yield batch


def _measure_images(detector: BaseDetector, data_dir: Path, category: str, reporter: Reporter) -> _Measured:
    from anomalens.data.mvtec import discover_category, load_test_set

    found = discover_category(data_dir, category, require_test=True)
    # timed as a user meets it: decoding included, overlapped with scoring (a background thread decodes ahead)
    paths = [s.path for s in found.test_samples]
    predict_started, cpu_started = time.perf_counter(), time.process_time()
    batches = _Kept(detector.preprocessing.iter_images(paths, detector.config.batch_size))
    prediction = detector.predict(batches, reporter=reporter)  # type: ignore[attr-defined]
    predict_seconds, cpu_seconds = time.perf_counter() - predict_started, time.process_time() - cpu_started
    test = load_test_set(found, detector.preprocessing, reporter, images=torch.cat(batches.kept))

    maps = prediction.maps
    if maps.shape[-2:] != test.masks.shape[-2:]:
        maps = np.stack([resize_map(m, tuple(test.masks.shape[-2:])) for m in maps])
    metrics = image_metrics(prediction.scores, test.labels, test.defect_types, detector)
    pixel = pixel_metrics(test.masks.numpy(), maps, test.has_mask, test.labels, test.defect_types, found.types_without_masks)
    for warning in pixel["warnings"][len(found.types_without_masks):]:  # load_test_set already named those types
        reporter.log(f"warning: {warning}")
    metrics.update(pixel)
    names = [p.relative_to(found.root).as_posix() for p in test.paths]
    per_image = image_score_rows(names, test.defect_types, prediction.scores, maps, test.masks.numpy(), test.has_mask,
                                 detector)
    hardest = hardest_cases(per_image)
    metrics["hardest_cases"] = {side: [per_image[i] for i in picked] for side, picked in hardest.items()}
    drift = assess_drift(prediction.maps, detector.drift_reference_)  # the test set as a whole, no labels
    metrics["drift"] = drift.to_dict() if drift is not None else None
    metrics["timing"] = {
        "predict_seconds": round(predict_seconds, 3),  # decoding included
        "images_per_second": round(len(test.labels) / max(predict_seconds, 1e-9), 3),
        # the process's CPU time (user + system, all its threads: decoding and scoring) over the same span: other
        # jobs on a shared machine slow images/s much more than they raise this (README, "Images: MVTec AD bottle")
        "cpu_seconds": round(cpu_seconds, 3),
        "cpu_ms_per_image": round(1000 * cpu_seconds / max(len(test.labels), 1), 2),
    }

    def write(tmp: Path, final: Path) -> dict[str, Path]:
        figures = _evaluation_figures(tmp, prediction, test, maps, metrics, detector)
        write_text_atomic(tmp / IMAGE_SCORES_FILE, image_scores_csv(per_image))
        figures["hardest_cases"] = _hardest_cases_figure(tmp / HARDEST_CASES_FILE, hardest, per_image, prediction,
                                                         test, maps, detector)
        return {name: final / path.name for name, path in figures.items()}

    return _Measured(metrics, write, evaluation_report)


def evaluate_image_model(checkpoint: str | Path, data_dir: str | Path | None = None, category: str | None = None,
                         **options: Any) -> EvaluationResult:
    """Score the test split and write ``RUN_DIR/evaluation/`` (metrics, report and figures); see :func:`evaluate_model`."""
    return evaluate_model("image", checkpoint, data_dir, category, **options)


def image_metrics(scores: np.ndarray, labels: np.ndarray, defect_types: list[str], detector: BaseDetector) -> dict[str, Any]:
    """Image AUROC, F1-max, the model threshold's confusion and the per-type table."""
    cal = detector.calibration_
    assert cal is not None
    fpr, tpr, _ = roc_curve(labels, scores)
    f1, f1_threshold = f1_max(labels, scores)
    per_type: dict[str, dict[str, Any]] = {}
    for name in sorted(set(defect_types), key=lambda t: (t != NORMAL_TYPE, t)):
        chosen = np.array([t == name for t in defect_types])
        flagged = cal.is_anomalous(scores[chosen])
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
        "threshold_rule": threshold_rule("image", getattr(detector.config, "threshold_from_folds", False), cal.target_fpr),
        "false_alarm_rate": cal.false_alarm_summary(),
        "at_model_threshold": confusion_at(labels, scores, cal.threshold),
        "counts": {"test_images": int(labels.size), "normal": int((labels == 0).sum()), "anomalous": int(labels.sum())},
        "per_defect_type": per_type,
        "roc_curve": {"fpr": fpr.tolist(), "tpr": tpr.tolist()},
    }


def image_score_rows(
    names: list[str], defect_types: list[str], scores: np.ndarray, maps: np.ndarray, masks: np.ndarray,
    has_mask: np.ndarray, detector: BaseDetector,
) -> list[dict[str, Any]]:
    """One record per test image for ``image_scores.csv``: where a false alarm or a miss comes from.

    ``pixel_auroc`` is the image's own pixel AUROC, for defective images whose mask marks some pixels.
    """
    cal = detector.calibration_
    assert cal is not None
    rows = []
    for i, name in enumerate(names):
        own_auroc = None
        if has_mask[i] and masks[i].any() and not masks[i].all():
            own_auroc = round(pixel_auroc(masks[i][None], maps[i][None]), 4)
        rows.append({
            "path": name,
            "defect_type": defect_types[i],
            "score": float(scores[i]),
            "normalized_score": float(cal.normalize(scores[i])),
            "verdict": verdict_word(bool(cal.is_anomalous(scores[i]))),
            "pixel_auroc": own_auroc,
        })
    return rows


def hardest_cases(rows: list[dict[str, Any]], per_side: int = HARDEST_PER_SIDE) -> dict[str, list[int]]:
    """The highest-scoring normal images (nearest to false alarms) and the lowest-scoring defective ones
    (nearest to misses): what to look at first before trusting a model. Indexes into ``rows``."""
    normal = [i for i, r in enumerate(rows) if r["defect_type"] == NORMAL_TYPE]
    defective = [i for i, r in enumerate(rows) if r["defect_type"] != NORMAL_TYPE]
    return {
        "highest_scoring_normal": sorted(normal, key=lambda i: -rows[i]["score"])[:per_side],
        "lowest_scoring_defective": sorted(defective, key=lambda i: rows[i]["score"])[:per_side],
    }


def _hardest_cases_figure(path: Path, hardest: dict[str, list[int]], rows: list[dict[str, Any]], prediction: Any,
                          test: Any, maps: np.ndarray, detector: BaseDetector) -> Path:
    cal = detector.calibration_
    assert cal is not None
    labels = {"highest_scoring_normal": "normal, high score", "lowest_scoring_defective": "defect, low score"}
    samples = []
    for side, picked in hardest.items():
        for i in picked:
            r = rows[i]
            view = prediction.views[i] if prediction.views is not None else None
            samples.append(SampleRow(
                title=f"{labels[side]}\n{r['path']}\nnormalised {r['normalized_score']:.2f} {r['verdict']}",
                image=to_hwc(test.images[i]), normalized_map=cal.normalize(maps[i]), view=view,
                mask=test.masks[i].numpy() if test.has_mask[i] else None))
    return plot_samples(samples, path)


def pixel_metrics(
    masks: np.ndarray, maps: np.ndarray, has_mask: np.ndarray, labels: np.ndarray, defect_types: list[str],
    types_without_masks: Iterable[str] = (),
) -> dict[str, Any]:
    """Pixel AUROC and AUPRO over the samples whose pixel truth is known; None (with a warning) otherwise."""
    warnings = [f"defect type {t!r} has no masks; its images are left out of the pixel metrics" for t in types_without_masks]
    known = np.asarray(has_mask, bool)
    result: dict[str, Any] = {"pixel_auroc": None, "aupro": None, "aupro_max_fpr": PRO_MAX_FPR,
                              "pixel_metric_images": int(known.sum()), "warnings": warnings}
    blank = known & (np.asarray(labels) == 1) & ~np.asarray(masks).reshape(len(known), -1).any(axis=1)
    if blank.any():  # e.g. a defect below a pixel of the model's size, or a mask drawn in another colour
        types = sorted({defect_types[i] for i in np.flatnonzero(blank)})
        warnings.append(f"{int(blank.sum())} anomalous image(s) of {', '.join(types)} have a mask that marks no pixel: "
                        "they count as all-normal pixels in pixel AUROC and add no region to AUPRO; check their masks")
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


def _evaluation_figures(folder: Path, prediction: Any, test: Any, maps: np.ndarray, metrics: dict, detector: BaseDetector) -> dict[str, Path]:
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
        verdict = verdict_word(bool(cal.is_anomalous(scores[i])))
        title = f"{test.defect_types[i]}/{test.paths[i].name}\nnormalised {float(cal.normalize(scores[i])):.2f} {verdict}"
        view = prediction.views[i] if prediction.views is not None else None
        rows.append(SampleRow(title=title, image=to_hwc(test.images[i]), normalized_map=cal.normalize(maps[i]),
                              view=view, mask=test.masks[i].numpy() if test.has_mask[i] else None))
    figures["samples"] = plot_samples(rows, folder / "samples.png")
    return figures


# ---- video --------------------------------------------------------------------------------------------
@dataclass
class _ClipResult:
    ref: ClipRef
    scores: np.ndarray
    labels: np.ndarray | None
    fps: float
    events: list[dict]


def _measure_video(detector: BaseDetector, data_dir: Path, category: str, reporter: Reporter) -> _Measured:
    from anomalens.data.video_datasets import discover_video_category

    found = discover_video_category(data_dir, category)
    if not found.test:
        raise DataError("no test clips (expected test/<type>/ or testing/frames/)", found.root)
    cal = detector.calibration_
    assert cal is not None
    results: list[_ClipResult] = []
    frames_total, unstated = 0, 0
    predict_started = time.perf_counter()
    for ref in reporter.iter(found.test, "evaluate clips"):
        clip = ref.open(detector.preprocessing, reporter)
        unstated += clip.stated_fps is None
        prediction = detector.predict_clip(clip, reporter, views=False)  # type: ignore[attr-defined]
        scores = np.asarray(prediction.scores, dtype=np.float64)
        labels = ref.labels_for(len(scores))
        results.append(_ClipResult(ref, scores, labels, clip.fps, calibrated_events(scores, cal, clip.fps)))
        frames_total += len(scores)
    predict_seconds = time.perf_counter() - predict_started
    if unstated:
        reporter.log(f"{unstated} of {len(found.test)} test clips state no frame rate: event times assume "
                     f"{DEFAULT_FRAME_FOLDER_FPS:g} fps and motion is measured per frame")
    metrics = video_metrics(results, cal, getattr(detector.config, "threshold_from_folds", False))
    metrics["timing"] = {
        "predict_seconds": round(predict_seconds, 3),
        "frames": frames_total,
        "frames_per_second": round(frames_total / max(predict_seconds, 1e-9), 3),
    }
    for warning in metrics.pop("warnings"):
        reporter.log(f"warning: {warning}")

    def write(tmp: Path, final: Path) -> dict[str, Path]:
        figures: dict[str, Path] = {}
        # the progress iterator first: zip then runs its last step (a Cancel's check) before the names run out
        for result, clip in zip(reporter.iter(results, "draw timelines"), clip_names(results)):
            name = f"timeline_{safe_name(clip)}.png"
            plot_timeline(
                result.scores, cal.threshold, result.fps, tmp / name, events=result.events, ground_truth=result.labels,
                title=f"{result.ref.name} ({result.ref.anomaly_type})",
            )
            figures[name[:-4]] = final / name
        write_text_atomic(tmp / "frame_scores.csv", frame_scores_csv(results, cal))
        return figures

    return _Measured(metrics, write, video_report)


def evaluate_video_model(checkpoint: str | Path, data_dir: str | Path | None = None, category: str | None = None,
                         **options: Any) -> EvaluationResult:
    """Score every test clip and write ``RUN_DIR/evaluation/`` (metrics, report, per-frame scores, timelines).

    Frame AUROC pools all labelled test frames (as the literature reports it); per clip AUROC where a clip
    has both classes; video AUROC (highest frame score per clip) over clips with a known label. See
    :func:`evaluate_model` for the options.
    """
    return evaluate_model("video", checkpoint, data_dir, category, **options)


def clip_names(results: Sequence[_ClipResult]) -> list[str]:
    """Each test clip's name in tables and file names: its own, or ``<type>/<name>`` where clips of two types share
    one (``test/normal/01.mp4`` and ``test/speeding/01.mp4`` once became one row and one timeline)."""
    counts = Counter(r.ref.name for r in results)
    return [r.ref.name if counts[r.ref.name] == 1 else f"{r.ref.anomaly_type}/{r.ref.name}" for r in results]


def video_metrics(results: list[_ClipResult], cal: Calibration, from_folds: bool = False) -> dict[str, Any]:
    """Frame-level (pooled, per clip, at the threshold), video-level and per-type figures (``from_folds``: the
    model's ``threshold_from_folds``, for the threshold's rule)."""
    warnings: list[str] = []
    labelled = [r for r in results if r.labels is not None]
    frame_auroc = frame_auroc_minmax = at_threshold = None
    if labelled:
        labels = [r.labels for r in labelled]
        scores = [r.scores for r in labelled]
        pooled_labels = np.concatenate(labels)
        if 0 < pooled_labels.sum() < pooled_labels.size:
            frame_auroc = pooled_frame_auroc(labels, scores)
            frame_auroc_minmax = minmax_per_clip_frame_auroc(labels, scores)
            at_threshold = confusion_at(pooled_labels, np.concatenate(scores), cal.threshold)
        else:
            warnings.append("the labelled test frames are all of one class: no frame-level AUROC")
    names = clip_names(results)
    video_only = [n for n, r in zip(names, results) if r.labels is None and r.ref.video_label in (0, 1)]
    unknown = [n for n, r in zip(names, results) if r.ref.video_label not in (0, 1) and r.labels is None]
    if video_only:
        warnings.append(f"{len(video_only)} test clip(s) have no frame labels and count at video level only")
    if unknown:
        warnings.append(f"{len(unknown)} test clip(s) have no labels at all and are left out of every metric: {', '.join(unknown)}")
    known = [r for r in results if r.ref.video_label in (0, 1)]
    video_labels = [r.ref.video_label for r in known]
    auroc_video = (
        video_auroc(video_labels, [float(r.scores.max()) for r in known]) if 0 < sum(video_labels) < len(video_labels) else None
    )
    per_clip = {}
    for name, r in zip(names, results):
        flagged = cal.is_anomalous(r.scores)
        per_clip[name] = {
            "type": r.ref.anomaly_type,
            "frames": int(r.scores.size),
            "anomalous_frames": int(r.labels.sum()) if r.labels is not None else None,
            "frame_auroc": clip_frame_auroc(r.labels, r.scores) if r.labels is not None else None,
            "flagged_frames": int(flagged.sum()),
            "events": len(r.events),
            "max_score": float(r.scores.max()),
            "mean_score": float(r.scores.mean()),
        }
    per_type: dict[str, dict[str, Any]] = {}
    for kind in sorted({r.ref.anomaly_type for r in results}, key=lambda t: (t != "normal", t)):
        group = [r for r in results if r.ref.anomaly_type == kind]
        group_labelled = [r for r in group if r.labels is not None]
        auroc = None
        if group_labelled:
            y = np.concatenate([r.labels for r in group_labelled])
            if 0 < y.sum() < y.size:
                auroc = pooled_frame_auroc([r.labels for r in group_labelled], [r.scores for r in group_labelled])
        all_scores = np.concatenate([r.scores for r in group])
        per_type[kind] = {
            "clips": len(group),
            "frames": int(all_scores.size),
            "frame_auroc": auroc,
            "share_flagged": float(cal.is_anomalous(all_scores).mean()),
            "mean_score": float(all_scores.mean()),
        }
    clip_aurocs = [v["frame_auroc"] for v in per_clip.values() if v["frame_auroc"] is not None]
    counts_labels = np.concatenate([r.labels for r in labelled]) if labelled else np.zeros(0)
    return {
        "frame_auroc": frame_auroc,
        "frame_auroc_minmax_per_clip": frame_auroc_minmax,
        "mean_clip_frame_auroc": float(np.mean(clip_aurocs)) if clip_aurocs else None,
        "video_auroc": auroc_video,
        "threshold": cal.threshold,
        "threshold_rule": threshold_rule("video", from_folds, cal.target_fpr),
        "false_alarm_rate": cal.false_alarm_summary(),
        "at_model_threshold": at_threshold,
        "counts": {
            "test_clips": len(results),
            "labelled_frames": int(counts_labels.size),
            "anomalous_frames": int(counts_labels.sum()),
            "video_level_only_clips": len(video_only),
            "unlabelled_clips": len(unknown),
        },
        "per_type": per_type,
        "per_clip": per_clip,
        "warnings": warnings,
    }


_MEASURE: dict[str, Callable[[BaseDetector, Path, str, Reporter], _Measured]] = {"image": _measure_images, "video": _measure_video}
