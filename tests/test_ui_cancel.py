"""Cancel in the Inspect, Video and Evaluate tabs, closing a page while its job runs, and the uploaded datasets
kept for training: through the UI's handlers and its job board (no browser), on tiny synthetic models."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

from anomalens.errors import Cancelled, DataError
from anomalens.ui import handlers as h
from anomalens.ui.app import close_session
from anomalens.ui.jobs import JobBoard, cancel_text, hold_workspace, new_workspace, release_workspace, run_cancellable
from anomalens.ui.tabs.evaluate import kept_after_cancel
from anomalens.ui.tabs.train import UPLOADS_FOLDER, prune_uploads

from _ui_models import ui_workspace

CANCELLED = r"\*\*Cancelled\.\*\* {what} cancelled after \d+\.\d s; {kept}\."


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return ui_workspace(tmp_path_factory)


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its content."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class CancelAt:
    """A progress sink that presses the tab's Cancel when a progress line matching ``pattern`` arrives and keeps
    every line, so that a test can see how far the job went after the press."""

    def __init__(self, board: JobBoard, key: str, pattern: str) -> None:
        self.board, self.key, self.pattern = board, key, re.compile(pattern)
        self.lines: list[str] = []
        self.pressed_at: int | None = None

    def __call__(self, fraction: float | None, text: str) -> None:
        self.lines.append(text)
        if self.pressed_at is None and self.pattern.search(text):
            assert cancel_text(self.board, self.key, "job").startswith("**Stopping**")
            self.pressed_at = len(self.lines)

    @property
    def after_press(self) -> list[str]:
        assert self.pressed_at is not None, f"never pressed; lines: {self.lines}"
        return self.lines[self.pressed_at:]


# ---- 1: Cancel in the Inspect, Video and Evaluate tabs ------------------------------------------------------
def test_cancel_says_when_nothing_runs():
    board = JobBoard()
    assert cancel_text(board, "page:inspect", "inspection") == "No inspection is running in this tab."
    with board.job("page:inspect"):
        assert cancel_text(board, "page:inspect", "inspection") == "**Stopping** the inspection at its next step…"
        assert cancel_text(board, "page:video", "video analysis") == "No video analysis is running in this tab."


def test_inspection_cancel_stops_within_the_batch_and_keeps_nothing(workspace):
    settings = workspace.settings
    files = sorted((workspace.image_category / "train" / "good").glob("*.png"))
    assert len(files) == 16
    board = JobBoard()
    sink = CancelAt(board, "cancel-inspect:inspect", r"read images .* 3/16")
    outcome = run_cancellable(board, "cancel-inspect:inspect",
                              lambda reporter: h.inspect_images(settings, str(workspace.image_run), files, "cancel-inspect", reporter),
                              sink, "Inspection")
    assert outcome.cancelled and outcome.value is None
    assert re.fullmatch(CANCELLED.format(what="Inspection", kept="nothing was saved"), outcome.message), outcome.message
    assert sink.after_press == []  # the very next image stopped it: the other 13 were never read, nothing scored
    session = settings.sessions_dir / "cancel-inspect"
    assert not session.exists() or not any(session.rglob("*"))  # not even an empty output folder
    assert not board.running("cancel-inspect:inspect")
    # the tab works again at once, and a job that is not cancelled gives its value
    done = run_cancellable(board, "cancel-inspect:inspect",
                           lambda reporter: h.inspect_images(settings, str(workspace.image_run), files[:2], "cancel-inspect", reporter),
                           None, "Inspection")
    assert not done.cancelled and done.message == "" and len(done.value.items) == 2


def test_video_cancel_stops_within_a_frame_and_keeps_nothing(workspace):
    settings = workspace.settings
    video = sorted((workspace.video_category / "test").glob("*/*.mp4"))[0]
    board = JobBoard()
    sink = CancelAt(board, "cancel-video:video", r"render video 5/24")
    outcome = run_cancellable(board, "cancel-video:video",
                              lambda reporter: h.analyze_video_file(settings, str(workspace.video_run), str(video),
                                                                    "cancel-video", reporter),
                              sink, "Video analysis")
    assert outcome.cancelled
    assert re.fullmatch(CANCELLED.format(what="Video analysis", kept="nothing was saved"), outcome.message), outcome.message
    assert sink.after_press == []  # frame 6 of 24 was not drawn
    session = settings.sessions_dir / "cancel-video"
    assert not session.exists() or not any(session.rglob("*"))  # no half-written side-by-side video, no empty folder


def _copy_run(run: Path, results: Path) -> Path:
    """A copy of a trained run in a results folder of its own, without its evaluation."""
    copy = results / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("evaluation", "predictions", "analysis"))
    return copy


def test_evaluation_cancelled_while_writing_keeps_the_earlier_one_whole(workspace, tmp_path):
    """Cancelled while drawing the timelines, inside the library's staging folder: the earlier evaluation stays
    byte for byte, and no staging folder is left in the run."""
    settings = h.UISettings(results_dir=tmp_path / "results", data_roots=[workspace.data_root], device="cpu",
                            sessions_root=tmp_path / "sessions")
    run = _copy_run(workspace.video_run, settings.results_dir)
    board = JobBoard()
    never = run_cancellable(board, "eval-page:evaluate", lambda reporter: h.evaluate_model(settings, str(run), reporter),
                            CancelAt(board, "eval-page:evaluate", r"evaluate clips 1/2"), "Evaluation",
                            kept=lambda: kept_after_cancel(run))
    assert never.cancelled
    assert never.message.endswith("nothing was saved: the model is still not evaluated.")
    assert not (run / "evaluation").exists()

    h.evaluate_model(settings, str(run), key="eval-page")
    before, entries = _tree(run / "evaluation"), sorted(p.name for p in run.iterdir())
    sink = CancelAt(board, "eval-page:evaluate", r"draw timelines 1/2")
    outcome = run_cancellable(board, "eval-page:evaluate", lambda reporter: h.evaluate_model(settings, str(run), reporter),
                              sink, "Evaluation", kept=lambda: kept_after_cancel(run))
    assert outcome.cancelled and sink.after_press == []
    assert re.fullmatch(CANCELLED.format(what="Evaluation", kept="nothing was saved: the model's earlier evaluation "
                                                                 "stays as it was"), outcome.message), outcome.message
    assert _tree(run / "evaluation") == before
    assert sorted(p.name for p in run.iterdir()) == entries  # no staging folder left beside it


def test_image_evaluation_cancel_stops_after_the_batch(workspace, tmp_path):
    settings = h.UISettings(results_dir=tmp_path / "results", data_roots=[workspace.data_root], device="cpu",
                            sessions_root=tmp_path / "sessions")
    run = _copy_run(workspace.image_run, settings.results_dir)
    entries = sorted(p.name for p in run.iterdir())
    board = JobBoard()
    sink = CancelAt(board, "eval-image:evaluate", r"score images 1")
    outcome = run_cancellable(board, "eval-image:evaluate", lambda reporter: h.evaluate_model(settings, str(run), reporter),
                              sink, "Evaluation", kept=lambda: kept_after_cancel(run))
    assert outcome.cancelled and sink.after_press == []  # the second batch was not scored
    assert sorted(p.name for p in run.iterdir()) == entries
    assert not settings.sessions_dir.exists() or not any(settings.sessions_dir.rglob("*"))


# ---- 2: closing a page while its job runs -------------------------------------------------------------------
def test_closing_the_page_cancels_its_video_analysis_and_deletes_only_once_it_stopped(workspace):
    """Before, the session's folder went at once while the analysis wrote on: the job then made the folder again
    and left it (and its video) behind for good."""
    settings = workspace.settings
    key = "closing-page"
    video = sorted((workspace.video_category / "test").glob("*/*.mp4"))[0]
    board = JobBoard()
    rendering, resume = threading.Event(), threading.Event()
    ended: list[BaseException | None] = []
    jobs = []

    def sink(fraction: float | None, text: str) -> None:
        if text.startswith("render video 3/"):  # mid-way through writing the side-by-side video
            rendering.set()
            resume.wait(30)

    def analysis() -> None:
        try:
            with board.job(f"{key}:video") as job:
                jobs.append(job)
                h.analyze_video_file(settings, str(workspace.video_run), str(video), key, job.reporter(sink))
            ended.append(None)
        except BaseException as exc:
            ended.append(exc)

    worker = threading.Thread(target=analysis)
    worker.start()
    closed: list[bool] = []
    closer = threading.Thread(target=lambda: closed.append(close_session(settings, key, board=board, wait_s=30)))
    try:
        assert rendering.wait(60)
        output = next((settings.sessions_dir / key).iterdir())
        closer.start()
        deadline = time.monotonic() + 10
        while not jobs[0].cancel_event.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert closer.is_alive()  # it waits for the job...
        assert output.is_dir()  # ...and deletes nothing under it meanwhile
    finally:
        resume.set()
        worker.join(60)
        closer.join(60)
    assert len(ended) == 1 and isinstance(ended[0], Cancelled)  # stopped on request, not by a vanished folder
    assert closed == [True]
    assert not (settings.sessions_dir / key).exists()


def test_a_job_that_does_not_stop_in_time_has_its_folder_deleted_when_it_ends(tmp_path):
    settings = h.UISettings(results_dir=tmp_path / "results", sessions_root=tmp_path / "sessions")
    board = JobBoard()
    started, finish = threading.Event(), threading.Event()
    written: list[Path] = []

    def stubborn_job() -> None:  # a step that cannot be interrupted (it never asks its reporter)
        with board.job("slow-page:inspect"):
            folder = new_workspace(settings.sessions_dir, "slow-page", "inspect")
            (folder / "first.csv").write_text("1\n")
            started.set()
            finish.wait(30)
            (folder / "second.csv").write_text("2\n")
            written.append(folder)

    worker = threading.Thread(target=stubborn_job)
    worker.start()
    try:
        assert started.wait(10)
        assert close_session(settings, "slow-page", board=board, wait_s=0.2) is False  # deletion deferred
        assert (settings.sessions_dir / "slow-page").is_dir()
    finally:
        finish.set()
        worker.join(10)
    assert written and not written[0].parent.exists()  # the job wrote its last file, then its folder went


def test_closing_the_page_lets_its_training_run_on(tmp_path):
    """A model outlives the page that trains it: only the tab's Cancel stops a training."""
    settings = h.UISettings(results_dir=tmp_path / "results", sessions_root=tmp_path / "sessions")
    board = JobBoard()
    with board.job("training-page:train", outlives_page=True) as training:
        started = time.monotonic()
        assert close_session(settings, "training-page", board=board, wait_s=5) is True
        assert time.monotonic() - started < 2  # not kept waiting for a training
        assert not training.cancel_event.is_set()


