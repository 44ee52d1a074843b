"""More security of the web UI: no login beyond loopback, links in a data root, odd zip members and central
directories, and a login throttle that a flood of made-up names cannot reset."""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from anomalens.cli import main
from anomalens.errors import ConfigError, DataError
from anomalens.ui import UISettings, launch
from anomalens.ui.common import examples_for_run, stage_examples
from anomalens.ui.security import LoginThrottle, ZipLimits, require_login_beyond_loopback, safe_extract_zip


# ---- finding 1: a login beyond loopback ---------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_launch_refuses_a_host_beyond_loopback_without_login(tmp_path, host):
    settings = UISettings(results_dir=tmp_path / "results", data_roots=[tmp_path], sessions_root=tmp_path / "s")
    with pytest.raises(ConfigError, match=f"refusing to listen on {host} without a login") as info:
        launch(settings, host=host, port=1, auth=None, block=False)
    assert len(str(info.value).splitlines()) == 1
    assert not (tmp_path / "s").exists()  # refused before anything was prepared


def test_loopback_or_a_login_is_accepted():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        require_login_beyond_loopback(host, None)
    require_login_beyond_loopback("0.0.0.0", ("inspector", "pw"))


def test_demo_refuses_beyond_loopback_before_preparing(tmp_path, monkeypatch, capsys):
    prepared = []
    assets = SimpleNamespace(problems=[], data_root=tmp_path, image_run=None, video_run=None,
                             image_examples=[], video_examples=[])
    monkeypatch.setattr("anomalens.workflows.demo.prepare_demo", lambda *a, **kw: prepared.append(kw) or assets)
    monkeypatch.setattr("anomalens.ui.launch", lambda *a, **kw: pytest.fail("launched"))
    monkeypatch.delenv("ANOMALENS_UI_AUTH", raising=False)
    argv = ["demo", "--demo-dir", str(tmp_path / "d"), "--results-dir", str(tmp_path / "r"), "--host", "0.0.0.0"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anomalens: error: refusing to listen on 0.0.0.0") and len(err.splitlines()) == 1
    assert prepared == []  # no minutes of training before the refusal
    assert main(argv + ["--no-launch"]) == 0 and len(prepared) == 1  # nothing listens: nothing to refuse


# ---- finding 2: links inside a data root ------------------------------------------------------------------
@pytest.fixture()
def linked_run(tmp_path: Path) -> tuple[UISettings, Path, Path]:
    data = tmp_path / "data"
    good = data / "bottle" / "test" / "good"
    good.mkdir(parents=True)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP SECRET")
    (good / "000.png").symlink_to(secret)  # a file link to anything the server can read
    (good / "001.png").write_bytes(b"real image")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "000.png").write_bytes(b"TOP SECRET too")
    (data / "bottle" / "test" / "crack").symlink_to(elsewhere, target_is_directory=True)  # a type folder link
    run = tmp_path / "results" / "bottle_run"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"data_dir": str(data), "category": "bottle"}))
    settings = UISettings(results_dir=tmp_path / "results", data_roots=[data], sessions_root=tmp_path / "sessions")
    return settings, run, good / "001.png"


def test_examples_skip_links_inside_a_data_root(linked_run):
    settings, run, real = linked_run
    assert examples_for_run(settings, run, "image") == [real]
    staged = stage_examples(settings, run, "image", 0, "tab-1")
    assert [p.read_bytes() for p in staged] == [b"real image"]
    assert all(b"SECRET" not in p.read_bytes() for p in settings.sessions_dir.rglob("*") if p.is_file())


def test_an_example_replaced_by_a_link_is_not_copied(linked_run, monkeypatch):
    settings, run, real = linked_run
    link = real.parent / "000.png"  # as if 001.png had been listed, then swapped for a link
    monkeypatch.setattr("anomalens.ui.common.examples_for_run", lambda *a, **kw: [link])
    with pytest.raises(DataError, match="no longer available"):
        stage_examples(settings, run, "image", 0, "tab-1")
    assert all(b"SECRET" not in p.read_bytes() for p in settings.sessions_dir.rglob("*") if p.is_file())


