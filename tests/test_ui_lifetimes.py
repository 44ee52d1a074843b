"""What the web UI keeps alive and for how long: a live watch ends with its page, watch slots cannot be
over-booked, overlapping watches restore the library thread counts, and a dataset or output folder that a
model or a running job still needs is never deleted under it."""

from __future__ import annotations

import threading
import time
import zipfile
from pathlib import Path

import pytest

from anomalens.errors import ConfigError, DataError
from anomalens.ui import handlers as h
from anomalens.ui.app import close_session
from anomalens.ui.jobs import JobBoard, new_workspace, trim_workspaces
from anomalens.ui.tabs import live
from anomalens.ui.tabs.train import UPLOADS_FOLDER

from _ui_models import TINY_IMAGE_SETTINGS, ui_workspace


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return ui_workspace(tmp_path_factory)


def _hot_folder(workspace, name: str) -> Path:
    folder = workspace.data_root / name
    folder.mkdir(exist_ok=True)
    return folder


# ---- finding 1: watches end with their page; slots are reserved under the lock ----------------------------
def test_closing_the_page_stops_its_live_watch_and_frees_the_slot(workspace):
    """A hot folder never ends by itself: before, closing the page deleted its files but the watch ran on, and
    two such pages filled every slot until the server restarted."""
    settings = workspace.settings
    keys = [f"closed-page-{i}" for i in range(live.MAX_WATCHES)]
    hot = str(_hot_folder(workspace, "hot-close"))
    try:
        watches = []
        for key in keys:
            live.WATCHES.start(settings, key, str(workspace.image_run), hot)
            watches.append(live.WATCHES.watches[key])
        assert all(w.thread.is_alive() for w in watches)
        with pytest.raises(ConfigError, match="already run"):
            live.WATCHES.start(settings, "another-page", str(workspace.image_run), hot)
        for key in keys:
            close_session(settings, key)
        assert not any(w.thread.is_alive() for w in watches)
        assert not any(key in live.WATCHES.watches for key in keys)
        assert not any((settings.sessions_dir / key).exists() for key in keys)
        # the slots are free again: a new page can watch
        live.WATCHES.start(settings, "another-page", str(workspace.image_run), hot)
        assert live.WATCHES.watches["another-page"].thread.is_alive()
    finally:
        for key in keys + ["another-page"]:
            live.WATCHES.close(key)


def test_two_starts_at_once_cannot_exceed_the_watch_limit(workspace, monkeypatch):
    """The slot is taken before the model loads: a second start meanwhile is refused, and a failed load gives
    the slot back."""
    watches = live.LiveWatches()
    monkeypatch.setattr(live, "MAX_WATCHES", 1)
    loading, release = threading.Event(), threading.Event()
    calls = []

    def slow_load(run, device, kind):
        calls.append(run)
        if len(calls) == 1:
            loading.set()
            release.wait(10)
        raise DataError("model not loaded in this test")

    monkeypatch.setattr(live.DETECTORS, "get", slow_load)
    source = str(_hot_folder(workspace, "hot-race"))
    errors: list[Exception] = []

    def first() -> None:
        try:
            watches.start(workspace.settings, "page-1", str(workspace.image_run), source)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert loading.wait(10)
        with pytest.raises(ConfigError, match="already run"):  # before: it passed the check and loaded a second model
            watches.start(workspace.settings, "page-2", str(workspace.image_run), source)
        assert len(calls) == 1
    finally:
        release.set()
        thread.join(10)
    assert [type(e) for e in errors] == [DataError]
    assert not watches.starting  # the failed start gave its slot back
    with pytest.raises(DataError, match="not loaded"):
        watches.start(workspace.settings, "page-2", str(workspace.image_run), source)