# ---- 3: datasets uploaded for training ----------------------------------------------------------------------
def _run_on(workspace, results: Path, name: str, data_dir: Path, category: str | None = None) -> Path:
    """A copy of the workspace's image run that records ``data_dir`` (and ``category``) as the data it was trained on."""
    run = results / name
    shutil.copytree(workspace.image_run, run, ignore=shutil.ignore_patterns("evaluation", "predictions"))
    record = json.loads((run / "run.json").read_text())
    record["data_dir"] = str(data_dir)
    if category is not None:
        record["category"] = category
    (run / "run.json").write_text(json.dumps(record))
    return run


def _old(folder: Path, days: float = 30) -> Path:
    stamp = time.time() - days * 86400
    os.utime(folder, (stamp, stamp))
    return folder


def test_prune_uploads_removes_only_old_uploads_no_run_uses(workspace, tmp_path):
    results = tmp_path / "results"
    uploads = results / UPLOADS_FOLDER
    used, orphan, young, training = (uploads / name for name in ("used_1", "orphan_2", "young_3", "training_4"))
    for folder in (used, orphan, young, training):
        (folder / "widget" / "train" / "good").mkdir(parents=True)
        (folder / "widget" / "train" / "good" / "000.png").write_bytes(b"png")
    run = _run_on(workspace, results, "widget_used", used)
    for folder in (used, orphan, training):
        _old(folder)
    hold_workspace(training)  # a training of this server learns from it now
    try:
        assert prune_uploads(results) == 1
        assert not orphan.exists()
        assert used.is_dir() and young.is_dir() and training.is_dir()
    finally:
        release_workspace(training)
    assert prune_uploads(results) == 1 and not training.exists()  # once its training ended, unused and old

    # a run.json that cannot be read might name any upload: nothing goes
    shutil.rmtree(run)
    (results / "damaged").mkdir()
    (results / "damaged" / "run.json").write_text("{not json")
    assert prune_uploads(results) == 0 and used.is_dir()
    shutil.rmtree(results / "damaged")
    assert prune_uploads(results) == 1 and not used.exists()  # its model was deleted: the upload goes too
    assert young.is_dir()

    # a zip without a top folder is the category itself: the run names uploads/ as its data_dir
    flat = uploads / "flat_5"
    (flat / "train" / "good").mkdir(parents=True)
    _run_on(workspace, results, "flat_used", uploads, category="flat_5")
    _old(flat)
    assert prune_uploads(results) == 0 and flat.is_dir()


