"""The image workflow end to end: train -> run folder, evaluate -> report, predict -> overlays and tables.

Most tests use the tiny detector from conftest (milliseconds per fit); one test runs the real default model.
"""

from __future__ import annotations

import csv
import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from _tiny_detector import register_tiny_detector

from anomalens.data.mvtec import discover_category, load_test_set, split_train_validation
from anomalens.data.preprocessing import Preprocessing
from anomalens.errors import Cancelled, ConfigError, DataError
from anomalens.metrics import image_auroc
from anomalens.metrics.threshold import calibrate

from anomalens.progress import Reporter
from anomalens.workflows.evaluate import evaluate_image_model
from anomalens.workflows.predict import predict_images
from anomalens.workflows.train import train_image_model
from anomalens.workflows.runs import list_runs, load_detector

SIZE = 64


@pytest.fixture(scope="module")
def trained_run(synthetic_image_dataset, tmp_path_factory):
    """One tiny run shared by the read-only tests of this module."""
    root, category = synthetic_image_dataset
    patcher = pytest.MonkeyPatch()
    register_tiny_detector(patcher)
    results = tmp_path_factory.mktemp("results")
    run = train_image_model(root, category, "tiny", results, image_size=SIZE, seed=3, device="cpu")
    yield run
    patcher.undo()


def test_run_folder_has_everything_to_reproduce_the_run(trained_run, synthetic_image_dataset):
    root, category = synthetic_image_dataset
    run_dir = trained_run.run_dir
    assert run_dir.name.startswith(f"{category}_") and not trained_run.interrupted
    for name in ("model/config.json", "model/weights.safetensors", "run.json", "history.json", "train.log"):
        assert (run_dir / name).is_file(), name
    run = json.loads((run_dir / "run.json").read_text())
    assert run["kind"] == "image" and run["model"] == "tiny" and run["seed"] == 3
    assert run["category"] == category and run["image_size"] == [SIZE, SIZE]
    found = discover_category(root, category)
    _, expected_val = split_train_validation(found.train_paths, 0.1, seed=3)
    assert run["validation_files"] == [str(p.relative_to(found.root)) for p in expected_val]
    assert all(f.startswith("train/good/") for f in run["validation_files"])  # never the test split
    assert run["train_count"] + len(run["validation_files"]) == len(found.train_paths)
    assert "training tiny" in (run_dir / "train.log").read_text()


def test_threshold_comes_from_the_validation_images_only(trained_run, synthetic_image_dataset):
    root, category = synthetic_image_dataset
    run = json.loads((trained_run.run_dir / "run.json").read_text())
    detector = load_detector(trained_run.run_dir)
    validation = Preprocessing((SIZE, SIZE)).load_images([root / category / f for f in run["validation_files"]])
    expected = calibrate(detector.predict(validation).scores, detector.config.target_fpr)
    assert detector.calibration_.threshold == pytest.approx(expected.threshold)
    assert run["threshold"] == pytest.approx(expected.threshold)