# ---- finding 2: overlapping library_threads blocks ---------------------------------------------------------
def test_overlapping_library_threads_restore_the_counts_when_the_last_ends():
    """Two watches that overlap, the first stopping first: before, torch stayed at 1 thread for the process."""
    import cv2
    import torch

    from anomalens.runtime import library_threads

    before = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(3)
    cv2.setNumThreads(3)
    try:
        first, second = library_threads(1), library_threads(1)
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert torch.get_num_threads() == 1  # the second watch still runs with its count
        second.__exit__(None, None, None)
        assert (torch.get_num_threads(), cv2.getNumThreads()) == (3, 3)
    finally:
        torch.set_num_threads(before[0])
        cv2.setNumThreads(before[1])


# ---- finding 3: what a model or a running job needs stays ---------------------------------------------------
def _zip_of(source: Path, archive: Path, category: str) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(source.glob("train/good/*.png")) + sorted(source.glob("test/*/*.png")):
            bundle.write(path, arcname=f"{category}/{path.relative_to(source)}")
    return archive


def test_a_dataset_uploaded_for_training_outlives_the_session_and_the_trim(workspace, tmp_path):
    """Before, it was unpacked into the session's outputs: closing the page, the server's exit or the size trim
    removed it, and Evaluate on the model said "data directory not found"."""
    settings = workspace.settings
    archive = _zip_of(workspace.image_category, tmp_path / "uploaded.zip", "upwidget")
    dataset = h.choose_dataset(settings, None, str(archive), "upload-page", "image", keep=True)
    assert dataset.data_dir.is_relative_to(settings.results_dir / UPLOADS_FOLDER)
    assert not dataset.data_dir.is_relative_to(settings.sessions_dir)
    run_dir = h.train_model(settings, dataset, "autoencoder", image_size=64, advanced=TINY_IMAGE_SETTINGS).run_dir
    assert run_dir is not None
    close_session(settings, "upload-page")
    trim_workspaces(settings.sessions_dir, 0)
    assert (dataset.data_dir / "upwidget" / "train").is_dir()
    view = h.evaluate_model(settings, str(run_dir), key="upload-page")
    assert view.metric_rows
    # the uploads folder is not a model
    assert all(UPLOADS_FOLDER not in Path(value).parts for _, value in h.model_choices(settings, "image"))


def test_a_refused_upload_for_training_leaves_nothing(workspace, tmp_path):
    settings = workspace.settings
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as bundle:
        bundle.writestr("readme.txt", "no images")
    uploads = settings.results_dir / UPLOADS_FOLDER
    before = set(uploads.rglob("*")) if uploads.exists() else set()
    with pytest.raises(DataError, match="expected an image dataset"):
        h.choose_dataset(settings, None, str(empty), "refused-page", "image", keep=True)
    assert (set(uploads.rglob("*")) if uploads.exists() else set()) <= before


def test_the_trim_leaves_the_folders_of_running_jobs_and_watches(workspace, tmp_path):
    """The size cap is shared by all sessions: before, the next output folder of any user could remove one that
    another session's job or watch was still writing."""
    base = tmp_path / "sessions"
    board = JobBoard()
    with board.job("page-a:video"):
        busy = new_workspace(base, "page-a", "video")
        (busy / "frames.bin").write_bytes(b"x" * 1000)
        time.sleep(0.01)
        newer = new_workspace(base, "page-b", "inspect")
        (newer / "scores.csv").write_bytes(b"x" * 1000)
        assert trim_workspaces(base, 0, keep=newer) == 0
        assert busy.is_dir()
    assert trim_workspaces(base, 0, keep=newer) == 1  # once the job ended, it may go
    assert not busy.exists()

    settings = workspace.settings
    try:
        live.WATCHES.start(settings, "watching-page", str(workspace.image_run), str(_hot_folder(workspace, "hot-trim")))
        output = live.WATCHES.watches["watching-page"].output
        trim_workspaces(settings.sessions_dir, 0)
        assert output.is_dir()
        live.WATCHES.stop("watching-page")
        trim_workspaces(settings.sessions_dir, 0)
        assert not output.exists()
    finally:
        live.WATCHES.close("watching-page")
