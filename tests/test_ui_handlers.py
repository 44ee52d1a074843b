"""The UI's handlers through the library API, on small synthetic data and tiny models (no browser)."""

from __future__ import annotations

import csv
import re
import json
import threading
import zipfile
from pathlib import Path

import pytest

from anomalens.errors import AnomalensError, DataError
from anomalens.ui import handlers as h
from anomalens.ui.jobs import JobBoard

from _ui_models import ui_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return ui_workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def image_data(workspace) -> Path:
    return workspace.data_root


@pytest.fixture(scope="module")
def trained(workspace) -> tuple[h.UISettings, Path]:
    return workspace.settings, workspace.image_run


def test_dataset_folder_is_checked_and_confined(trained, image_data):
    settings, _ = trained
    choice = h.choose_dataset(settings, "images/widget", None, "tab", "image")  # relative to the first root
    assert (choice.category, choice.kind) == ("widget", "image")
    assert "16 normal training images" in choice.description
    with pytest.raises(DataError, match="outside the allowed data folders"):
        h.choose_dataset(settings, "../../etc", None, "tab", "image")
    with pytest.raises(DataError, match="expected an image dataset"):
        h.choose_dataset(settings, str(image_data / "images" / "widget" / "test"), None, "tab", "image")
    with pytest.raises(DataError, match="this is an image dataset: set the data type to image"):
        h.choose_dataset(settings, str(image_data / "images"), None, "tab", "video")


def test_an_uploaded_zip_dataset_is_unpacked_per_tab(trained, image_data, tmp_path):
    settings, _ = trained
    archive = tmp_path / "widget.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        source = image_data / "images" / "widget"
        for path in sorted(source.glob("train/good/*.png")) + sorted(source.glob("test/*/*.png")):
            bundle.write(path, arcname=f"mywidget/{path.relative_to(source)}")
    choice = h.choose_dataset(settings, None, str(archive), "tab-zip", "image")
    assert choice.category == "mywidget"
    assert choice.data_dir.is_relative_to(settings.sessions_dir / "tab-zip")
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as bundle:
        bundle.writestr("readme.txt", "no images")
    with pytest.raises(DataError, match="expected an image dataset"):
        h.choose_dataset(settings, None, str(empty), "tab-zip", "image")


def test_the_new_model_is_listed_with_its_details(trained):
    settings, run_dir = trained
    choices = dict((value, label) for label, value in h.model_choices(settings, "image"))
    assert str(run_dir) in choices and choices[str(run_dir)].startswith("widget · autoencoder · ")
    assert all(" · autoencoder · " in label for label in choices.values())  # the video model is not offered for images
    assert [run_dir.name, "image", "widget", "autoencoder"] in [row[:4] for row in h.model_rows(settings)]
    assert "held-out normal samples" in h.threshold_text(run_dir)


def test_inspection_scores_overlays_and_relabels_without_rescoring(trained, image_data):
    settings, run_dir = trained
    test = image_data / "images" / "widget" / "test"
    files = [test / "good" / "000.png", test / "scratch" / "000.png", test / "spot" / "001.png"]
    view = h.inspect_images(settings, str(run_dir), files, "tab-1")
    # files from folders keep the path that tells them apart; uploads (random folders) keep a numbered name
    assert [item.name for item in view.items] == ["good/000.png", "scratch/000.png", "spot/001.png"]
    from anomalens.ui.tabs.inspect import display_name
    assert display_name("3f2a9c0d1e2b4a5c6d7e8f9a0b1c2d3e/000.png") == "000.png"
    assert all(item.overlay_path.is_file() and item.reconstruction_path.is_file() for item in view.items)
    assert view.output_dir.is_relative_to(settings.sessions_dir / "tab-1")

    # relabelling is a function of the inspection alone (no model, no files read): the rows follow the threshold
    scores = sorted(item.normalized_score for item in view.items)
    low = h.inspection_rows(view, threshold=scores[0] - 1e-6)
    high = h.inspection_rows(view, threshold=0.999999)
    assert [row[3] for row in low] == ["ANOMALOUS"] * 3
    assert [row[3] for row in high] == ["normal"] * 3
    middle = (scores[0] + scores[1]) / 2
    assert sum(row[3] == "ANOMALOUS" for row in h.inspection_rows(view, middle)) == 2
    assert f"2 of 3 images flagged** at threshold {middle:.2f}" in h.inspection_summary(view, middle)

    csv_path, zip_path = h.inspection_downloads(view, middle)
    rows = list(csv.DictReader(open(csv_path, encoding="utf-8")))
    assert [int(r["anomalous"]) for r in rows] == [int(i.normalized_score > middle) for i in view.items]
    # where: each image's regions in its own pixels, in the table (count and largest box) and the CSV (every box)
    assert [json.loads(r["regions"]) for r in rows] == [[g.to_dict() for g in i.regions] for i in view.items]
    assert [row[4] for row in h.inspection_rows(view, middle)] == ["none"] * 3  # this tiny model finds none
    from dataclasses import replace

    from anomalens.metrics.regions import Region

    boxes = [Region(x=173, y=11, width=80, height=71, area=4689, peak_score=21.7, peak_x=217, peak_y=53),
             Region(x=80, y=79, width=28, height=41, area=700, peak_score=19.0, peak_x=100, peak_y=83)]
    marked = replace(view, items=[replace(view.items[0], regions=boxes), *view.items[1:]])
    assert h.inspection_rows(marked, middle)[0][4] == "2; largest 80x71 px at x 173, y 11"
    rows = list(csv.DictReader(open(h.inspection_downloads(marked, middle)[0], encoding="utf-8")))
    assert json.loads(rows[0]["regions"]) == [b.to_dict() for b in boxes] and json.loads(rows[1]["regions"]) == []
    with zipfile.ZipFile(zip_path) as bundle:
        assert len(bundle.namelist()) == 6  # three overlays and three reconstructions
    gallery = h.inspection_gallery(view, middle)
    # captions: the file, then the verdict at this threshold
    assert [caption.split(" · ")[0] for _, caption in gallery] == [item.name for item in view.items]
    assert [caption.split(" · ")[1].split()[0] for _, caption in gallery] == [row[3] for row in h.inspection_rows(view, middle)]
    assert [name for _, name in h.reconstruction_gallery(view)] == ["good/000.png", "scratch/000.png", "spot/001.png"]
    # the normalised threshold maps back to the raw scale of the model
    calibration = json.loads((run_dir / "model" / "config.json").read_text())["calibration"]
    assert view.raw_threshold(0.5) == pytest.approx(calibration["threshold"])


