"""What the workflows write for people and spreadsheets: Markdown reports, CSV tables, the terminal table.

Pure formatting over the metrics dicts and results the workflows computed; no scoring happens here.
Numbers that could not be computed print as "n/a" through :func:`format_number`, the one formatter for them;
in a CSV, a score that could not be computed (NaN) is an empty cell through :func:`score_cell` (JSON writes null).
Torch-free (the detector is a type hint only), so the Ray batch job and the UI share these writers' cells.

>>> format_number(0.98765), format_number(None), format_number(12, digits=0)
('0.9877', 'n/a', '12')
"""

from __future__ import annotations

import csv
import io
import math
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anomalens.metrics.drift import DriftReport
from anomalens.metrics.threshold import Calibration, false_alarm_line
from anomalens.runtime import write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from anomalens.models.base import BaseDetector  # torch: a type hint only, see the module docstring


def format_number(value: Any, digits: int = 4) -> str:
    """A metric for a report or the terminal: fixed decimals, or n/a where it could not be computed."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def score_cell(value: float | None, spec: str) -> str:
    """A score in a CSV cell, ``format(value, spec)``; empty where it could not be computed (NaN, or None), so that
    a spreadsheet reads a blank, not the text "nan". Every CSV the project writes formats its scores here.

    >>> score_cell(0.123456789, ".6g"), score_cell(float("nan"), ".4f"), score_cell(None, ".4f")
    ('0.123457', '', '')
    """
    return "" if value is None or math.isnan(value) else format(value, spec)


def _report_head(title: str, metrics: dict[str, Any], run: dict[str, Any], details: list[str]) -> list[str]:
    """report.md's opening lines: the title, the checkpoint, ``details`` (data, input size, ...) and a note when the
    training was stopped early."""
    lines = [f"# {title}: {metrics['model']} on {metrics['category']}", "", f"- checkpoint: `{metrics['checkpoint']}`", *details]
    if run.get("interrupted"):
        lines.append("- note: training was stopped early; the best model up to then was kept")
    return lines


# ---- images ---------------------------------------------------------------------------------------
def evaluation_report(metrics: dict[str, Any], run: dict[str, Any]) -> str:
    """``report.md``: headline metrics, the threshold rule and the per-defect-type table."""

    at = metrics["at_model_threshold"]
    lines = _report_head("Evaluation", metrics, run, [
        f"- data: `{metrics['data_dir']}` ({metrics['counts']['normal']} normal, {metrics['counts']['anomalous']} anomalous test images)",
        f"- image size: {metrics['image_size'][0]}x{metrics['image_size'][1]}, device {metrics['device']}",
    ])
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| image AUROC | {format_number(metrics['image_auroc'])} |",
        f"| pixel AUROC | {format_number(metrics['pixel_auroc'])} |",
        f"| AUPRO (FPR <= {metrics['aupro_max_fpr']}) | {format_number(metrics['aupro'])} |",
        f"| F1-max (oracle threshold {metrics['f1_max_threshold']:.5g}) | {format_number(metrics['f1_max'])} |",
        f"| F1 at the model threshold | {format_number(at['f1'])} |",
        "",
        f"Threshold {metrics['threshold']:.6g}: {metrics['threshold_rule']}. It was fixed before the test set was read; "
        f"at it {at['false_positives']} of {at['false_positives'] + at['true_negatives']} normal test images are flagged "
        f"and {at['true_positives']} of {at['true_positives'] + at['false_negatives']} anomalous ones are found. "
        "F1-max picks its threshold on the test labels, so it measures separability only.",
        "",
        f"What the threshold promises: {false_alarm_line(metrics.get('false_alarm_rate'), at)}",
        *drift_lines(metrics.get("drift")),
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
    lines += _hardest_case_lines(metrics.get("hardest_cases"))
    lines += ["", "Figures: `roc_curve.png`, `score_distribution.png`, `samples.png`, `hardest_cases.png`. "
              "Every test image's score, verdict and own pixel AUROC: `image_scores.csv`.", ""]
    return "\n".join(lines)


def _hardest_case_lines(hardest: dict[str, list[dict[str, Any]]] | None) -> list[str]:
    """report.md's hardest cases: the normal images nearest to a false alarm, the defects nearest to a miss."""
    if not hardest:
        return []
    titles = {"highest_scoring_normal": "Highest-scoring normal images (nearest to, or already, false alarms)",
              "lowest_scoring_defective": "Lowest-scoring defective images (nearest to, or already, misses)"}
    lines = ["", "## Hardest cases", "", "![hardest cases](hardest_cases.png)"]
    for side, rows in hardest.items():
        if not rows:
            continue
        lines += ["", f"{titles.get(side, side)}:", "", "| image | score | normalised | verdict | own pixel AUROC |",
                  "|---|---|---|---|---|"]
        for r in rows:
            auroc = "" if r.get("pixel_auroc") is None else f"{r['pixel_auroc']:.4f}"
            lines.append(f"| {r['path']} | {r['score']:.5g} | {r['normalized_score']:.3f} | {r['verdict']} | {auroc} |")
    return lines


