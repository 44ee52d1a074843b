"""Every CSV the project writes leaves a score that could not be computed (NaN) empty, through one helper
(:func:`~anomalens.workflows.reports.score_cell`), and writes a finite score exactly as before."""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from anomalens.distributed.batch import BatchJob, RayPredictionReport, write_summary
from anomalens.metrics.threshold import Calibration
from anomalens.ui.tabs.inspect import ImageInspection, ImageItem, inspection_downloads
from anomalens.workflows.predict import ImageResult
from anomalens.workflows.reports import (frame_scores_csv, image_scores_csv, score_cell, scores_csv,
                                         write_prediction_tables)

SCORE, NORMALIZED = 1.23456789012, 0.123456789  # finite: the cells each format gave before empty cells existed
CALIBRATION = Calibration(threshold=1.0, scale=1.0, target_fpr=0.01, validation_mean=0.0, validation_std=1.0,
                          validation_max=1.0, validation_count=10)


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_score_cell_empty_for_nan_or_none_else_the_format():
    assert score_cell(math.nan, ".6g") == score_cell(np.float32("nan"), ".4f") == score_cell(None, ".4f") == ""
    assert score_cell(SCORE, ".6g") == "1.23457" and score_cell(np.float32(NORMALIZED), ".4f") == "0.1235"
    assert score_cell(math.inf, ".6g") == "inf"  # a score, only too large to print: not "could not be computed"


def test_image_scores_csv():
    rows = [{"path": p, "defect_type": "good", "score": s, "normalized_score": n, "verdict": "NORMAL", "pixel_auroc": a}
            for p, s, n, a in [("a.png", math.nan, math.nan, None), ("b.png", SCORE, NORMALIZED, 0.98765)]]
    got = [(r["score"], r["normalized_score"], r["pixel_auroc"]) for r in _rows(image_scores_csv(rows))]
    assert got == [("", "", ""), ("1.23457", "0.1235", "0.9877")]


def test_predictions_csv(tmp_path: Path):
    results = [ImageResult(tmp_path / name, s, n, True, None, None, None, None, relative_path=name)
               for name, s, n in [("a.png", math.nan, math.nan), ("b.png", SCORE, NORMALIZED)]]
    write_prediction_tables(tmp_path, results, SimpleNamespace(calibration_=CALIBRATION, name="stub"), tmp_path)
    got = [(r["score"], r["normalized_score"]) for r in _rows((tmp_path / "predictions.csv").read_text(encoding="utf-8"))]
    assert got == [("", ""), ("1.23457", "0.1235")]


def test_frame_scores_csv():
    clip = SimpleNamespace(ref=SimpleNamespace(name="c", anomaly_type="t"), scores=np.array([math.nan, SCORE]), labels=None)
    got = [(r["score"], r["normalized_score"], r["anomalous"]) for r in _rows(frame_scores_csv([clip], CALIBRATION))]
    assert got == [("", "", "1"), ("1.23457", f"{float(CALIBRATION.normalize(SCORE)):.4f}", "1")]


def test_video_scores_csv():
    text = scores_csv(np.array([math.nan, SCORE]), np.array([math.nan, NORMALIZED], dtype=np.float32),
                      np.array([True, False]), 10.0, {"motion": np.array([math.nan, SCORE])})
    got = [(r["time"], r["score"], r["normalized_score"], r["motion_score"]) for r in _rows(text)]
    assert got == [("0.0000", "", "", ""), ("0.1000", "1.23457", "0.1235", "1.23457")]


def test_ray_predictions_csv(tmp_path: Path):
    rows = [{"path": p, "score": s, "normalized_score": n, "anomalous": True, "threshold": 1.0, "overlay": None,
             "regions": None} for p, s, n in [("a.png", math.nan, math.nan), ("b.png", SCORE, NORMALIZED)]]
    job = BatchJob("model", "sha", ["a.png", "b.png"], 64, False)
    report = RayPredictionReport(tmp_path, count=2, anomalous=2, blocks=1, blocks_scored=1, blocks_skipped=0, seconds=1.0)
    csv_path, _ = write_summary(tmp_path, job, rows, report, "stub")
    got = [(r["score"], r["normalized_score"], r["threshold"]) for r in _rows(csv_path.read_text(encoding="utf-8"))]
    assert got == [("", "", "1"), ("1.23456789", "0.123457", "1")]


def test_ui_results_csv(tmp_path: Path):
    items = [ImageItem("a.png", math.nan, math.nan, None), ImageItem("b.png", SCORE, NORMALIZED, None)]
    csv_path = inspection_downloads(ImageInspection(tmp_path, tmp_path, items, CALIBRATION), 0.5)[0]
    got = [(r["score"], r["normalized_score"]) for r in _rows(Path(csv_path).read_text(encoding="utf-8"))]
    assert got == [("", ""), ("1.23457", "0.123457")]


def test_the_writers_load_without_torch():
    """The Ray job's and the UI's CSVs share reports.py's helper: importing it must not load the models."""
    code = ('import sys; sys.modules["torch"] = None\n'
            'import anomalens.workflows.reports, anomalens.distributed.batch')
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
