"""The video workflow: train on normal clips, evaluate frame by frame on labelled test clips, analyse a video.

The CLI (``anomalens train-video|evaluate-video|analyze-video``), the UI and ``anomalens benchmark`` call these.
A video run folder::

    results/video_<category>_<YYYYmmdd_HHMMSS>/
        model/            config.json + weights.safetensors
        run.json          kind "video", data, settings, seed, the validation clips
        history.json      per-epoch records (models that train in epochs)
        train.log         the messages shown during training
        evaluation/       metrics.json, report.md, frame_scores.csv, timeline_<clip>.png
        analysis/<video>_<timestamp>/   side_by_side.mp4, timeline.png, scores.csv, events.json

Honest evaluation: whole normal training clips are held out for validation (or, with a single training
clip, its tail); model selection and the threshold use only them. Test clips are read by
:func:`evaluate_video_model` alone; an analysed video never sets its own threshold.

>>> run = train_video_model("data", "ucsd_ped2")                                 # doctest: +SKIP
>>> evaluate_video_model(run.run_dir).metrics["frame_auroc"]                     # doctest: +SKIP
>>> analyze_video(run.run_dir, "line_camera.mp4").events                         # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from anomalens.data.preprocessing import parse_image_size
from anomalens.data.video_datasets import ClipRef, discover_video_category
from anomalens.data.video_io import VideoClip, check_fps, open_clip
from anomalens.errors import Cancelled, CheckpointError, ConfigError, DataError
from anomalens.metrics.classification import confusion_at
from anomalens.metrics.events import (
    clip_frame_auroc,
    detect_events,
    minmax_per_clip_frame_auroc,
    pooled_frame_auroc,
    video_auroc,
)
from anomalens.metrics.threshold import calibrate
from anomalens.models.base import DEFAULT_VIDEO_MODEL, Detector, create_detector, load_detector
from anomalens.models.video.base import VideoDetector
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_dir, seed_everything, write_json_atomic, write_text_atomic
from anomalens.visualization.timeline import plot_timeline
from anomalens.visualization.video_render import render_side_by_side
from anomalens.workflows.rundir import (
    EVALUATION_DIR,
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

ANALYSIS_DIR = "analysis"
EVENT_MERGE_SECONDS = 0.2  # events closer than this are one event (a one-frame dip does not split it)


# ---- training ---------------------------------------------------------------------------------
def split_video_clips(
    clips: Sequence[ClipRef], preprocessing, validation_fraction: float, seed: int, reporter: Reporter = SILENT,
    min_frames: int = 2,
) -> tuple[list[VideoClip], list[VideoClip], list[str]]:
    """Hold out whole normal clips for validation (at least one when there are two or more).

    With a single training clip its last ``validation_fraction`` of frames is held out instead (at least
    ``min_frames``), provided ``min_frames`` remain for training. Returns (train, validation, descriptions).
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"--validation-fraction must be in [0, 1), got {validation_fraction}")
    opened = [ref.open(preprocessing, reporter) for ref in clips]
    if validation_fraction == 0.0:
        return opened, [], []
    if len(opened) >= 2:
        count = min(len(opened) - 1, max(1, int(round(len(opened) * validation_fraction))))
        chosen = set(np.random.default_rng(seed).permutation(len(opened))[:count].tolist())
        train = [c for i, c in enumerate(opened) if i not in chosen]
        validation = [c for i, c in enumerate(opened) if i in chosen]
        return train, validation, [ref.path.name for i, ref in enumerate(clips) if i in chosen]
    clip = opened[0]
    total = clip.count_frames()
    tail = max(int(round(total * validation_fraction)), min_frames)
    if total - tail < min_frames:
        reporter.log(f"warning: the only training clip has {total} frames, too few to hold out a validation tail")
        return [clip], [], []
    return [clip.segment(0, total - tail)], [clip.segment(total - tail)], [f"{clips[0].path.name} [frames {total - tail}-{total - 1}]"]