def test_evaluate_names_an_uploaded_dataset_that_was_removed(workspace, tmp_path):
    settings = h.UISettings(results_dir=tmp_path / "results", data_roots=[workspace.data_root], device="cpu",
                            sessions_root=tmp_path / "sessions")
    gone = settings.results_dir / UPLOADS_FOLDER / "widget_20261201_120000_abc123"
    run = _run_on(workspace, settings.results_dir, "widget_on_upload", gone)
    with pytest.raises(DataError) as raised:
        h.evaluate_model(settings, str(run), key="eval-gone")
    message = str(raised.value)
    assert "uploaded zip" in message and str(gone) in message and "Unpack the same zip into that folder" in message
    flat = _run_on(workspace, settings.results_dir, "flat_on_upload", settings.results_dir / UPLOADS_FOLDER, "flat_6")
    with pytest.raises(DataError) as raised:  # a zip without a top folder: uploads/<name> is the category itself
        h.evaluate_model(settings, str(flat), key="eval-gone")
    assert str(settings.results_dir / UPLOADS_FOLDER / "flat_6") in str(raised.value)
    elsewhere = _run_on(workspace, settings.results_dir, "widget_moved", tmp_path / "moved_away")
    with pytest.raises(DataError, match=r"trained on is gone \(no folder .*moved_away/widget\): put it back there"):
        h.evaluate_model(settings, str(elsewhere), key="eval-gone")