def test_evaluation_writes_metrics_report_and_figures(trained_run):
    result = evaluate_image_model(trained_run.run_dir, device="cpu")
    assert result.output_dir == trained_run.run_dir / "evaluation"
    m = result.metrics
    for key in ("image_auroc", "pixel_auroc", "aupro", "f1_max", "f1_max_threshold", "threshold", "counts"):
        assert m[key] is not None, key
    assert 0.0 <= m["image_auroc"] <= 1.0 and 0.0 <= m["aupro"] <= 1.0 and 0.0 < m["f1_max"] <= 1.0
    assert m["counts"] == {"test_images": 24, "normal": 8, "anomalous": 16}
    assert set(m["per_defect_type"]) == {"good", "scratch", "spot", "missing_piece", "colour_shift"}
    assert m["per_defect_type"]["scratch"]["count"] == 4
    assert "image_auroc_vs_good" not in m["per_defect_type"]["good"]
    # the per-type AUROC compares that type with the normal images only
    detector = trained_run.detector
    test = load_test_set(discover_category(m["data_dir"], m["category"]), detector.preprocessing)
    scores = detector.predict(test.images).scores
    subset = np.array([t in ("good", "scratch") for t in test.defect_types])
    expected = image_auroc(test.labels[subset], scores[subset])
    assert m["per_defect_type"]["scratch"]["image_auroc_vs_good"] == pytest.approx(expected)
    assert m["pixel_metric_images"] == 24
    on_disk = json.loads((result.output_dir / "metrics.json").read_text())
    assert on_disk["image_auroc"] == pytest.approx(m["image_auroc"])
    report = result.report_path.read_text()
    assert "| scratch | 4 |" in report and "image AUROC" in report and "AUROC vs good" in report
    for name in ("roc_curve", "score_distribution", "samples", "hardest_cases"):
        path = result.figures[name]
        assert path.is_file() and path.parent == result.output_dir
        with Image.open(path) as img:
            assert img.width > 300 and img.height > 300


def test_evaluation_writes_every_image_score_and_the_hardest_cases(trained_run):
    result = evaluate_image_model(trained_run.run_dir, device="cpu")
    detector = trained_run.detector
    test = load_test_set(discover_category(result.metrics["data_dir"], result.metrics["category"]), detector.preprocessing)
    scores = detector.predict(test.images).scores
    rows = list(csv.DictReader((result.output_dir / "image_scores.csv").open()))
    assert list(rows[0]) == ["path", "defect_type", "score", "normalized_score", "verdict", "pixel_auroc"]
    assert len(rows) == 24
    by_path = {r["path"]: r for r in rows}
    scratch = by_path["test/scratch/001.png"]  # paths relative to the category: same-named files stay apart
    index = [p.as_posix().endswith("test/scratch/001.png") for p in test.paths].index(True)
    assert float(scratch["score"]) == pytest.approx(float(scores[index]), rel=1e-4)
    assert scratch["defect_type"] == "scratch"
    assert scratch["verdict"] == ("ANOMALOUS" if scores[index] > detector.calibration_.threshold else "normal")
    # a defect's own pixel AUROC, computed from its mask; none for normal images (no defect pixels)
    mask = test.masks[index].numpy()
    maps = detector.predict(test.images[index : index + 1]).maps
    from anomalens.metrics.segmentation import pixel_auroc
    assert float(scratch["pixel_auroc"]) == pytest.approx(pixel_auroc(mask[None], maps), abs=1e-3)
    assert by_path["test/good/000.png"]["pixel_auroc"] == ""
    # hardest cases: the highest-scoring normal images and the lowest-scoring defective ones
    hardest = result.metrics["hardest_cases"]
    normal_scores = sorted((float(r["score"]) for r in rows if r["defect_type"] == "good"), reverse=True)
    defect_scores = sorted(float(r["score"]) for r in rows if r["defect_type"] != "good")
    assert [r["score"] for r in hardest["highest_scoring_normal"]] == pytest.approx(normal_scores[:4], rel=1e-4)
    assert [r["score"] for r in hardest["lowest_scoring_defective"]] == pytest.approx(defect_scores[:4], rel=1e-4)
    report = result.report_path.read_text()
    assert "## Hardest cases" in report and "hardest_cases.png" in report and "image_scores.csv" in report
    assert hardest["highest_scoring_normal"][0]["path"] in report


def test_defect_type_without_masks_gets_a_warning_and_no_pixel_truth(trained_run, synthetic_image_dataset, tmp_path):
    import shutil

    root, category = synthetic_image_dataset
    copy = tmp_path / "data"
    shutil.copytree(root / category, copy / category)
    shutil.rmtree(copy / category / "ground_truth" / "spot")
    messages = []
    reporter = Reporter(callback=lambda stage, *rest: messages.append(stage), show_tqdm=False)
    m = evaluate_image_model(trained_run.run_dir, copy, category, device="cpu", reporter=reporter).metrics
    assert m["pixel_metric_images"] == 20 and m["pixel_auroc"] is not None
    assert any("spot" in line and "no masks" in line for line in messages)


