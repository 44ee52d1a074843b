"""A NaN score (a frame or image the model could not score; the sinks write it as JSON null) shows as "—", with
"— = not scored" in the table's label, wherever the UI shows scores: the Live tab's events, the Inspect tab's
table and captions, the tables that round through ``rounded``; its verdict is the library's (ANOMALOUS, at every
threshold) and results.csv leaves its cells empty, as predictions.csv does. No model, no browser: the tabs' own
row builders."""

from __future__ import annotations

import csv
import math
import threading
from pathlib import Path
from types import SimpleNamespace

from anomalens.live.state import WatchState
from anomalens.metrics.classification import ANOMALOUS, NORMAL
from anomalens.metrics.threshold import Calibration
from anomalens.ui.common import NOT_SCORED, rounded, score_text
from anomalens.ui.tabs import live
from anomalens.ui.tabs.inspect import (ImageInspection, ImageItem, inspection_downloads, inspection_gallery,
                                       inspection_rows, inspection_summary)
from anomalens.workflows.predict import ImageResult
from anomalens.workflows.reports import write_prediction_tables

# raw 7.5 -> normalised 0.62, as the items below were scored
CALIBRATION = Calibration(threshold=7.0, scale=1.0, target_fpr=0.01, validation_mean=5.0, validation_std=1.0,
                          validation_max=6.9, validation_count=300)


def test_rounded_and_score_text_show_nan_as_not_scored():
    assert rounded(math.nan, 3) == NOT_SCORED and rounded(0.12345, 3) == 0.123
    assert score_text(math.nan) == NOT_SCORED and score_text(0.734) == "0.73"
    assert rounded(None) is None and rounded("lost") == "lost"  # not a number: as it is


def test_live_events_table_shows_a_nan_peak_as_not_scored(tmp_path):
    state = WatchState()
    anomaly = {"type": "anomaly", "id": 1, "start_frame": 3, "end_frame": 9, "start_time": 0.12, "duration": 0.28,
               "main_cue": "", "started_at": "2026-01-01T00:00:00"}
    state.events.extend([{**anomaly, "peak_normalized_score": math.nan},
                         {**anomaly, "id": 2, "peak_normalized_score": 0.81234}])
    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    watches = live.LiveWatches()
    watches.watches["page"] = live._Watch(SimpleNamespace(state=state), ended, tmp_path)
    rows = watches.view("page")["events"]  # newest first
    peak = live.EVENT_HEADERS.index("peak (0.5 = threshold)")
    assert [row[peak] for row in rows] == [0.812, NOT_SCORED]


def test_inspection_table_and_captions_show_a_nan_score_as_not_scored(tmp_path: Path):
    items = [ImageItem("a.png", math.nan, math.nan, tmp_path / "a.png"), ImageItem("b.png", 7.5, 0.625, tmp_path / "b.png")]
    inspection = ImageInspection(tmp_path, tmp_path, items, CALIBRATION)
    rows = inspection_rows(inspection)
    assert rows[0][1:3] == [NOT_SCORED, NOT_SCORED] and rows[1][1:3] == [7.5, 0.625]
    captions = [caption for _, caption in inspection_gallery(inspection)]
    assert captions[0].endswith(f" {NOT_SCORED}") and captions[1].endswith(" 0.62")


def _inspection(tmp_path: Path) -> ImageInspection:
    """Three images: one the model could not score, one just above its threshold, one below."""
    items = [ImageItem(name, score, float(CALIBRATION.normalize(score)), tmp_path / name)
             for name, score in [("lost.png", math.nan), ("edge.png", 7.0 + 1e-9), ("fine.png", 6.0)]]
    return ImageInspection(tmp_path, tmp_path, items, CALIBRATION)


def test_inspection_verdicts_are_the_librarys_a_nan_score_anomalous_at_every_threshold(tmp_path: Path):
    inspection = _inspection(tmp_path)
    # at 0.5 the model's own verdicts: edge.png normalises to exactly 0.5 in float32, yet its raw score is above
    assert inspection.verdicts(0.5) == [ANOMALOUS, ANOMALOUS, NORMAL]
    assert [bool(flag) for flag in CALIBRATION.is_anomalous([i.score for i in inspection.items])] == [True, True, False]
    # the slider moves the finite scores' verdicts, never the unscored image's
    assert inspection.verdicts(0.99) == [ANOMALOUS, NORMAL, NORMAL]
    assert inspection.verdicts(0.01) == [ANOMALOUS, ANOMALOUS, ANOMALOUS]
    assert [row[3] for row in inspection_rows(inspection, 0.99)] == [ANOMALOUS, NORMAL, NORMAL]
    assert [caption.split(" · ")[1] for _, caption in inspection_gallery(inspection, 0.99)] == \
        [f"{ANOMALOUS} {NOT_SCORED}", f"{NORMAL} 0.50", f"{NORMAL} 0.27"]
    assert inspection_summary(inspection, 0.99).startswith("**1 of 3 images flagged** at threshold 0.99 (raw score 11.6)")


def test_results_csv_leaves_a_nan_score_empty_as_predictions_csv_does(tmp_path: Path):
    inspection = _inspection(tmp_path)
    rows = list(csv.DictReader(open(inspection_downloads(inspection, 0.99)[0], encoding="utf-8")))
    assert [(r["score"], r["normalized_score"], r["anomalous"]) for r in rows] == \
        [("", "", "1"), ("7", "0.500000", "0"), ("6", "0.268941", "0")]
    # the CLI's predictions.csv writes the same empty cells (JSON writes null)
    results = [ImageResult(tmp_path / item.name, item.score, item.normalized_score,
                           bool(CALIBRATION.is_anomalous(item.score)), None, None, None, None, relative_path=item.name)
               for item in inspection.items]
    detector = SimpleNamespace(calibration_=CALIBRATION, name="stub")
    write_prediction_tables(tmp_path, results, detector, tmp_path)
    predicted = list(csv.DictReader(open(tmp_path / "predictions.csv", encoding="utf-8")))
    assert [(r["score"], r["normalized_score"], r["anomalous"]) for r in predicted] == \
        [("", "", "1"), ("7", "0.5000", "1"), ("6", "0.2689", "0")]