# ---- the Cancel button in a real page -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def page(workspace, tmp_path_factory):
    chromium_path = Path("/usr/bin/chromium")
    if not chromium_path.exists():
        pytest.skip(f"Chromium not found at {chromium_path} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the Python playwright package is not installed")
    import socket

    from anomalens.ui.app import launch

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = launch(workspace.settings, host="127.0.0.1", port=port, block=False)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(chromium_path),
                                                 args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(120_000)
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#inspect-cancel")  # the first tab: the others render when chosen
            yield page
            browser.close()
    finally:
        app.close()


@pytest.mark.browser
@pytest.mark.slow
def test_the_video_tabs_cancel_button_stops_a_long_analysis(page, workspace, tmp_path):
    from anomalens.data.synthetic_video import make_synthetic_video_dataset

    long_video = sorted((make_synthetic_video_dataset(tmp_path / "long", "conveyor", n_train=1, n_test=1, n_frames=1500,
                                                      size=(64, 96), seed=2) / "conveyor" / "test").glob("*/*.mp4"))[0]
    page.get_by_role("tab", name="Analyse video").click()
    page.wait_for_function("document.querySelector('#video-model input') && document.querySelector('#video-model input').value !== ''")
    summary = page.locator("#video-summary")
    page.locator("#video-cancel").click()
    summary.get_by_text("No video analysis is running in this tab.").wait_for()
    page.locator("#video-file input[type=file]").set_input_files(str(long_video))
    page.locator("#video-button").click()
    deadline = time.monotonic() + 60
    while not any(key.endswith(":video") for key in _running_jobs()) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # well into scoring (about 50 s of work on one CPU)
    started = time.monotonic()
    page.locator("#video-cancel").click()
    summary.get_by_text(re.compile(r"Video analysis cancelled after [\d.]+ s; nothing was saved\.")).wait_for(timeout=30_000)
    assert time.monotonic() - started < 30
    assert not _running_jobs()
    assert page.locator("#video-player video").count() == 0  # no result shown for the cancelled analysis


def _running_jobs() -> list[str]:
    from anomalens.ui.jobs import JOBS

    return JOBS.running_keys()