def test_a_defect_image_whose_mask_marks_nothing_gets_a_warning(trained_run, synthetic_image_dataset, tmp_path):
    import shutil

    root, category = synthetic_image_dataset
    copy = tmp_path / "data"
    shutil.copytree(root / category, copy / category)
    blank = sorted((copy / category / "ground_truth" / "scratch").glob("*.png"))[0]
    Image.fromarray(np.zeros(Image.open(blank).size[::-1], np.uint8)).save(blank)
    messages = []
    reporter = Reporter(callback=lambda stage, *rest: messages.append(stage), show_tqdm=False)
    evaluate_image_model(trained_run.run_dir, copy, category, device="cpu", reporter=reporter)
    assert any("1 anomalous image(s) of scratch have a mask that marks no pixel" in line for line in messages)
    messages.clear()
    evaluate_image_model(trained_run.run_dir, root, category, device="cpu", reporter=reporter)
    assert not any("marks no pixel" in line for line in messages)


def test_predict_files_and_folders_writes_overlays_csv_and_json(trained_run, synthetic_image_dataset):
    root, category = synthetic_image_dataset
    test = root / category / "test"
    report = predict_images(trained_run.run_dir, [test / "scratch", test / "good" / "000.png"], device="cpu")
    assert len(report.results) == 5
    # each call gets its own timestamped folder under RUN_DIR/predictions/
    assert report.csv_path.parent.parent == trained_run.run_dir / "predictions" and report.csv_path.name == "predictions.csv"
    rows = list(csv.DictReader(report.csv_path.open()))
    assert [r["path"] for r in rows] == [str(r.path) for r in report.results]
    # same-named files of different folders keep their folder: good/000.png and scratch/000.png
    assert [r["relative_path"] for r in rows] == ["scratch/000.png", "scratch/001.png", "scratch/002.png",
                                                  "scratch/003.png", "good/000.png"]
    assert rows[-1]["overlay"] == str(report.csv_path.parent / "good" / "000_overlay.png")
    payload = json.loads(report.json_path.read_text())
    assert payload["count"] == 5 and payload["threshold"] == pytest.approx(trained_run.detector.calibration_.threshold)
    for r in report.results:
        assert r.overlay_path.is_file()
        # written at the input's own size (128 px), not the model's (64 px)
        assert Image.open(r.overlay_path).size == Image.open(r.path).size == (128, 128)
        assert r.image.shape == (SIZE, SIZE, 3) and r.image.dtype == np.uint8
        assert r.heatmap.shape == (SIZE, SIZE) and 0.0 <= r.heatmap.min() <= r.heatmap.max() <= 1.0
        assert r.anomalous == (r.score > payload["threshold"]) == (r.normalized_score > 0.5)
    assert not any(p.name.startswith(".") for p in report.csv_path.parent.iterdir())


def test_default_prediction_folders_are_claimed_and_a_failed_call_leaves_none(trained_run, synthetic_image_dataset,
                                                                              tmp_path, monkeypatch):
    """Two calls in one second each get a folder (taken by an exclusive mkdir, not an exists check that two
    processes can pass together); a call that fails once its folder is taken removes it again."""
    import anomalens.workflows.runs as runs
    from datetime import datetime

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 2, 12, 0, 0)

    monkeypatch.setattr(runs, "datetime", Frozen)
    root, category = synthetic_image_dataset
    good = root / category / "test" / "good" / "000.png"
    folders = trained_run.run_dir / "predictions"
    before = set(folders.iterdir()) if folders.exists() else set()
    first = predict_images(trained_run.run_dir, [good], device="cpu").csv_path.parent
    second = predict_images(trained_run.run_dir, [good], device="cpu").csv_path.parent
    assert (first.name, second.name) == ("20260102_120000", "20260102_120000_2")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # listed as an image, fails when decoded
    with pytest.raises(DataError):
        predict_images(trained_run.run_dir, [broken], device="cpu")
    assert set(folders.iterdir()) - before == {first, second}  # no empty 20260102_120000_3
    # a run that never predicted before: the failed call takes predictions/ with it too
    fresh_run = tmp_path / "run"
    shutil.copytree(trained_run.run_dir, fresh_run, ignore=shutil.ignore_patterns("predictions", "analysis"))
    with pytest.raises(DataError):
        predict_images(fresh_run, [broken], device="cpu")
    assert not (fresh_run / "predictions").exists()


