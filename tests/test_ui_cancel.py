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
from anomalens.metrics.threshold import Calibration
from anomalens.ui import handlers as h
from anomalens.ui.app import close_session
from anomalens.ui.jobs import JobBoard, cancel_text, hold_workspace, new_workspace, release_workspace, run_cancellable
from anomalens.ui.tabs import inspect as inspect_tab
from anomalens.ui.tabs.evaluate import kept_after_cancel
from anomalens.ui.tabs.train import UPLOADS_FOLDER, prune_uploads

from _ui_models import ui_workspace

# what the stub inspections below were normalised by: raw 1.0 -> normalised 0.70
CALIBRATION = Calibration(threshold=0.15, scale=1.0, target_fpr=0.01, validation_mean=0.0, validation_std=1.0,
                          validation_max=0.1, validation_count=100)
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


WAITING = "**Cancelled before it started:** the inspection was still waiting for its turn; it will not run."
NOT_STARTED = ("**Cancelled before it started.** Inspection was cancelled while it waited for its turn; nothing ran, "
               "nothing was saved.")


class Work:
    """A job's work that counts how often it ran."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self, reporter) -> str:
        self.runs += 1
        return f"run {self.runs}"


def test_cancel_of_a_run_still_waiting_for_its_turn_means_it_never_runs():
    """Before, a Cancel pressed while Gradio's queue still held the run answered "No inspection is running" and
    the run started later all the same."""
    board, key, work = JobBoard(), "queued-page:inspect", Work()
    ticket = board.enqueue(key)  # Run pressed: the lane is full, the run waits in the queue
    assert board.waiting_keys() == [key] and not board.running(key)
    assert cancel_text(board, key, "inspection") == WAITING
    outcome = run_cancellable(board, key, work, None, "Inspection", ticket=ticket)  # its turn comes
    assert work.runs == 0 and outcome.value is None and outcome.cancelled and outcome.message == NOT_STARTED
    assert not board.running(key) and board.waiting_keys() == []
    # the next press is a run of its own
    outcome = run_cancellable(board, key, work, None, "Inspection", ticket=board.enqueue(key))
    assert (work.runs, outcome.value, outcome.cancelled) == (1, "run 1", False)


def test_a_cancel_while_nothing_waits_or_runs_leaves_the_next_run_alone():
    board, key, work = JobBoard(), "idle-page:inspect", Work()
    assert cancel_text(board, key, "inspection") == "No inspection is running in this tab."
    outcome = run_cancellable(board, key, work, None, "Inspection", ticket=board.enqueue(key))
    assert (work.runs, outcome.value, outcome.message) == (1, "run 1", "")
    assert cancel_text(board, key, "inspection") == "No inspection is running in this tab."  # after it ended
    outcome = run_cancellable(board, key, work, None, "Inspection", ticket=board.enqueue(key))
    assert (work.runs, outcome.value) == (2, "run 2")
    assert board.waiting_keys() == []


def test_run_pressed_again_while_its_run_waits_or_runs_repeats_nothing():
    """Gradio holds a second press back until the pending run ended; it then finds its ticket used and changes
    nothing on the page (message "", no value), as a second press did before."""
    board, key, work = JobBoard(), "twice-page:inspect", Work()
    ticket = board.enqueue(key)
    assert board.enqueue(key) == ticket  # pressed again while it waits
    with board.job(key, ticket=ticket):
        assert board.enqueue(key) == ticket  # ...and while it runs
    repeated = run_cancellable(board, key, work, None, "Inspection", ticket=ticket)
    assert work.runs == 0 and repeated.value is None and repeated.message == ""
    assert board.waiting_keys() == []


def test_run_cancel_run_while_the_first_still_waits_runs_only_the_second():
    board, key, work = JobBoard(), "changed-mind:inspect", Work()
    first = board.enqueue(key)
    assert cancel_text(board, key, "inspection") == WAITING
    assert cancel_text(board, key, "inspection") == WAITING  # pressed twice: still the same answer
    second = board.enqueue(key)  # the first still waits in the queue: the new press is another run
    assert second != first
    assert run_cancellable(board, key, work, None, "Inspection", ticket=first).message == NOT_STARTED
    assert run_cancellable(board, key, work, None, "Inspection", ticket=second).value == "run 1"
    assert work.runs == 1


def test_cancel_while_running_also_withdraws_the_run_pressed_after_it():
    board, key, work = JobBoard(), "both-page:inspect", Work()
    with board.job(key, ticket=board.enqueue(key)) as running:
        assert cancel_text(board, key, "inspection").startswith("**Stopping**")
        following = board.enqueue(key)  # pressed once more while the cancelled one still stops
        assert cancel_text(board, key, "inspection").startswith("**Stopping**")
        assert running.cancel_event.is_set()
    assert run_cancellable(board, key, work, None, "Inspection", ticket=following).message == NOT_STARTED
    assert work.runs == 0


def test_the_pages_cancel_answers_before_the_job_stops():
    """The job stops only once the page shows "Stopping…" (the second step of the Cancel): before, a job that
    stopped at once could have its own "Cancelled after …" arrive first, and "Stopping…" stayed on the page."""
    board, key = JobBoard(), "answer-first:video"
    first = board.enqueue(key)
    with board.job(key, ticket=first) as running:
        assert cancel_text(board, key, "video analysis", stop_now=False).startswith("**Stopping**")
        assert not running.cancel_event.is_set()  # the answer goes out first...
        assert board.enqueue(key) != first  # (Run pressed now is a run of its own, not a repeat of the stopping one)
        board.stop_marked(key)
        assert running.cancel_event.is_set()  # ...then the job stops
    with board.job(key) as later:  # a job started after the press is not the one it stopped
        board.stop_marked(key)
        assert not later.cancel_event.is_set()


def test_closing_the_page_drops_its_waiting_runs_and_no_other_pages(tmp_path):
    """Gradio drops a closed page's queued events (a training's too): their tickets go, another page's stay."""
    settings = h.UISettings(results_dir=tmp_path / "results", sessions_root=tmp_path / "sessions")
    board, work = JobBoard(), Work()
    analysis = board.enqueue("gone-page:video")
    board.enqueue("gone-page:train")
    other = board.enqueue("other-page:video")
    assert close_session(settings, "gone-page", board=board, wait_s=1) is True
    assert board.waiting_keys() == ["other-page:video"]
    dropped = run_cancellable(board, "gone-page:video", work, None, "Video analysis", ticket=analysis)
    assert work.runs == 0 and dropped.value is None and dropped.message == ""  # no page to show it
    assert run_cancellable(board, "other-page:video", work, None, "Video analysis", ticket=other).value == "run 1"


