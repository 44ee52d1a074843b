"""The web UI's second review: Start pressed twice leaves no watch behind, the server fetches no URL, a link in a
hot folder leads nowhere outside the data folders, SIGTERM and SIGKILL leave no session outputs on disk, a zip
refused for its data type can be checked again, the image-size hint says what training does, and the upload
limit is range-checked. Real handlers, a real server on 127.0.0.1 and real ``anomalens ui`` processes."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalens.errors import ConfigError, DataError
from anomalens.live.sources import FolderSource
from anomalens.ui import handlers as h
from anomalens.ui.security import (NO_URLS_MESSAGE, SERVER_FILE, names_a_url, remove_dead_servers_roots,
                                   served_sessions_root)
from anomalens.ui.tabs import live

from _ui_models import ui_workspace

REPO_SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return ui_workspace(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until(condition, timeout: float = 60.0) -> bool:
    """A condition reached within a generous bound (the assertion is on the condition, not on the time)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _hot_folder(workspace, name: str) -> Path:
    folder = workspace.data_root / name
    folder.mkdir(exist_ok=True)
    return folder


class _GatedLoad:
    """The real model loader, with its first call held until ``release``: the window in which a page's first
    Start is still loading its model."""

    def __init__(self, real):
        self.real, self.calls = real, 0
        self.loading, self.release = threading.Event(), threading.Event()

    def __call__(self, *args):
        self.calls += 1
        if self.calls == 1:
            self.loading.set()
            assert self.release.wait(60)
        return self.real(*args)


def _start_in_thread(watches, workspace, key: str, source: str) -> tuple[threading.Thread, list]:
    results: list = []

    def press() -> None:
        try:
            results.append(watches.start(workspace.settings, key, str(workspace.image_run), source))
        except Exception as exc:
            results.append(exc)

    thread = threading.Thread(target=press)
    thread.start()
    return thread, results


def _running(watches) -> int:
    with watches.lock:
        return watches.running()


# ---- 1: Start twice on one page ------------------------------------------------------------------------------
def test_start_pressed_twice_while_loading_runs_one_watch_that_stop_ends(workspace, monkeypatch):
    """Before, both presses registered a watch under the page's key: the first was overwritten while running, so
    neither Stop nor closing the page reached it, and the two-watch limit no longer counted it."""
    watches = live.LiveWatches()
    gate = _GatedLoad(live.DETECTORS.get)
    monkeypatch.setattr(live.DETECTORS, "get", gate)
    source = str(_hot_folder(workspace, "hot-double"))
    thread, results = _start_in_thread(watches, workspace, "page", source)
    try:
        assert gate.loading.wait(60)
        with pytest.raises(live.WatchStarting, match="still starting"):
            watches.start(workspace.settings, "page", str(workspace.image_run), source)
        assert gate.calls == 1  # the second press loaded nothing
    finally:
        gate.release.set()
        thread.join(60)
    assert [r for r in results if not isinstance(r, str)] == [] and "Watching" in results[0]
    watch = watches.watches["page"]
    assert watch.thread.is_alive() and _running(watches) == 1
    assert watches.stop("page")
    assert not watch.thread.is_alive() and _running(watches) == 0
    watches.close("page")


def test_start_again_replaces_the_pages_watch_and_counts_every_running_one(workspace):
    watches = live.LiveWatches()
    source = str(_hot_folder(workspace, "hot-again"))
    try:
        watches.start(workspace.settings, "page", str(workspace.image_run), source)
        first = watches.watches["page"]
        watches.start(workspace.settings, "page", str(workspace.image_run), source)
        second = watches.watches["page"]
        assert second is not first and not first.thread.is_alive() and second.thread.is_alive()
        assert _running(watches) == 1
        # a replaced watch that has not ended yet still takes its slot
        with watches.lock:
            watches.retired.append(second)
            assert watches.running() == 2
            watches.retired.remove(second)
    finally:
        watches.close("page")
    assert not second.thread.is_alive() and _running(watches) == 0


@pytest.mark.parametrize("how", ["stop", "close"])
def test_stop_or_close_while_the_model_loads_keeps_the_watch_from_beginning(workspace, monkeypatch, how):
    """Before, a watch whose page was closed while its model loaded began afterwards, with no page to stop it."""
    watches = live.LiveWatches()
    gate = _GatedLoad(live.DETECTORS.get)
    monkeypatch.setattr(live.DETECTORS, "get", gate)
    thread, results = _start_in_thread(watches, workspace, "page", str(_hot_folder(workspace, f"hot-{how}")))
    try:
        assert gate.loading.wait(60)
        assert getattr(watches, how)("page") is False  # nothing runs yet
    finally:
        gate.release.set()
        thread.join(60)
    assert results == ["Stopped before the watch began."]
    assert "page" not in watches.watches and not watches.starting and _running(watches) == 0