IMAGE_SCORE_COLUMNS = ["path", "defect_type", "score", "normalized_score", "verdict", "pixel_auroc"]


def image_scores_csv(rows: list[dict[str, Any]]) -> str:
    """``image_scores.csv``: one row per test image (path relative to the category, defect type, raw and
    normalised score, verdict, the image's own pixel AUROC where its mask marks a defect)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(IMAGE_SCORE_COLUMNS)
    for r in rows:
        writer.writerow([r["path"], r["defect_type"], score_cell(r["score"], ".6g"), score_cell(r["normalized_score"], ".4f"),
                         r["verdict"], score_cell(r["pixel_auroc"], ".4f")])
    return buffer.getvalue()


def drift_lines(drift: dict[str, Any] | None) -> list[str]:
    """report.md's drift line: the scored data as a whole against the typical distances of validation data."""
    if not drift:
        return []
    return [f"- drift check (typical, not highest, distances; no labels used): {'WARNING ' if drift['drifted'] else ''}{drift['message']}"]


def write_prediction_tables(
    folder: Path, results: list[Any], detector: BaseDetector, source: Any, drift: DriftReport | None = None
) -> None:
    """``predictions.csv`` and ``predictions.json`` of :func:`~anomalens.workflows.predict.predict_images`."""
    cal = detector.calibration_
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "relative_path", "score", "normalized_score", "anomalous", "threshold", "regions", "overlay"])
    for r in results:  # an image that could not be scored: empty score cells, and anomalous says 1
        writer.writerow([str(r.path), r.relative_path, score_cell(r.score, ".6g"), score_cell(r.normalized_score, ".4f"),
                         int(r.anomalous), f"{cal.threshold:.6g}", len(r.regions), str(r.overlay_path) if r.overlay_path else ""])
    write_text_atomic(folder / "predictions.csv", buffer.getvalue())
    write_json_atomic(folder / "predictions.json", {
        "model": detector.name,
        # source: the checkpoint path, or the detector itself (no checkpoint)
        "checkpoint": str(Path(source).resolve()) if isinstance(source, (str, os.PathLike)) else None,
        "threshold": cal.threshold,
        "normalized_threshold": 0.5,
        "pixel_threshold": cal.region_threshold(),
        "created": datetime.now().isoformat(timespec="seconds"),
        "count": len(results),
        "anomalous": sum(r.anomalous for r in results),
        "drift": drift.to_dict() if drift is not None else None,
        "results": [r.to_dict() for r in results],
    })