def test_tickets_gradio_never_hands_in_are_freed_by_the_run_after_them():
    """Run, Cancel, Run, Cancel, Run while the first still waits: Gradio hands in only the last press's ticket.
    The withdrawn ones before it go when it starts, so a later Cancel on the idle tab finds nothing waiting."""
    board, work, key = JobBoard(), Work(), "page:inspect"
    tickets = []
    for _ in range(3):
        tickets.append(board.enqueue(key))
        if len(tickets) < 3:
            assert board.cancel(key) == "waiting"
    assert len(set(tickets)) == 3
    assert run_cancellable(board, key, work, None, "Inspection", ticket=tickets[-1]).value == "run 1"
    assert board.waiting_keys() == [] and board.cancel(key) == ""
    assert cancel_text(board, key, "inspection") == "No inspection is running in this tab."


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


def test_an_inspection_that_ignores_cancel_writes_nothing_after_its_closed_pages_folder_went(tmp_path, monkeypatch):
    """Before, the tab wrote results.csv and overlays.zip after its job had ended, so after the deferred deletion
    of the closed page's folder, which the write made again and left behind; now they are written inside the job,
    the folder goes after them, and the handler gets no value to show."""
    from PIL import Image

    settings = h.UISettings(results_dir=tmp_path / "results", sessions_root=tmp_path / "sessions")
    board = JobBoard()
    started, finish = threading.Event(), threading.Event()

    def stubborn_inspection(settings_, run_dir, files, key, reporter):  # never asks its reporter
        folder = new_workspace(settings_.sessions_dir, key, "inspect")
        overlay = folder / "overlays" / "000.png"
        overlay.parent.mkdir()
        Image.new("RGB", (8, 8)).save(overlay)
        started.set()
        finish.wait(30)
        return h.ImageInspection(tmp_path, folder, [h.ImageItem("000.png", 1.0, 0.7, overlay)], CALIBRATION)

    monkeypatch.setattr(inspect_tab, "inspect_images", stubborn_inspection)
    outcomes: list = []
    worker = threading.Thread(target=lambda: outcomes.append(
        inspect_tab.run_inspection(settings, board, "closed-inspect", None, ["part.png"], 0.5)))
    worker.start()
    try:
        assert started.wait(10)
        assert close_session(settings, "closed-inspect", board=board, wait_s=0.2) is False  # deletion deferred
    finally:
        finish.set()
        worker.join(30)
    assert len(outcomes) == 1, "the handler failed"
    assert not (settings.sessions_dir / "closed-inspect").exists()  # not made again by a late write
    assert outcomes[0].value is None and outcomes[0].cancelled  # nothing for a closed page to show