# ---- findings 3 and 4: zips ---------------------------------------------------------------------------------
def test_zip_members_named_dot_or_empty_are_skipped(tmp_path):
    archive = tmp_path / "dots.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr(".", b"x")
        bundle.writestr(zipfile.ZipInfo(""), b"y")
        bundle.writestr("./.", b"z")
        bundle.writestr("ds/train/good/000.png", b"a")
    root = safe_extract_zip(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "ds" and (root / "train" / "good" / "000.png").read_bytes() == b"a"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ds"]


def _zip_of(path: Path, count: int, name_bytes: int = 10) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for i in range(count):
            bundle.writestr(f"ds/{i:0{name_bytes}d}.png", b"x")
    return path


def _as_zip64(path: Path, entries: int | None = None) -> Path:
    """Rewrite the end record as zip64 (the counts in a zip64 record, 0xFFFF... in the classic one)."""
    data = path.read_bytes()
    _, _, _, _, count, size, offset, _ = struct.unpack("<4s4H2LH", data[-22:])
    entries = count if entries is None else entries
    record_at = len(data) - 22
    zip64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, record_at, 1)
    classic = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(data[:record_at] + zip64 + locator + classic)
    return path


@pytest.fixture()
def no_zipfile(monkeypatch):
    """zipfile.ZipFile must not open a zip for reading: the check comes before it reads the central directory."""
    opened = zipfile.ZipFile

    def refuse(file, mode="r", *args, **kwargs):
        assert mode != "r", "zipfile.ZipFile read the central directory"
        return opened(file, mode, *args, **kwargs)

    monkeypatch.setattr("anomalens.ui.security.zipfile.ZipFile", refuse)


def test_zip_entry_count_is_checked_before_zipfile_reads_the_directory(tmp_path, no_zipfile):
    archive = _zip_of(tmp_path / "many.zip", 5)
    with pytest.raises(DataError, match=r"^many\.zip: the zip declares 5 entries; at most 3 are accepted$"):
        safe_extract_zip(archive, tmp_path / "out", ZipLimits(max_members=3))
    forged = _as_zip64(_zip_of(tmp_path / "forged.zip", 2), entries=10**9)
    with pytest.raises(DataError, match="declares 1000000000 entries"):
        safe_extract_zip(forged, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_central_directory_size_is_bounded(tmp_path, no_zipfile):
    archive = _zip_of(tmp_path / "long.zip", 5, name_bytes=200)  # ~250 bytes of directory per entry
    with pytest.raises(DataError, match=r"^long\.zip: the zip's table of contents is .* MB; at most"):
        safe_extract_zip(archive, tmp_path / "out", ZipLimits(max_members=10, max_directory_bytes_per_member=100))


def test_zip64_end_record_is_read_like_zipfile_reads_it(tmp_path):
    archive = _as_zip64(_zip_of(tmp_path / "z64.zip", 4))
    root = safe_extract_zip(archive, tmp_path / "ok")  # zipfile accepts the rewritten zip: the check agrees
    assert len(list(root.iterdir())) == 4
    with pytest.raises(DataError, match="declares 4 entries; at most 3"):
        safe_extract_zip(archive, tmp_path / "refused", ZipLimits(max_members=3))


# ---- finding 5: the login throttle under a flood of names ----------------------------------------------------
def test_a_throttled_name_stays_throttled_after_a_flood_of_other_names(caplog):
    caplog.set_level(logging.ERROR, logger="anomalens.ui")  # 12,000 warnings would only slow the test
    throttle = LoginThrottle("admin", "right", free_attempts=3, max_delay=0.01)

    async def flood() -> None:
        for _ in range(5):
            assert await throttle.check("admin", "guess") is False
        assert throttle.delay_for("admin") > 0
        for i in range(12_000):
            assert await throttle.check(f"made-up-{i}", "guess") is False

    asyncio.run(flood())
    assert throttle.delay_for("admin") > 0  # not reset by forgetting its record
    assert len(throttle._failures) <= 10_000
    assert len(throttle._locks) <= 10_000 and set(throttle._locks) <= set(throttle._failures)
    assert asyncio.run(throttle.check("admin", "right")) is True


def test_names_forgotten_first_are_the_least_recently_failed(monkeypatch):
    throttle = LoginThrottle("u", "p", max_names=4)
    clock = iter(range(100, 200))  # the throttle's clock only: the event loop keeps its own
    monkeypatch.setattr("anomalens.ui.security.time", SimpleNamespace(monotonic=lambda: float(next(clock))))
    for name in ("a", "b", "c", "d", "a", "e"):  # "a" failed again after "b": "b" is the oldest record
        asyncio.run(throttle.check(name, "x"))
    assert "b" not in throttle._failures and "b" not in throttle._locks
    assert {"a", "e"} <= set(throttle._failures) and len(throttle._failures) <= 4