def test_predict_can_drop_the_arrays_batch_by_batch(trained_run, synthetic_image_dataset, tmp_path):
    """The command line keeps only what it shows: each result's arrays (0.5 MB an image at 256 px) once stayed to
    the end of the call, so memory grew with the number of images."""
    root, category = synthetic_image_dataset
    folder = root / category / "test" / "scratch"
    kept = predict_images(trained_run.run_dir, [folder], tmp_path / "kept", batch_size=2, save_masks=True)
    dropped = predict_images(trained_run.run_dir, [folder], tmp_path / "dropped", batch_size=2, save_masks=True,
                             keep_arrays=False)
    assert [r.score for r in dropped.results] == [r.score for r in kept.results]
    assert [r.regions for r in dropped.results] == [r.regions for r in kept.results]
    assert all(r.image is None and r.heatmap is None and r.mask is None for r in dropped.results)
    assert all(r.overlay_path.is_file() and r.mask_path.is_file() for r in dropped.results)
    assert (tmp_path / "dropped" / "predictions.csv").read_text().replace("dropped", "kept") == \
        (tmp_path / "kept" / "predictions.csv").read_text()


def test_predict_scores_match_the_detector_and_arrays_work_without_files(trained_run, synthetic_image_dataset):
    root, category = synthetic_image_dataset
    path = root / category / "test" / "spot" / "001.png"
    array = np.asarray(Image.open(path).convert("RGB"))
    report = predict_images(trained_run.detector, [array])
    assert report.csv_path is None and report.results[0].overlay_path is None
    expected = trained_run.detector.predict(Preprocessing((SIZE, SIZE)).load_image(path)[None]).scores[0]
    assert report.results[0].score == pytest.approx(float(expected), rel=1e-5)


def test_predict_keeps_other_files_in_the_output_folder(trained_run, synthetic_image_dataset, tmp_path):
    root, category = synthetic_image_dataset
    keep = tmp_path / "mine.txt"
    keep.write_text("do not delete")
    report = predict_images(trained_run.run_dir, [root / category / "test" / "good" / "001.png"], tmp_path)
    assert keep.read_text() == "do not delete" and report.csv_path == tmp_path / "predictions.csv"