def test_an_open_pages_inspection_shows_what_it_wrote(tmp_path, monkeypatch):
    settings = h.UISettings(results_dir=tmp_path / "results", sessions_root=tmp_path / "sessions")

    def quick_inspection(settings_, run_dir, files, key, reporter):
        folder = new_workspace(settings_.sessions_dir, key, "inspect")
        return h.ImageInspection(tmp_path, folder, [h.ImageItem("000.png", 1.0, 0.7, None)], CALIBRATION)

    monkeypatch.setattr(inspect_tab, "inspect_images", quick_inspection)
    outcome = inspect_tab.run_inspection(settings, JobBoard(), "open-inspect", None, ["part.png"], 0.8)
    inspection, (summary, gallery, _table, downloads) = outcome.value
    assert summary.startswith("**0 of 1 images flagged** at threshold 0.80") and gallery == []
    assert [Path(p).name for p in downloads] == ["results.csv", "overlays.zip"]
    assert all(Path(p).is_file() and Path(p).parent == inspection.output_dir for p in downloads)


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


@pytest.mark.browser
@pytest.mark.slow
def test_cancel_of_an_inspection_waiting_for_a_free_slot_means_it_never_runs(page, monkeypatch):
    """Two other pages fill the analysis lane; this page's Inspect waits in Gradio's queue, its Cancel answers at
    once, and when the lane frees the run ends as it starts: the inspection is never called for this page."""
    from anomalens.ui.common import ANALYSIS_LANE
    from anomalens.ui.jobs import JOBS

    release = threading.Event()
    called: list[str] = []

    def occupying(settings, run_dir, files, key, reporter):  # holds a slot of the lane until released
        called.append(key)
        release.wait(120)
        raise DataError("released by the test")

    monkeypatch.setattr(inspect_tab, "inspect_images", occupying)
    page.get_by_role("tab", name="Inspect images").click()
    page.wait_for_function(MODEL_CHOSEN)
    others = []
    try:
        for _ in range(ANALYSIS_LANE[1]):
            other = page.context.browser.new_page()  # a page of its own: another session
            others.append(other)
            other.set_default_timeout(120_000)
            other.goto(page.url)
            other.wait_for_function(MODEL_CHOSEN)  # the page's load event is done: a click now reaches the server
            other.locator("#inspect-button").click()
        _wait_for(lambda: len(called) == ANALYSIS_LANE[1])
        before = set(JOBS.waiting_keys())
        page.locator("#inspect-button").click()
        _wait_for(lambda: set(JOBS.waiting_keys()) - before)  # this page has its ticket; its run waits for a slot
        (key,) = set(JOBS.waiting_keys()) - before
        assert key.endswith(":inspect") and key.split(":")[0] not in called
        summary = page.locator("#image-summary")
        page.locator("#inspect-cancel").click()
        summary.get_by_text("Cancelled before it started: the inspection was still waiting").wait_for()
        release.set()
        summary.get_by_text("Inspection was cancelled while it waited for its turn").wait_for()  # its turn came
        assert len(called) == ANALYSIS_LANE[1]  # ...and it never ran
        assert key not in JOBS.waiting_keys() and key not in JOBS.running_keys()
    finally:
        release.set()
        for other in others:
            other.close()


MODEL_CHOSEN = "document.querySelector('#image-model input') && document.querySelector('#image-model input').value !== ''"


def _wait_for(condition, timeout_s: float = 120) -> None:
    """Poll a condition of the server (its job board) that the page cannot show."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _running_jobs() -> list[str]:
    from anomalens.ui.jobs import JOBS

    return JOBS.running_keys()