def train_video_model(
    data_dir: str | Path,
    category: str,
    model: str = DEFAULT_VIDEO_MODEL,
    results_dir: str | Path = "results",
    *,
    image_size: int | Sequence[int] | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    device: str = "auto",
    reporter: Reporter = SILENT,
    run_name: str | None = None,
    **model_settings: Any,
) -> TrainResult:
    """Train a video ``model`` on the normal training clips of ``category`` and save a run folder.

    ``model_settings`` go to the model's config (``sequence_length``, ``epochs``, ``lr``, ...); ``image_size``
    defaults to the model's own. The run folder appears complete or not at all; on Ctrl-C or Cancel a model
    that keeps its best epoch so far is saved (``interrupted`` True), otherwise nothing is written.
    """
    started = datetime.now()
    found = discover_video_category(data_dir, category)
    check_results_dir(results_dir, reporter=reporter)  # before the work: writable, with room
    settings = {k: v for k, v in model_settings.items() if v is not None}
    if image_size is not None:
        settings["image_size"] = parse_image_size(image_size)
    detector = create_detector(model, device=device, seed=seed, **settings)
    if not isinstance(detector, VideoDetector):
        raise ConfigError(f"model {model!r} is an {detector.kind} model; use a video model (stfeatures, convlstm)")
    seed_everything(seed)
    log = logging_reporter(reporter)
    min_frames = max(2, int(getattr(detector.config, "sequence_length", 2)))
    train, validation, validation_names = split_video_clips(
        found.train, detector.preprocessing, validation_fraction, seed, log, min_frames
    )
    size = tuple(detector.config.image_size)
    log.log(
        f"training {model} on {found.root}: {len(train)} training and {len(validation)} validation clips at "
        f"{size[0]}x{size[1]}, device {detector.device}, seed {seed}"
    )
    fit_started = time.perf_counter()
    try:
        detector.fit_clips(train, validation, reporter=log)
    except (KeyboardInterrupt, Cancelled):
        if not detector.interrupted_ or not detector.history_:
            raise  # nothing worth keeping: no run folder is written
    if detector.interrupted_ and detector.calibration_ is None:
        # stopped during the threshold pass after training: finish it without the cancel flag
        log.log("choosing the threshold on the validation clips")
        quiet = Reporter(show_tqdm=reporter.show_tqdm)
        held_out = validation or train
        scores = np.concatenate([detector.predict_clip(clip, quiet).scores for clip in held_out])
        detector.calibration_ = calibrate(scores, detector.config.target_fpr)
    fit_seconds = time.perf_counter() - fit_started
    log_training_summary(log, detector, fit_seconds, "frames")
    cal = detector.calibration_
    run = {
        **run_record("video", category, data_dir, model, started, seed, detector, validation_fraction, settings),
        "train_clips": [c.path.name for c in train],
        "train_frames": sum(c.num_frames or 0 for c in train),
        "validation_clips": validation_names,
        "validation_frames": cal.validation_count,
        "fit_seconds": round(fit_seconds, 3),
        "interrupted": detector.interrupted_,
        "threshold": cal.threshold,
    }
    run_dir = save_run(Path(results_dir), run_name or f"video_{category}_{started:%Y%m%d_%H%M%S}", detector, run, log.lines)
    reporter.log(f"saved the run to {run_dir}")
    return TrainResult(run_dir=run_dir, detector=detector, interrupted=detector.interrupted_)


def load_video_detector(checkpoint: str | Path | Detector, device: str = "auto") -> VideoDetector:
    """A fitted video detector from a run/model folder (or passed through); refuses image models."""
    if isinstance(checkpoint, Detector):
        detector = checkpoint
        if not isinstance(detector, VideoDetector):
            raise CheckpointError(f"this is an {detector.kind} model ({detector.name}); a video model is needed here")
    else:
        detector = load_detector(checkpoint, device=device, kind="video")  # type: ignore[assignment]
    if detector.calibration_ is None:
        raise CheckpointError("this model has no threshold (it was never fitted with validation clips)")
    return detector  # type: ignore[return-value]


# ---- evaluation -------------------------------------------------------------------------------
@dataclass
class _ClipResult:
    ref: ClipRef
    scores: np.ndarray
    labels: np.ndarray | None
    fps: float
    events: list[dict]