# ---- 2: no outgoing requests -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(workspace):
    import dataclasses

    from anomalens.ui.app import launch

    settings = dataclasses.replace(workspace.settings, sessions_root=None)
    port = _free_port()
    app = launch(settings, host="127.0.0.1", port=port, auth=("inspector", "s3cret-pass"), block=False)
    yield f"http://127.0.0.1:{port}"
    app.close()


@pytest.fixture()
def lookups(monkeypatch):
    """Hosts Gradio asks to resolve before it fetches a URL (none may be asked; none is ever contacted here)."""
    import gradio.processing_utils
    import gradio.route_utils
    import safehttpx

    asked: list[str] = []

    async def refuse(host, *args, **kwargs):
        asked.append(host)
        raise ValueError("this test makes no network request")

    monkeypatch.setattr(gradio.route_utils.safehttpx, "async_validate_url", refuse)
    monkeypatch.setattr(safehttpx, "async_validate_url", refuse)
    return asked


@pytest.mark.parametrize("target", [
    "https://example.com/anything.png", "http://10.0.0.5/plc/config", "ftp://example.com/x", "data:text/html,hi",
    "https%3A//example.com/x.png", "https%253A%252F%252Fexample.com/x.png", "HTTPS://example.com/x",
])
def test_file_routes_never_fetch_a_url(server, lookups, target):
    """Before, GET /gradio_api/file=https://... made the server resolve and fetch the URL: a web proxy into the plant
    network for whoever reaches the page."""
    import httpx

    with httpx.Client(base_url=server, timeout=30) as client:
        assert client.post("/login", data={"username": "inspector", "password": "s3cret-pass"}).status_code == 200
        for route in ("/gradio_api/file=", "/file=", "/gradio_api/file/", "/gradio_api/proxy="):
            answer = client.get(route + target)
            assert answer.status_code == 403, (route, answer.status_code)
            assert answer.json()["detail"] == NO_URLS_MESSAGE
    assert lookups == []


def test_an_input_whose_file_is_a_url_is_refused_and_uploads_still_pass(server, lookups):
    import httpx

    remote = {"path": "https://example.com/x.png", "url": None, "meta": {"_type": "gradio.FileData"}}
    local = {"path": "/tmp/gradio/abc/x.png", "url": f"{server}/gradio_api/file=/tmp/gradio/abc/x.png",
             "meta": {"_type": "gradio.FileData"}}
    with httpx.Client(base_url=server, timeout=30) as client:
        assert client.post("/login", data={"username": "inspector", "password": "s3cret-pass"}).status_code == 200
        answer = client.post("/gradio_api/queue/join", json={"data": [[remote]], "fn_index": 0, "session_hash": "x"})
        assert answer.status_code == 403 and answer.json()["detail"] == NO_URLS_MESSAGE
        # an uploaded file's own address is an http URL, its path is not: that request reaches Gradio
        answer = client.post("/gradio_api/queue/join", json={"data": [[local]], "fn_index": 0, "session_hash": "x"})
        assert answer.status_code != 403
    assert lookups == []


def test_names_a_url():
    for text in ("https://a", " http://a", "ftp:x", "data:,x", "file:///etc/passwd", "https%3A//a", "%2568ttps://a"):
        assert names_a_url(text), text
    for text in ("/tmp/gradio/x.png", "tmp/x:y.png", "C:/x.png", "x.png"):
        assert not names_a_url(text), text


# ---- 3: links in a hot folder ----------------------------------------------------------------------------------
def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.fromarray(np.full((64, 64, 3), colour, np.uint8)).save(path)
    return path


def _take_all(source: FolderSource, wanted: int) -> list:
    frames: list = []
    thread = threading.Thread(target=lambda: frames.extend(source.frames()), daemon=True)
    thread.start()
    try:
        assert _wait_until(lambda: len(frames) >= wanted)
        polls = source.polls
        assert _wait_until(lambda: source.polls >= polls + 20)  # more polls, re-checks included: nothing new
    finally:
        source.stop()
        thread.join(30)
    return frames


