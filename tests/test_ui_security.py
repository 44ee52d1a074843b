"""Security of the web UI: path confinement, logins, zip extraction, upload limits, messages without tracebacks."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from anomalens.errors import Cancelled, ConfigError, DataError
from anomalens.ui.jobs import JobBoard, JobBusy, new_workspace, prune_workspaces, session_key, unique_run_name
from anomalens.ui.security import (
    GENERIC_ERROR,
    ZipLimits,
    check_upload_size,
    confine_path,
    parse_auth,
    resolve_auth,
    safe_extract_zip,
    user_message,
)


@pytest.fixture()
def roots(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    (data / "bottle" / "train" / "good").mkdir(parents=True)
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "passwords.txt").write_text("x")
    return data, outside


def test_paths_inside_a_root_are_accepted_and_resolved(roots):
    data, _ = roots
    assert confine_path(str(data / "bottle"), [data]) == (data / "bottle").resolve()
    assert confine_path("bottle", [data]) == (data / "bottle").resolve()  # relative paths live under the first root
    assert confine_path(str(data), [data]) == data.resolve()


@pytest.mark.parametrize("attempt", ["../../etc", "../secret", "/etc", "bottle/../../secret", "/"])
def test_paths_outside_every_root_are_refused_with_a_message(roots, attempt):
    data, _ = roots
    with pytest.raises(DataError, match="outside the allowed data folders") as info:
        confine_path(attempt, [data])
    assert attempt in str(info.value)


def test_a_symlink_inside_a_root_pointing_outside_is_refused(roots):
    data, outside = roots
    (data / "innocent").symlink_to(outside)
    with pytest.raises(DataError, match="outside"):
        confine_path(str(data / "innocent"), [data])
    # ... and a sibling folder whose name merely starts with the root's name is not inside it
    sibling = data.parent / (data.name + "2")
    sibling.mkdir()
    with pytest.raises(DataError, match="outside"):
        confine_path(str(sibling), [data])


def test_empty_path_and_no_roots_give_clear_messages(roots):
    data, _ = roots
    with pytest.raises(DataError, match="no dataset folder"):
        confine_path("  ", [data])
    with pytest.raises(DataError, match="--data-root"):
        confine_path("bottle", [])


def test_auth_from_flag_or_environment():
    assert parse_auth("inspector:s3cret:with:colons") == ("inspector", "s3cret:with:colons")
    assert parse_auth("") is None
    for bad in ("nopassword", ":x", "user:"):
        with pytest.raises(ConfigError, match="user:password"):
            parse_auth(bad)
    assert resolve_auth(None, {"ANOMALENS_UI_AUTH": "a:b"}) == ("a", "b")
    assert resolve_auth("c:d", {"ANOMALENS_UI_AUTH": "a:b"}) == ("c", "d")  # the flag wins
    assert resolve_auth(None, {}) is None


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def test_zip_with_one_top_folder_extracts_and_returns_it(tmp_path):
    archive = _zip(tmp_path / "ds.zip", {"widget/train/good/000.png": b"a", "widget/test/good/000.png": b"b", "__MACOSX/._x": b""})
    root = safe_extract_zip(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "widget"
    assert (root / "train" / "good" / "000.png").read_bytes() == b"a"
    assert not (tmp_path / "out" / "__MACOSX").exists()


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt", "C:/evil.txt"])
def test_zip_path_traversal_is_refused_before_anything_is_written(tmp_path, name):
    archive = _zip(tmp_path / "bad.zip", {"ok/file.txt": b"x", name: b"evil"})
    with pytest.raises(DataError, match="unsafe path"):
        safe_extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_member_is_refused(tmp_path):
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        info = zipfile.ZipInfo("ds/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        bundle.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        safe_extract_zip(archive, tmp_path / "out")


def test_zip_limits_and_garbage(tmp_path):
    archive = _zip(tmp_path / "many.zip", {f"d/{i}.txt": b"x" * 100 for i in range(5)})
    with pytest.raises(DataError, match="at most 3"):
        safe_extract_zip(archive, tmp_path / "o1", ZipLimits(max_members=3))
    with pytest.raises(DataError, match="unpacks to"):
        safe_extract_zip(archive, tmp_path / "o2", ZipLimits(max_unpacked_bytes=200))
    bomb = _zip(tmp_path / "bomb.zip", {"d/zeros.bin": b"\0" * 5_000_000})
    with pytest.raises(DataError, match="zip bomb"):
        safe_extract_zip(bomb, tmp_path / "o3")
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"this is not a zip")
    with pytest.raises(DataError, match="not a readable zip") as info:
        safe_extract_zip(garbage, tmp_path / "o4")
    assert str(info.value).startswith("garbage.zip")


def test_upload_size_limit(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 2048)
    assert check_upload_size(big, 4096) == big
    with pytest.raises(DataError, match="over the upload limit"):
        check_upload_size(big, 1024)


def test_user_messages_never_contain_tracebacks(caplog):
    assert user_message(DataError("not an image", "a.png")) == "a.png: not an image"
    assert user_message(Cancelled()) == "Stopped on request."
    try:
        {}["missing"]
    except KeyError as exc:
        with caplog.at_level("ERROR", logger="anomalens.ui"):
            message = user_message(exc)
    assert message == GENERIC_ERROR
    assert "Traceback" not in message and "KeyError" not in message
    assert "KeyError" in caplog.text  # ... but the server log has the details


def test_job_board_cancels_only_its_own_tab():
    board = JobBoard()
    with board.job("tab-a") as a, board.job("tab-b") as b:
        reporter_a, reporter_b = a.reporter(), b.reporter()
        with pytest.raises(JobBusy):
            with board.job("tab-a"):
                pass
        assert board.cancel("tab-a")
        with pytest.raises(Cancelled):
            reporter_a.check_cancelled()
        reporter_b.check_cancelled()  # the other tab keeps running
    assert not board.running("tab-a") and not board.cancel("tab-a")


def test_job_reporter_forwards_progress_and_news():
    seen = []
    board = JobBoard()
    with board.job("t") as job:
        reporter = job.reporter(lambda fraction, text: seen.append((fraction, text)))
        list(reporter.iter(range(4), "epoch", info=lambda: "loss 0.5"))
        reporter.log("warning: few images")
    assert seen[-2] == (1.0, "epoch 4/4 · loss 0.5")
    assert seen[-1] == (1.0, "warning: few images") and "warning: few images" in job.messages  # news keeps the bar


def test_workspaces_and_run_names_are_unique_per_tab(tmp_path):
    a = new_workspace(tmp_path, "tab/../a", "inspect")
    b = new_workspace(tmp_path, "tab/../a", "inspect")
    assert a != b and a.parent == b.parent and a.parent.parent == tmp_path  # no escaping via the session key
    assert session_key("../../x") == "x" and len(session_key(None)) == 16
    names = {unique_run_name("bottle", "image") for _ in range(20)}
    assert len(names) == 20 and all(n.startswith("bottle_") for n in names)
    assert unique_run_name("../c", "video").startswith("video____c_")
    assert os.sep not in unique_run_name("a/b", "image")


def test_old_tab_outputs_are_pruned_and_recent_ones_kept(tmp_path):
    old = new_workspace(tmp_path, "old-tab", "inspect")
    recent = new_workspace(tmp_path, "new-tab", "inspect")
    week_ago = __import__("time").time() - 8 * 86400
    for path in (old, old.parent):
        os.utime(path, (week_ago, week_ago))
    assert prune_workspaces(tmp_path) == 1
    assert not old.parent.exists() and recent.is_dir()
    assert prune_workspaces(tmp_path / "missing") == 0