def test_inputs_of_one_stem_keep_their_own_overlays_and_masks(trained_run, synthetic_image_dataset, tmp_path):
    """a.png and a.jpg (a camera writing both) once both became a_overlay.png: one overlay lost, both rows on it."""
    root, category = synthetic_image_dataset
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.open(root / category / "test" / "good" / "000.png").save(inputs / "a.png")
    Image.open(root / category / "test" / "scratch" / "000.png").convert("RGB").save(inputs / "a.jpg", quality=95)
    report = predict_images(trained_run.run_dir, [inputs / "a.png", inputs / "a.jpg"], tmp_path / "out", save_masks=True)
    overlays = [r.overlay_path for r in report.results]
    assert [p.name for p in overlays] == ["a_overlay.png", "a_jpg_overlay.png"]
    # each overlay is its own image's: the scratch shows in the second, not the first
    assert not np.array_equal(np.asarray(Image.open(overlays[0])), np.asarray(Image.open(overlays[1])))
    assert sorted(p.name for p in (tmp_path / "out").glob("*_mask.png")) == ["a_jpg_mask.png", "a_mask.png"]
    # replaced by another call: the earlier call's overlays and masks go, the renamed ones too
    predict_images(trained_run.run_dir, [root / category / "test" / "good" / "001.png"], tmp_path / "out",
                   overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["001_overlay.png"]


def test_predict_never_mixes_two_calls_in_one_folder(trained_run, synthetic_image_dataset, tmp_path):
    root, category = synthetic_image_dataset
    test = root / category / "test"
    first = predict_images(trained_run.run_dir, [test / "good" / "000.png"], device="cpu")
    second = predict_images(trained_run.run_dir, [test / "good" / "001.png"], device="cpu")
    assert first.csv_path.parent != second.csv_path.parent  # the default: a new folder per call
    assert first.csv_path.is_file() and first.results[0].overlay_path.is_file()

    out = tmp_path / "out"
    predict_images(trained_run.run_dir, [test / "scratch"], out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(ConfigError, match="already holds predictions.*--overwrite"):
        predict_images(trained_run.run_dir, [test / "good" / "001.png"], out)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing touched
    (out / "notes.txt").write_text("mine")
    replaced = predict_images(trained_run.run_dir, [test / "good" / "001.png"], out, overwrite=True)
    # the earlier call's overlays are gone, the user's own file stays
    assert sorted(p.name for p in out.rglob("*.png")) == ["001_overlay.png"]
    assert (out / "notes.txt").read_text() == "mine"
    assert [r["relative_path"] for r in csv.DictReader(replaced.csv_path.open())] == ["001.png"]


def test_predict_stops_on_a_bad_file_without_writing(trained_run, synthetic_image_dataset, tmp_path):
    root, category = synthetic_image_dataset
    bad = tmp_path / "inputs" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG not really")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="broken.png"):
        predict_images(trained_run.run_dir, [root / category / "test" / "good" / "001.png", bad], out)
    assert not out.exists() or list(out.iterdir()) == []
    with pytest.raises(DataError, match="missing.png.*not found"):
        predict_images(trained_run.run_dir, [tmp_path / "missing.png"], out)


def test_same_seed_same_model_and_name_collisions_get_a_suffix(tiny_model, synthetic_image_dataset, tmp_path):
    root, category = synthetic_image_dataset
    a = train_image_model(root, category, tiny_model, tmp_path, image_size=SIZE, seed=1, run_name="fixed")
    b = train_image_model(root, category, tiny_model, tmp_path, image_size=SIZE, seed=1, run_name="fixed")
    assert a.run_dir.name == "fixed" and b.run_dir.name == "fixed_2"
    assert a.detector.calibration_.threshold == b.detector.calibration_.threshold
    assert (a.run_dir / "model" / "weights.safetensors").read_bytes() == (b.run_dir / "model" / "weights.safetensors").read_bytes()
    assert [r.run_dir.name for r in list_runs(tmp_path)] in (["fixed_2", "fixed"], ["fixed", "fixed_2"])


def test_cancel_keeps_the_best_epoch_of_models_that_can(tiny_model, synthetic_image_dataset, tmp_path):
    root, category = synthetic_image_dataset
    stop = threading.Event()

    def on_progress(stage, done, total, info):
        if stage.startswith("epoch 2"):
            stop.set()  # the user presses Cancel after the second epoch

    reporter = Reporter(callback=on_progress, cancel_event=stop, show_tqdm=False)
    result = train_image_model(root, category, tiny_model, tmp_path, image_size=SIZE, reporter=reporter, epochs=10)
    assert result.interrupted and len(result.detector.history_) == 2
    assert result.detector.calibration_ is not None  # the threshold was still set, on validation images
    run = json.loads((result.run_dir / "run.json").read_text())
    assert run["interrupted"] is True and len(json.loads((result.run_dir / "history.json").read_text())) == 2
    assert load_detector(result.run_dir).interrupted_


def test_cancel_with_nothing_to_keep_leaves_no_folder(tiny_model, synthetic_image_dataset, tmp_path):
    root, category = synthetic_image_dataset
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        train_image_model(root, category, tiny_model, tmp_path / "results", image_size=SIZE,
                          reporter=Reporter(cancel_event=stop, show_tqdm=False))
    assert not (tmp_path / "results").exists() or list((tmp_path / "results").iterdir()) == []


def test_list_runs_is_newest_first_and_skips_broken_folders(trained_run, tmp_path):
    import shutil

    for name, created in (("old", "2026-01-01T10:00:00"), ("new", "2026-06-01T10:00:00")):
        shutil.copytree(trained_run.run_dir, tmp_path / name)
        run = json.loads((tmp_path / name / "run.json").read_text())
        run["created"] = created
        (tmp_path / name / "run.json").write_text(json.dumps(run))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    (tmp_path / "no_model").mkdir()
    (tmp_path / "no_model" / "run.json").write_text(json.dumps({"created": "2026-07-01T00:00:00", "category": "x", "model": "tiny"}))
    runs = list_runs(tmp_path)
    assert [r.run_dir.name for r in runs] == ["new", "old"]
    assert runs[0].metrics is None or "image_auroc" in runs[0].metrics
    assert list_runs(tmp_path, kind="video") == [] and list_runs(tmp_path / "absent") == []


def test_a_video_model_is_refused_for_images(synthetic_image_dataset, tmp_path):
    root, category = synthetic_image_dataset
    with pytest.raises(ConfigError, match="video model"):
        train_image_model(root, category, "stfeatures", tmp_path, image_size=SIZE)


def test_default_model_end_to_end_on_synthetic_data(synthetic_image_dataset, tmp_path):
    """The real default model (PatchCore) finds the synthetic defects; files of every step exist."""
    pytest.importorskip("anomalens.models.image.patchcore")
    root, category = synthetic_image_dataset
    run = train_image_model(root, category, results_dir=tmp_path, image_size=96, device="cpu")
    result = evaluate_image_model(run.run_dir, device="cpu")
    m = result.metrics
    # measured 0.867 / 0.954 / 0.844 (seed 0); the bounds leave room for model changes, not for regressions
    assert m["image_auroc"] > 0.8, m["image_auroc"]
    assert m["pixel_auroc"] > 0.85 and m["aupro"] > 0.6, (m["pixel_auroc"], m["aupro"])
    assert m["per_defect_type"]["spot"]["mean_score"] > m["per_defect_type"]["good"]["mean_score"]
    report = predict_images(run.run_dir, [root / category / "test" / "good", root / category / "test" / "spot"])
    assert len(report.results) == 12 and all(r.overlay_path.is_file() for r in report.results)
    assert report.csv_path.is_file()


def test_cancel_before_the_first_epoch_leaves_no_folder(tiny_model, synthetic_image_dataset, tmp_path):
    root, category = synthetic_image_dataset
    stop = threading.Event()

    def on_progress(stage, done, total, info):
        if stage == "train":
            stop.set()  # Cancel as training starts: the model stops with no finished epoch

    with pytest.raises(Cancelled, match="nothing saved"):
        train_image_model(root, category, tiny_model, tmp_path / "results", image_size=SIZE, epochs=5,
                          reporter=Reporter(callback=on_progress, cancel_event=stop, show_tqdm=False))
    assert not (tmp_path / "results").exists()


def test_evaluation_shows_how_far_scoring_is(tiny_model, synthetic_image_dataset, tmp_path):
    root, category = synthetic_image_dataset
    run = train_image_model(root, category, tiny_model, tmp_path, image_size=SIZE).run_dir
    steps: list[tuple[str, int, int | None]] = []
    evaluate_image_model(run, reporter=Reporter(callback=lambda stage, done, total, info: steps.append((stage, done, total)),
                                                show_tqdm=False))
    scoring = [(done, total) for stage, done, total in steps if stage == "score images"]
    assert scoring == [(i, 3) for i in range(4)]  # 24 test images in batches of 8: a total, not a bare count