def test_a_hot_folder_with_allowed_roots_skips_links_that_lead_out(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "hot").mkdir(parents=True)
    outside.mkdir()
    _png(root / "hot" / "a.png", (90, 90, 90))
    os.symlink(_png(outside / "secret.png", (255, 0, 0)), root / "hot" / "b.png")
    os.symlink(_png(root / "elsewhere.png", (0, 90, 0)), root / "hot" / "c.png")  # a link within the root: fine
    logged: list[str] = []
    source = FolderSource(root / "hot", poll=0.01, settle=0.0, allowed_roots=[root.resolve()], log=logged.append)
    frames = _take_all(source, 2)
    assert sorted(Path(f.file).name for f in frames) == ["a.png", "c.png"]
    assert not any(f.image[..., 0].mean() > 200 for f in frames)  # the red secret was never read
    assert len(logged) == 1 and "b.png: skipped, it leads outside the allowed folders" in logged[0]
    # without allowed_roots (``anomalens watch``) links are followed as before
    plain = _take_all(FolderSource(root / "hot", poll=0.01, settle=0.0), 3)
    assert sorted(Path(f.file).name for f in plain) == ["a.png", "b.png", "c.png"]


def test_the_live_tab_does_not_score_a_link_out_of_the_data_folders(workspace, tmp_path):
    hot = _hot_folder(workspace, "hot-link")
    shutil.copy(next(workspace.image_category.glob("train/good/*.png")), hot / "a.png")
    if not (hot / "b.png").is_symlink():
        os.symlink(_png(tmp_path / "secret.png", (255, 0, 0)), hot / "b.png")
    watches = live.LiveWatches()
    try:
        watches.start(workspace.settings, "page", str(workspace.image_run), "hot-link")
        watch = watches.watches["page"]
        source = watch.watcher.source
        assert isinstance(source, FolderSource) and source.allowed_roots == tuple(workspace.settings.data_roots)
        assert _wait_until(lambda: {"a.png", "b.png"} <= set(source.taken))
    finally:
        watches.close("page")
    assert watch.watcher.scored == 1  # a.png only