def evaluate_video_model(
    checkpoint: str | Path,
    data_dir: str | Path | None = None,
    category: str | None = None,
    *,
    device: str = "auto",
    reporter: Reporter = SILENT,
) -> EvaluationResult:
    """Score every test clip and write ``RUN_DIR/evaluation/`` (metrics, report, per-frame scores, timelines).

    Frame AUROC pools all labelled test frames (as the literature reports it); per clip AUROC where a clip
    has both classes; video AUROC (highest frame score per clip) over clips with a known label.
    """
    model_dir, run_dir, run = open_run(checkpoint)
    detector = load_video_detector(model_dir, device)  # first: an image model is refused before anything else
    data_dir = data_dir if data_dir is not None else run.get("data_dir")
    category = category if category is not None else run.get("category")
    if data_dir is None or category is None:
        raise ConfigError("no run.json beside this model: give --data-dir and --category", model_dir)
    check_writable(run_dir, "run folder")  # before scoring: evaluation/ is written there
    found = discover_video_category(data_dir, category)
    if not found.test:
        raise DataError("no test clips (expected test/<type>/ or testing/frames/)", found.root)
    cal = detector.calibration_
    assert cal is not None
    results: list[_ClipResult] = []
    frames_total = 0
    predict_started = time.perf_counter()
    for ref in reporter.iter(found.test, "evaluate clips"):
        clip = ref.open(detector.preprocessing, reporter)
        prediction = detector.predict_clip(clip, reporter)
        scores = np.asarray(prediction.scores, dtype=np.float64)
        labels = ref.labels_for(len(scores))
        events = detect_events(scores, cal.threshold, clip.fps, merge_gap=_merge_gap(clip.fps))
        results.append(_ClipResult(ref, scores, labels, clip.fps, events))
        frames_total += len(scores)
    predict_seconds = time.perf_counter() - predict_started
    metrics = video_metrics(results, cal)
    metrics.update(
        {
            **evaluation_context(detector, category, data_dir, model_dir),
            "timing": {
                "predict_seconds": round(predict_seconds, 3),
                "frames": frames_total,
                "frames_per_second": round(frames_total / max(predict_seconds, 1e-9), 3),
            },
        }
    )
    for warning in metrics.pop("warnings"):
        reporter.log(f"warning: {warning}")
    if run.get("interrupted"):
        metrics["interrupted_training"] = True
    output_dir = run_dir / EVALUATION_DIR
    figures: dict[str, Path] = {}
    with atomic_dir(output_dir) as tmp:
        for result in reporter.iter(results, "draw timelines"):
            name = f"timeline_{_safe(result.ref.name)}.png"
            plot_timeline(
                result.scores, cal.threshold, result.fps, tmp / name, events=result.events, ground_truth=result.labels,
                title=f"{result.ref.name} ({result.ref.anomaly_type})",
            )
            figures[name[:-4]] = output_dir / name
        write_text_atomic(tmp / "frame_scores.csv", _frame_scores_csv(results, cal))
        write_json_atomic(tmp / "metrics.json", metrics)
        write_text_atomic(tmp / "report.md", video_report(metrics, run))
    reporter.log(f"wrote the evaluation to {output_dir}")
    return EvaluationResult(output_dir=output_dir, metrics=metrics, report_path=output_dir / "report.md", figures=figures)