def test_two_tabs_never_share_an_output_folder(trained, image_data):
    settings, run_dir = trained
    image = image_data / "images" / "widget" / "test" / "good" / "001.png"
    results: dict[str, h.ImageInspection] = {}

    def work(key: str) -> None:
        results[key] = h.inspect_images(settings, str(run_dir), [image], key)

    threads = [threading.Thread(target=work, args=(key,)) for key in ("tab-a", "tab-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    a, b = results["tab-a"], results["tab-b"]
    assert a.output_dir != b.output_dir
    assert a.items[0].overlay_path.is_file() and b.items[0].overlay_path.is_file()
    assert a.items[0].score == pytest.approx(b.items[0].score)


def test_inspection_input_errors_are_one_line(trained, tmp_path):
    settings, run_dir = trained
    with pytest.raises(DataError, match="choose a model"):
        h.inspect_images(settings, None, [tmp_path / "x.png"], "t")
    with pytest.raises(DataError, match="upload one or more images"):
        h.inspect_images(settings, str(run_dir), [], "t")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        h.inspect_images(settings, str(run_dir), [broken], "t")
    with pytest.raises(DataError, match="outside"):
        h.inspect_images(settings, str(tmp_path), [broken], "t")  # only runs under the results folder


def test_evaluation_gives_tables_and_figures(trained):
    settings, run_dir = trained
    view = h.evaluate_model(settings, str(run_dir))
    metrics = dict((name, value) for name, value in view.metric_rows)
    assert 0.0 <= metrics["image auroc"] <= 1.0 and "pixel auroc" in metrics
    assert view.type_headers[0] == "type" and {row[0] for row in view.type_rows} == {"good", "scratch", "spot", "missing_piece", "colour_shift"}
    assert set(view.figures) >= {"roc_curve", "score_distribution", "samples"}
    assert "image AUROC" in h.read_report(view)
    label = next(label for label, value in h.model_choices(settings, "image") if value == str(run_dir))
    assert "image auroc" in label  # the list now shows test metrics


def test_training_cancel_stops_cleanly(trained, image_data):
    settings, _ = trained
    before = {p.name for p in settings.results_dir.iterdir()}
    board = JobBoard()
    dataset = h.choose_dataset(settings, str(image_data / "images" / "widget"), None, "t", "image")
    with board.job("t") as job:
        board.cancel("t")  # pressed before the first step: nothing can be kept
        outcome = h.train_model(settings, dataset, "autoencoder", image_size=64, advanced={"epochs": 2}, reporter=job.reporter())
    assert outcome.interrupted and outcome.run_dir is None and "cancelled" in outcome.message
    assert {p.name for p in settings.results_dir.iterdir()} == before  # nothing half-written


def test_model_settings_come_from_the_model_and_are_validated(trained, image_data):
    settings, _ = trained
    assert "autoencoder" in h.model_types("image") and "convlstm" in h.model_types("video")
    defaults = h.default_settings("autoencoder")
    assert defaults["epochs"] > 0 and "image_size" not in defaults
    assert h.parse_advanced('{"epochs": 3}') == {"epochs": 3} and h.parse_advanced("  ") == {}
    with pytest.raises(DataError, match="not valid JSON"):
        h.parse_advanced("{epochs: 3")
    dataset = h.choose_dataset(settings, str(image_data / "images" / "widget"), None, "t", "image")
    with pytest.raises(Exception, match="no_such_setting"):
        h.train_model(settings, dataset, "autoencoder", image_size=64, advanced={"no_such_setting": 1})


@pytest.mark.parametrize("region", ["image", "part"])
def test_training_takes_the_score_region_chosen_in_the_tab(trained, image_data, region):
    """The tab's score-region choice reaches the model's config field (auto is its default; image or part force it)."""
    from anomalens.workflows.runs import read_model_config

    settings, _ = trained
    assert h.score_regions("patchcore") == ("auto", "image", "part") and h.score_regions("autoencoder") == ()
    assert "score_region" not in h.default_settings("patchcore")  # its own widget, not the settings box
    dataset = h.choose_dataset(settings, str(image_data / "images" / "widget"), None, "t", "image")
    outcome = h.train_model(settings, dataset, "patchcore", image_size=64, score_region=region)
    assert read_model_config(outcome.run_dir)["config"]["score_region"] == region
    with pytest.raises(Exception, match="score_region"):
        h.train_model(settings, dataset, "patchcore", image_size=64, score_region="foreground")


def test_the_video_tab_says_where_an_event_is_as_the_inspect_tab_does():
    from anomalens.metrics.events import Event
    from anomalens.ui.tabs.video import where_text

    timing = dict(start_frame=3, end_frame=9, start_time=0.3, end_time=1.0, duration=0.7, frames=7, peak_frame=5,
                  peak_time=0.5, peak_score=7.2)
    region = {"x": 72, "y": 48, "width": 24, "height": 32, "area": 576, "peak_score": 7.2, "peak_x": 83, "peak_y": 59}
    assert where_text(Event(**timing, peak_regions=[region], image_height=96, image_width=128)) == \
        "1; largest 24x32 px at x 72, y 48"
    assert where_text(Event(**timing, peak_regions=[], image_height=96, image_width=128)) == "none"
    assert where_text(Event(**timing)) == ""  # a model whose map cannot place events
    # the Live tab words a watch's anomaly message (a dict) the same way
    from anomalens.ui.common import event_where_text

    message = {"type": "anomaly", **timing, "peak_regions": [region, {**region, "width": 8, "height": 8, "area": 64}],
               "image_height": 96, "image_width": 128}
    assert event_where_text(message) == "2; largest 24x32 px at x 72, y 48"
    assert event_where_text({"type": "anomaly", **timing}) == ""


def test_video_analysis_gives_a_playable_video_timeline_and_intervals(workspace):
    from anomalens.data.video_io import probe_video

    settings = workspace.settings
    video = sorted((workspace.video_category / "test").glob("*/*.mp4"))[0]
    view = h.analyze_video_file(settings, str(workspace.video_run), str(video), "tab-v")
    assert view.output_dir.is_relative_to(settings.sessions_dir / "tab-v")
    probe = probe_video(view.video_path)
    assert probe["codec"] == "h264" and probe["pix_fmt"] == "yuv420p" and probe["frames"] == 24
    assert view.timeline_path.is_file() and {Path(p).name for p in view.downloads} == {"scores.csv", "events.json", "side_by_side.mp4"}
    rows = list(csv.DictReader(open(Path(view.output_dir) / "scores.csv", encoding="utf-8")))
    assert len(rows) == 24
    flagged = sum(int(r["anomalous"]) for r in rows)
    assert f"{flagged} of 24 frames above the threshold" in view.summary
    for row in view.event_rows:  # each interval is a run of flagged frames, placed in the video's 96x64 pixels
        assert all(int(rows[i]["anomalous"]) for i in range(row[3], row[4] + 1))
        where = re.fullmatch(r"\d+; largest (\d+)x(\d+) px at x (\d+), y (\d+)", row[9])
        assert where, row[9]
        width, height, x, y = map(int, where.groups())
        assert x + width <= 96 and y + height <= 64
    with pytest.raises(AnomalensError, match="image model"):  # an image model cannot analyse video
        h.analyze_video_file(settings, str(workspace.image_run), str(video), "tab-v")
    text = workspace.data_root / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match="not a video type"):
        h.analyze_video_file(settings, str(workspace.video_run), str(text), "tab-v")


def test_a_default_video_model_gets_the_video_models_frame_size(workspace):
    """The Train tab passes only what the user set: a default stfeatures model is 240x360, not the image size."""
    settings = workspace.settings
    dataset = h.choose_dataset(settings, "video/conveyor", None, "tab-size", "video")
    outcome = h.train_model(settings, dataset, "stfeatures", advanced={"appearance_memory": 64, "motion_memory": 16,
                                                                       "flow_preset": "ultrafast"})
    config = json.loads((outcome.run_dir / "model" / "config.json").read_text())
    from anomalens.models.video.stfeatures import SpatioTemporalConfig

    assert tuple(config["config"]["image_size"]) == SpatioTemporalConfig().image_size == (240, 360)
    assert "image_size" not in json.loads((outcome.run_dir / "run.json").read_text())["settings"]


def test_video_evaluation_gives_per_type_table_and_timelines(workspace):
    view = h.evaluate_model(workspace.settings, str(workspace.video_run))
    assert "frame auroc" in dict((n, v) for n, v in view.metric_rows)
    assert view.type_rows and len(view.timelines) == 2
    assert all(Path(image).is_file() for image, _ in view.timelines)


def test_examples_follow_the_chosen_model(workspace, tmp_path):
    from anomalens.ui.common import UISettings, example_samples, examples_for_run, stage_examples

    settings = workspace.settings
    images = examples_for_run(settings, workspace.image_run, "image")
    # the test files of the data the image model was trained on, normal ones first, every type represented
    assert images and all(p.is_relative_to(workspace.image_category / "test") for p in images)
    assert images[0].parent.name == "good" and len({p.parent.name for p in images}) >= 3
    videos = examples_for_run(settings, workspace.video_run, "video")
    assert videos and all(p.is_relative_to(workspace.video_category / "test") and p.suffix == ".mp4" for p in videos)
    assert example_samples(images)[-1] == [f"all {len(images)} examples"]
    # a click copies the example into this tab's own folder (the data roots are never served)
    staged = stage_examples(settings, workspace.image_run, "image", 1, "tab-1")
    assert len(staged) == 1 and staged[0].read_bytes() == images[1].read_bytes()
    assert staged[0].is_relative_to(settings.sessions_dir) and staged[0].name == f"{images[1].parent.name}_{images[1].name}"
    assert len(stage_examples(settings, workspace.image_run, "image", len(images), "tab-1")) == len(images)
    # no model, or a model whose data lies outside the allowed roots: no examples
    assert examples_for_run(settings, None, "image") == []
    elsewhere = UISettings(results_dir=settings.results_dir, data_roots=[tmp_path], device="cpu")
    assert examples_for_run(elsewhere, workspace.image_run, "image") == []


def test_train_tab_image_size_follows_the_model_kind(workspace):
    from anomalens.ui.tabs.train import image_size_hint, parse_size_field, settings_help

    from _ui_models import TINY_VIDEO_SETTINGS

    # the field shows what an empty field trains at: 240 x 360 frames for the default video model, the training
    # images' aspect for an image model
    assert image_size_hint("stfeatures") == "240 360"
    assert image_size_hint("patchcore") == "auto: the training images' aspect at about 256x256"
    assert parse_size_field("") is None and parse_size_field("240 360") == (240, 360) == parse_size_field("240x360")
    assert parse_size_field("128") == (128, 128)
    with pytest.raises(DataError, match="two \\(height width\\)"):
        parse_size_field("wide")
    # every setting in the box is explained (motion_scale, stages... were shown bare)
    assert "`motion_scale`: optical flow runs on frames scaled" in settings_help("stfeatures")
    # a non-square video size reaches the model
    video = h.choose_dataset(workspace.settings, "video/conveyor", None, "setup", "video")
    outcome = h.train_model(workspace.settings, video, "convlstm", image_size=parse_size_field("48 64"),
                            advanced=TINY_VIDEO_SETTINGS)
    run = json.loads((outcome.run_dir / "run.json").read_text())
    assert run["image_size"] == [48, 64]
    assert " in " in outcome.message and "Threshold" in outcome.message and "0.0 min" not in outcome.message


def test_settings_help_from_many_threads_at_once():
    """Gradio runs handlers on several threads; the help (read from the config classes' source) must come out the
    same from each, with no error (CPython 3.11's parser failed when two threads parsed at once)."""
    from concurrent.futures import ThreadPoolExecutor

    from anomalens.models.base import MODEL_REGISTRY
    from anomalens.ui.tabs.train import _settings_help, settings_help

    models = sorted(MODEL_REGISTRY)
    _settings_help.cache_clear()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(settings_help, models * 8))
    assert answers == [settings_help(m) for m in models] * 8
    assert all(text.startswith("Settings: `") for text in answers)