# ---- 4: stopping the server ------------------------------------------------------------------------------------
def _serve(tmp: Path, workspace, port: int) -> subprocess.Popen:
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=str(REPO_SRC))
    return subprocess.Popen([sys.executable, "-m", "anomalens", "ui", "--port", str(port), "--results-dir",
                             str(workspace.settings.results_dir), "--data-root", str(workspace.data_root)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _roots_of(tmp: Path) -> set[Path]:
    return set(tmp.glob("anomalens-ui-*"))


def _wait_for_server(process: subprocess.Popen, port: int) -> None:
    import httpx

    def up() -> bool:
        assert process.poll() is None, "the server exited"
        try:
            return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    assert _wait_until(up, 180)


def test_sigterm_stops_the_server_cleanly_and_removes_the_session_outputs(workspace, tmp_path):
    """Before, SIGTERM (systemd, docker stop) ended the process without its exit handlers: every session's outputs
    stayed in the temporary folder."""
    port = _free_port()
    server = _serve(tmp_path, workspace, port)
    try:
        _wait_for_server(server, port)
        (root,) = _roots_of(tmp_path)
        (root / "someone" / "20260101_inspect_abc").mkdir(parents=True)
        (root / "someone" / "20260101_inspect_abc" / "overlay.png").write_bytes(b"a session's output")
        server.send_signal(signal.SIGTERM)
        assert server.wait(120) == 0
    finally:
        if server.poll() is None:
            server.kill()
    assert not root.exists()


def test_the_folder_of_a_killed_server_goes_at_the_next_start(workspace, tmp_path):
    """SIGKILL cannot be caught: the next server of this user on this machine removes what it left."""
    port = _free_port()
    killed = _serve(tmp_path, workspace, port)
    try:
        _wait_for_server(killed, port)
        (left,) = _roots_of(tmp_path)
        killed.send_signal(signal.SIGKILL)
        killed.wait(60)
    finally:
        if killed.poll() is None:
            killed.kill()
    assert left.is_dir()  # nothing runs on SIGKILL
    port = _free_port()
    server = _serve(tmp_path, workspace, port)
    try:
        _wait_for_server(server, port)
        (root,) = _roots_of(tmp_path)
        assert root != left and not left.exists()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(120)


def test_only_this_users_folders_of_dead_servers_of_this_host_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    mine = served_sessions_root()
    assert mine.parent == tmp_path and (mine / SERVER_FILE).read_text().split()[0] == str(os.getpid())
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    host = (mine / SERVER_FILE).read_text().split()[1]  # this host and process space: "<name>|<pid namespace>"
    assert host.startswith(socket.gethostname() + "|")

    def root(name: str, record: str | None) -> Path:
        folder = tmp_path / f"anomalens-ui-{name}"
        folder.mkdir()
        if record is not None:
            (folder / SERVER_FILE).write_text(record)
        return folder

    dead = root("dead", f"{ended.pid} {host}\n")
    alive = root("alive", f"{os.getppid()} {host}\n")
    old = root("old", None)  # no record: an older server, left alone
    other_host = root("other", f"{ended.pid} another-host\n")
    # the same host name, other process numbers: a container on the host's network sharing its /tmp
    other_space = root("space", f"{ended.pid} {socket.gethostname()}|pid:[1]\n")
    garbage = root("garbage", "not a pid")
    linked = tmp_path / "anomalens-ui-link"
    linked.symlink_to(root("target", f"{ended.pid} {host}\n").rename(tmp_path / "elsewhere"))
    assert remove_dead_servers_roots(tmp_path) == 1
    assert not dead.exists()
    assert all(p.exists() for p in (mine, alive, old, other_host, other_space, garbage, linked, tmp_path / "elsewhere"))


# ---- 5: a zip refused for its contents stays ------------------------------------------------------------------
def _zip_of(category: Path, archive: Path, members: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(category.glob("train/good/*.png")):
            bundle.write(path, arcname=f"widget/{path.relative_to(category)}")
        for name, data in (members or {}).items():
            bundle.writestr(name, data)
    return archive


def test_a_zip_refused_for_its_data_type_can_be_checked_again(workspace, tmp_path):
    """Before, the refusal deleted the upload, and following its advice ("set the data type to image") gave
    "Something went wrong on the server"."""
    upload = _zip_of(workspace.image_category, tmp_path / "widget.zip")
    with pytest.raises(DataError, match="set the data type to image"):
        h.choose_dataset(workspace.settings, None, str(upload), "retry-page", "video")
    assert upload.is_file()
    assert "16 normal training images" in h.choose_dataset(workspace.settings, None, str(upload), "retry-page",
                                                            "image").description


def test_an_unsafe_zip_is_deleted_and_a_retry_says_to_upload_again(workspace, tmp_path):
    from anomalens.ui.security import user_message

    upload = _zip_of(workspace.image_category, tmp_path / "evil.zip", {"../escape.png": b"x"})
    with pytest.raises(DataError, match="unsafe path"):
        h.choose_dataset(workspace.settings, None, str(upload), "unsafe-page", "image")
    assert not upload.exists()
    with pytest.raises(DataError) as refused:
        h.choose_dataset(workspace.settings, None, str(upload), "unsafe-page", "image", keep=True)
    assert user_message(refused.value) == "evil.zip: the uploaded file is gone from the server; upload it again"


# ---- 6: the image-size hint ------------------------------------------------------------------------------------
def test_the_image_size_hint_says_what_an_empty_field_trains_at(tmp_path):
    """Before, image models showed their config's "256 256", while an empty field trains at the images' aspect."""
    from anomalens.data.preprocessing import DEFAULT_PIXEL_BUDGET, aspect_aware_size
    from anomalens.ui.tabs.train import image_size_hint

    side = int(DEFAULT_PIXEL_BUDGET ** 0.5)
    for model in ("patchcore", "padim", "autoencoder"):
        assert image_size_hint(model) == f"auto: the training images' aspect at about {side}x{side}"
    assert aspect_aware_size(400, 160) != (side, side)  # what the hint no longer claims for a tall part
    assert image_size_hint("stfeatures") == "240 360"  # a video model: its config's frame size, as trained


# ---- 7: --max-upload-mb ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["ui", "demo"])
@pytest.mark.parametrize("value, message", [("-1", "at least 1"), ("0", "at least 1"), ("20001", "at most 20000")])
def test_max_upload_mb_out_of_range_is_one_line_and_exit_2(tmp_path, capsys, command, value, message):
    from anomalens.cli import main

    extra = ["--demo-dir", str(tmp_path / "demo"), "--results-dir", str(tmp_path / "results")] if command == "demo" else []
    assert main([command, "--max-upload-mb", value, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"anomalens: error: --max-upload-mb must be {message}, got {value}"]
    assert not (tmp_path / "demo").exists()  # the demo refused it before preparing anything