def video_metrics(results: list[_ClipResult], cal) -> dict[str, Any]:
    """Frame-level (pooled, per clip, at the threshold), video-level and per-type figures."""
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
    video_only = [r.ref.name for r in results if r.labels is None and r.ref.video_label in (0, 1)]
    unknown = [r.ref.name for r in results if r.ref.video_label not in (0, 1) and r.labels is None]
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
    for r in results:
        flagged = r.scores > cal.threshold
        per_clip[r.ref.name] = {
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
            "share_flagged": float((all_scores > cal.threshold).mean()),
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
        "threshold_rule": f"from frames of held-out normal training clips only, target false-positive rate {cal.target_fpr:g}",
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


def video_report(metrics: dict[str, Any], run: dict[str, Any]) -> str:
    """``report.md``: headline metrics, the threshold rule and the per-type and per-clip tables."""

    def fmt(value: Any, digits: int = 4) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    counts = metrics["counts"]
    lines = [
        f"# Video evaluation: {metrics['model']} on {metrics['category']}",
        "",
        f"- checkpoint: `{metrics['checkpoint']}`",
        f"- data: `{metrics['data_dir']}` ({counts['test_clips']} test clips, {counts['labelled_frames']} labelled frames, "
        f"{counts['anomalous_frames']} anomalous)",
        f"- frame size {metrics['image_size'][0]}x{metrics['image_size'][1]}, device {metrics['device']}, "
        f"{metrics['timing']['frames_per_second']:.1f} frames/s (decode + score)",
    ]
    if run.get("validation_clips"):
        lines.append(f"- threshold and model selection from held-out training clips: {', '.join(run['validation_clips'])}")
    if run.get("interrupted"):
        lines.append("- note: training was stopped early; the best model up to then was kept")
    at = metrics.get("at_model_threshold")
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| frame AUROC (all test frames pooled) | {fmt(metrics['frame_auroc'])} |",
        f"| mean per-clip frame AUROC | {fmt(metrics['mean_clip_frame_auroc'])} |",
        f"| video AUROC (highest frame score per clip) | {fmt(metrics['video_auroc'])} |",
        f"| frame AUROC, scores min-max scaled per clip (for comparison only) | {fmt(metrics['frame_auroc_minmax_per_clip'])} |",
    ]
    if at:
        lines.append(f"| frame F1 at the model threshold | {fmt(at['f1'])} |")
    lines += [
        "",
        f"Threshold {metrics['threshold']:.6g}: {metrics['threshold_rule']}. It was fixed before any test clip was read.",
    ]
    if at:
        lines.append(
            f"At it {at['false_positives']} of {at['false_positives'] + at['true_negatives']} normal test frames are flagged and "
            f"{at['true_positives']} of {at['true_positives'] + at['false_negatives']} anomalous frames are found."
        )
    lines += [
        "The min-max variant rescales each test clip by its own score range, as many papers do; an online system "
        "cannot, so the pooled figure is the headline.",
        "",
        "| type | clips | frames | frame AUROC | flagged at threshold | mean score |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in metrics["per_type"].items():
        lines.append(
            f"| {name} | {row['clips']} | {row['frames']} | {fmt(row['frame_auroc'])} | {row['share_flagged']:.0%} | {row['mean_score']:.5g} |"
        )
    lines += ["", "| clip | type | frames | anomalous | frame AUROC | flagged | events | max score |", "|---|---|---|---|---|---|---|---|"]
    for name, row in metrics["per_clip"].items():
        anomalous = "n/a" if row["anomalous_frames"] is None else row["anomalous_frames"]
        lines.append(
            f"| {name} | {row['type']} | {row['frames']} | {anomalous} | {fmt(row['frame_auroc'])} | {row['flagged_frames']} | "
            f"{row['events']} | {row['max_score']:.5g} |"
        )
    lines += ["", "Figures: `timeline_<clip>.png` (ground truth shaded grey, detected intervals red). "
              "Per-frame scores: `frame_scores.csv`.", ""]
    return "\n".join(lines)


def _frame_scores_csv(results: list[_ClipResult], cal) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["clip", "type", "frame", "score", "normalized_score", "anomalous", "label"])
    for r in results:
        normalized = cal.normalize(r.scores)
        for t, score in enumerate(r.scores):
            label = "" if r.labels is None else int(r.labels[t])
            writer.writerow([r.ref.name, r.ref.anomaly_type, t, f"{score:.6g}", f"{normalized[t]:.4f}", int(score > cal.threshold), label])
    return buffer.getvalue()


# ---- analysis of one video ------------------------------------------------------------------------
@dataclass
class VideoAnalysis:
    """What :func:`analyze_video` wrote and found."""

    output_dir: Path
    side_by_side_path: Path
    timeline_path: Path
    scores_csv: Path
    events_json: Path
    scores: np.ndarray
    normalized_scores: np.ndarray
    anomalous: np.ndarray
    events: list[dict]
    fps: float