# ---- video ----------------------------------------------------------------------------------------
def video_report(metrics: dict[str, Any], run: dict[str, Any]) -> str:
    """``report.md``: headline metrics, the threshold rule and the per-type and per-clip tables."""

    counts = metrics["counts"]
    held_out = run.get("validation_clips")
    lines = _report_head("Video evaluation", metrics, run, [
        f"- data: `{metrics['data_dir']}` ({counts['test_clips']} test clips, {counts['labelled_frames']} labelled frames, "
        f"{counts['anomalous_frames']} anomalous)",
        f"- frame size {metrics['image_size'][0]}x{metrics['image_size'][1]}, device {metrics['device']}, "
        f"{metrics['timing']['frames_per_second']:.1f} frames/s (decode + score)",
        *([f"- threshold and model selection from held-out training clips: {', '.join(held_out)}"] if held_out else []),
    ])
    at = metrics.get("at_model_threshold")
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| frame AUROC (all test frames pooled) | {format_number(metrics['frame_auroc'])} |",
        f"| mean per-clip frame AUROC | {format_number(metrics['mean_clip_frame_auroc'])} |",
        f"| video AUROC (highest frame score per clip) | {format_number(metrics['video_auroc'])} |",
        f"| frame AUROC, scores min-max scaled per clip (for comparison only) | {format_number(metrics['frame_auroc_minmax_per_clip'])} |",
    ]
    if at:
        lines.append(f"| frame F1 at the model threshold | {format_number(at['f1'])} |")
    lines += [
        "",
        f"Threshold {metrics['threshold']:.6g}: {metrics['threshold_rule']}. It was fixed before any test clip was read.",
    ]
    if at:
        lines.append(
            f"At it {at['false_positives']} of {at['false_positives'] + at['true_negatives']} normal test frames are flagged and "
            f"{at['true_positives']} of {at['true_positives'] + at['false_negatives']} anomalous frames are found."
        )
    lines.append(f"What the threshold promises: {false_alarm_line(metrics.get('false_alarm_rate'), at)}")
    lines += [
        "The min-max variant rescales each test clip by its own score range, as many papers do; an online system "
        "cannot, so the pooled figure is the headline.",
        "",
        "| type | clips | frames | frame AUROC | flagged at threshold | mean score |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in metrics["per_type"].items():
        lines.append(
            f"| {name} | {row['clips']} | {row['frames']} | {format_number(row['frame_auroc'])} | {row['share_flagged']:.0%} | {row['mean_score']:.5g} |"
        )
    lines += ["", "| clip | type | frames | anomalous | frame AUROC | flagged | events | max score |", "|---|---|---|---|---|---|---|---|"]
    for name, row in metrics["per_clip"].items():
        anomalous = format_number(row["anomalous_frames"], digits=0)
        lines.append(
            f"| {name} | {row['type']} | {row['frames']} | {anomalous} | {format_number(row['frame_auroc'])} | {row['flagged_frames']} | "
            f"{row['events']} | {row['max_score']:.5g} |"
        )
    lines += ["", "Figures: `timeline_<clip>.png` (ground truth shaded grey, detected intervals red). "
              "Per-frame scores: `frame_scores.csv`.", ""]
    return "\n".join(lines)


def frame_scores_csv(results: list[Any], cal: Calibration) -> str:
    """``frame_scores.csv`` of a video evaluation: one row per test frame."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["clip", "type", "frame", "score", "normalized_score", "anomalous", "label"])
    for r in results:
        normalized, flags = cal.normalize(r.scores), cal.is_anomalous(r.scores)
        for t, score in enumerate(r.scores):
            label = "" if r.labels is None else int(r.labels[t])
            writer.writerow([r.ref.name, r.ref.anomaly_type, t, score_cell(score, ".6g"), score_cell(normalized[t], ".4f"),
                             int(flags[t]), label])
    return buffer.getvalue()


def scores_csv(
    scores: np.ndarray, normalized: np.ndarray, anomalous: np.ndarray, fps: float, cues: dict[str, np.ndarray],
    times: np.ndarray | None = None,
) -> str:
    """One row per frame; a column per cue (``<cue>_score``) for models that add several cues. ``time``: the frame's
    own seconds in ``times`` (a variable frame rate, see ``VideoClip.frame_times``), else ``frame / fps``."""
    if times is not None and len(times) != len(scores):
        raise ValueError(f"{len(times)} frame times for {len(scores)} scores")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["frame", "time", "score", "normalized_score", "anomalous", *(f"{name}_score" for name in cues)])
    for t, score in enumerate(scores):
        shares = [score_cell(values[t], ".6g") for values in cues.values()]
        seconds = t / fps if times is None else float(times[t])
        writer.writerow([t, f"{seconds:.4f}", score_cell(score, ".6g"), score_cell(normalized[t], ".4f"), int(anomalous[t]),
                         *shares])
    return buffer.getvalue()


# ---- benchmark ------------------------------------------------------------------------------------
IMAGE_HEADLINE_KEYS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
VIDEO_HEADLINE_KEYS = ("frame_auroc", "mean_clip_frame_auroc", "video_auroc")


def format_benchmark_table(result: dict[str, Any]) -> str:
    """A small plain-text table of the headline numbers, for the terminal."""

    def fmt(value: Any) -> str:
        if value is None or isinstance(value, float):
            return format_number(value, digits=4 if value is None or abs(value) < 10 else 1)
        return str(value)

    rows = [("model", result.get("model")), ("category", result.get("category"))]
    rows += [(key, result.get(key)) for key in IMAGE_HEADLINE_KEYS + VIDEO_HEADLINE_KEYS if key in result]
    rows += [(key, result.get(key)) for key in ("fit_seconds", "images_per_second", "cpu_ms_per_image",
                                                "frames_per_second", "peak_rss_mb", "epochs", "device") if key in result]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    lines += [f"{name:<{width}}  {fmt(value)}" for name, value in rows]
    return "\n".join(lines)