def analyze_video(
    checkpoint_or_detector: str | Path | Detector,
    video: str | Path,
    output_dir: str | Path | None = None,
    *,
    device: str = "auto",
    reporter: Reporter = SILENT,
    fps: float | None = None,
) -> VideoAnalysis:
    """Score every frame of ``video`` (file or frame folder) with the model's own threshold and write the outputs.

    ``output_dir`` defaults to ``RUN_DIR/analysis/<video>_<timestamp>/`` (``results/analysis/...`` for a
    detector object). ``fps`` sets the rate of a folder of frames (default 25). Files appear only once all of
    them are written.
    """
    fps = check_fps(fps)  # before the model is loaded
    detector = load_video_detector(checkpoint_or_detector, device)
    cal = detector.calibration_
    assert cal is not None
    clip = open_clip(video, detector.preprocessing, reporter, fps=fps)
    if output_dir is None:
        base = Path("results")
        if not isinstance(checkpoint_or_detector, Detector):
            base = open_run(checkpoint_or_detector)[1]
        output_dir = base / ANALYSIS_DIR / f"{_safe(clip.name)}_{datetime.now():%Y%m%d_%H%M%S}"
    output_dir = check_writable(output_dir)  # before scoring, not after it
    started = time.perf_counter()
    prediction = detector.predict_clip(clip, reporter)
    seconds = time.perf_counter() - started
    scores = np.asarray(prediction.scores, dtype=np.float64)
    count = clip.num_frames
    if count is not None and count != scores.size:
        raise RuntimeError(f"{detector.name} returned {scores.size} scores for {count} frames")
    normalized = cal.normalize(scores)
    anomalous = cal.is_anomalous(scores)
    events = detect_events(scores, cal.threshold, clip.fps, merge_gap=_merge_gap(clip.fps), normalized_scores=normalized)
    cues = {name: np.asarray(values, dtype=np.float64) for name, values in getattr(prediction, "cues", {}).items()}
    for event in events:  # which cue made the peak: e.g. {"appearance": 0.4, "motion": 7.9} for a speeding bike
        event["peak_cues"] = {name: round(float(values[event["peak_frame"]]), 4) for name, values in cues.items()}
        if cues:
            event["main_cue"] = max(event["peak_cues"], key=event["peak_cues"].get)
    reporter.log(
        f"{clip.name}: {scores.size} frames scored in {seconds:.1f} s ({scores.size / max(seconds, 1e-9):.1f} frames/s); "
        f"{int(anomalous.sum())} above the threshold, {len(events)} interval(s)"
    )
    view_label = getattr(detector, "view_label", "Reconstruction" if detector.name == "convlstm" else "Model view")
    maps = (cal.normalize(m.astype(np.float32)) for m in prediction.maps)
    with staged_dir(output_dir) as tmp:
        assert tmp is not None
        render_side_by_side(
            tmp / "side_by_side.mp4", clip.iter_native(), clip.frame_size, scores, normalized, maps, prediction.views,
            clip.fps, view_label=view_label, reporter=reporter,
        )
        plot_timeline(scores, cal.threshold, clip.fps, tmp / "timeline.png", events=events, title=f"{clip.name}: anomaly score per frame")
        write_text_atomic(tmp / "scores.csv", _scores_csv(scores, normalized, anomalous, clip.fps, cues))
        write_json_atomic(
            tmp / "events.json",
            {
                "video": str(Path(video)),
                "model": detector.name,
                "fps": clip.fps,
                "frames": int(scores.size),
                "threshold": cal.threshold,
                "threshold_rule": f"from held-out normal training clips, target false-positive rate {cal.target_fpr:g}",
                "truncated": clip.truncated,
                "events": events,
            },
        )
    return VideoAnalysis(
        output_dir=output_dir,
        side_by_side_path=output_dir / "side_by_side.mp4",
        timeline_path=output_dir / "timeline.png",
        scores_csv=output_dir / "scores.csv",
        events_json=output_dir / "events.json",
        scores=scores,
        normalized_scores=normalized,
        anomalous=anomalous,
        events=events,
        fps=clip.fps,
    )


def _scores_csv(
    scores: np.ndarray, normalized: np.ndarray, anomalous: np.ndarray, fps: float, cues: dict[str, np.ndarray]
) -> str:
    """One row per frame; a column per cue (``<cue>_score``) for models that add several cues."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["frame", "time", "score", "normalized_score", "anomalous", *(f"{name}_score" for name in cues)])
    for t, score in enumerate(scores):
        shares = [f"{values[t]:.6g}" for values in cues.values()]
        writer.writerow([t, f"{t / fps:.4f}", f"{score:.6g}", f"{normalized[t]:.4f}", int(anomalous[t]), *shares])
    return buffer.getvalue()


def _merge_gap(fps: float) -> int:
    return max(1, int(round(EVENT_MERGE_SECONDS * fps)))


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "clip"


# ---- benchmark ---------------------------------------------------------------------------------
def benchmark_video_model(
    data_dir: str | Path,
    category: str,
    model: str | None = None,
    results_dir: str | Path = "results/benchmarks",
    *,
    device: str = "auto",
    seed: int = 0,
    reporter: Reporter = SILENT,
    **settings: Any,
) -> dict[str, Any]:
    """Train + evaluate + time a video model; writes and returns ``RUN_DIR/benchmark.json``'s content."""
    from anomalens.workflows.benchmark import epochs_run, peak_rss_mb, provenance

    model = model or DEFAULT_VIDEO_MODEL
    trained = train_video_model(data_dir, category, model, results_dir, device=device, seed=seed, reporter=reporter, **settings)
    evaluation = evaluate_video_model(trained.run_dir, device=device, reporter=reporter)
    metrics = evaluation.metrics
    run = json.loads((Path(trained.run_dir) / "run.json").read_text(encoding="utf-8"))
    result: dict[str, Any] = {
        "model": model,
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
        **provenance(run, trained, evaluation, seed),
    }
    write_json_atomic(Path(trained.run_dir) / "benchmark.json", result)
    return result
