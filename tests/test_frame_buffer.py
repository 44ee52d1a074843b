"""FrameBuffer (torch-free, shared by the library's video models and the runtime): the spill file's folder is the
caller's choice (``spill_dir``, threaded through ``VideoInferencer.predict_video``), stays anonymous, and a spill to a
system temp folder that is a tmpfs warns once; the mount table is read on known text."""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from anomalens.errors import ConfigError
from anomalens.inference import frame_buffer
from anomalens.inference.frame_buffer import FrameBuffer, mount_type
from anomalens.inference.video import VideoInferencer
from anomalens.metrics.threshold import Calibration

needs_proc = pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's files and mappings in /proc")

MOUNTS = r"""sysfs /sys sysfs rw,nosuid 0 0
/dev/sda1 / ext4 rw,relatime 0 0
tmpfs /tmp tmpfs rw,nosuid,nodev 0 0
/dev/sdb1 /tmp/disk xfs rw 0 0
/dev/sdc1 /mnt/my\040disk ext4 rw 0 0
ramfs /mnt/my\040disk/fast ramfs rw 0 0
garbage
"""


def _spill_handles(folder: Path) -> list[str]:
    """This process's open files and memory mappings in ``folder``: an unlinked file stays on disk while one is left
    (an anonymous file shows as ``<folder>/#<inode> (deleted)``)."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the listing's own descriptor, closed by now
            pass
    with open("/proc/self/maps") as maps:
        paths += [fields[5] for fields in (line.rstrip("\n").split(None, 5) for line in maps) if len(fields) == 6]
    return [path for path in paths if path.startswith(str(folder) + os.sep)]


def test_frame_buffer_closes_its_file_on_close_and_keeps_mapped_arrays_readable():
    with FrameBuffer((2, 3), np.float16, memory_limit=0) as buffer:
        buffer.append(np.arange(12, dtype=np.float16).reshape(2, 2, 3))
        frames = buffer.array()
        assert buffer.spilled and isinstance(frames, np.memmap)
    assert buffer.file.closed
    assert frames.tolist() == np.arange(12, dtype=np.float16).reshape(2, 2, 3).tolist()  # the mapping's own handle
    collected = FrameBuffer(memory_limit=0)
    collected.append(np.zeros((1, 4), np.uint8))
    file = collected.file
    del collected
    gc.collect()
    assert file.closed


@needs_proc
def test_a_spill_goes_to_the_chosen_folder_anonymously_and_reads_back_what_was_appended(tmp_path):
    batches = [np.arange(i * 24, (i + 1) * 24, dtype=np.float32).reshape(4, 2, 3) for i in range(3)]
    # room for one batch in RAM: the second spills it and everything after it
    with FrameBuffer((2, 3), np.float32, memory_limit=batches[0].nbytes, spill_dir=tmp_path) as buffer:
        buffer.append(batches[0])
        assert not buffer.spilled
        for batch in batches[1:]:
            buffer.append(batch)
        assert buffer.spilled
        assert os.readlink(f"/proc/self/fd/{buffer.file.fileno()}").startswith(f"{tmp_path}{os.sep}")
        assert os.fstat(buffer.file.fileno()).st_dev == os.stat(tmp_path).st_dev
        frames = buffer.array()
        assert isinstance(frames, np.memmap) and np.array_equal(frames, np.concatenate(batches))
    assert os.listdir(tmp_path) == []  # no name, ever
    del frames
    assert _spill_handles(tmp_path) == []


@needs_proc
def test_predict_video_spills_its_maps_to_the_chosen_folder(tmp_path):
    class Window:  # a convlstm's window graph: each frame's error map is its mean grey level
        def run(self, inputs):
            window = inputs["window"][0].astype(np.float32)  # (L, 3, H, W)
            return {"errors": np.broadcast_to(window.mean(axis=(1, 2, 3))[:, None, None], (len(window), 2, 2)).copy()}

    cal = Calibration(threshold=100.0, scale=10.0, target_fpr=0.01, validation_mean=50.0, validation_std=10.0,
                      validation_max=90.0, validation_count=60)
    meta = {"model": {"name": "convlstm"}, "calibration": cal.to_dict(), "input": {"image_size": [4, 4]},
            "video": {"sequence_length": 2, "stride": 1, "map_places_events": False}}
    inferencer = VideoInferencer(tmp_path, meta, {"window": Window()}, {})
    frames = [np.full((4, 4, 3), 10 * i, np.uint8) for i in range(6)]
    spill = tmp_path / "spill"
    spill.mkdir()
    with inferencer.predict_video(frames, fps=10, memory_limit=0, spill_dir=spill) as result:
        assert isinstance(result.maps, np.memmap) and _spill_handles(spill)
        assert np.array_equal(result.maps[:, 0, 0], np.arange(6) * 10.0) and result.scores.tolist() == list(np.arange(6) * 10.0)
    assert _spill_handles(spill) == [] and os.listdir(spill) == []


def test_mount_type_takes_the_longest_mount_point_holding_the_folder():
    assert mount_type(MOUNTS, "/tmp") == "tmpfs"
    assert mount_type(MOUNTS, "/tmp/anomalens") == "tmpfs"
    assert mount_type(MOUNTS, "/tmp/disk/spill") == "xfs"
    assert mount_type(MOUNTS, "/tmpfiles") == "ext4"  # a mount point holds whole path components only
    assert mount_type(MOUNTS, "/mnt/my disk/spill") == "ext4"  # \040: a space
    assert mount_type(MOUNTS, "/mnt/my disk/fast/spill") == "ramfs"
    assert mount_type(MOUNTS + "ramfs /tmp ramfs rw 0 0\n", "/tmp/x") == "ramfs"  # mounted over: the later one
    assert mount_type("", "/tmp") is None


@pytest.fixture()
def default_temp(tmp_path, monkeypatch) -> Path:
    """The system temp folder is ``tmp_path/temp``; the mount table, ``tmp_path/mounts``; nothing warned before."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(frame_buffer.tempfile, "tempdir", str(temp))
    monkeypatch.setattr(frame_buffer, "MOUNTS", tmp_path / "mounts")
    monkeypatch.setattr(frame_buffer, "_WARNED", set())
    yield temp


def _spill(spill_dir: Path | None = None) -> None:
    with FrameBuffer((2,), np.uint8, memory_limit=0, spill_dir=spill_dir) as buffer:
        buffer.append(np.ones((3, 2), np.uint8))
        assert buffer.array().tolist() == [[1, 1]] * 3


def test_spilling_to_a_system_temp_folder_in_ram_warns_once(default_temp, tmp_path, caplog):
    (tmp_path / "mounts").write_text(f"/dev/sda1 / ext4 rw 0 0\ntmpfs {os.path.realpath(default_temp)} tmpfs rw 0 0\n")
    with caplog.at_level(logging.WARNING, logger=frame_buffer.__name__):
        _spill(tmp_path)  # a folder the caller chose: their call
        FrameBuffer(memory_limit=1 << 20).append(np.ones((3, 2), np.uint8))  # no spill: nothing to say
        assert caplog.records == []
        _spill()
        _spill()
    assert len(caplog.records) == 1
    assert "tmpfs" in caplog.messages[0] and "spill_dir" in caplog.messages[0] and "TMPDIR" in caplog.messages[0]


def test_a_disk_folder_or_no_mount_table_spills_without_a_word(default_temp, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger=frame_buffer.__name__):
        _spill()  # no /proc (MOUNTS missing): no warning, no failure
        frame_buffer._WARNED.clear()
        (tmp_path / "mounts").write_text("/dev/sda1 / ext4 rw 0 0\n")
        _spill()
    assert caplog.records == []


def test_a_spill_folder_that_cannot_be_written_is_refused_at_once(tmp_path):
    # said when the buffer is made, not at its first spill, which may come an hour into a video
    with pytest.raises(ConfigError, match="not a folder"):
        FrameBuffer(spill_dir=tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="file"):
        FrameBuffer(spill_dir=tmp_path / "file")


def test_the_warning_is_given_once_when_buffers_spill_together(default_temp, tmp_path, caplog):
    import threading

    (tmp_path / "mounts").write_text(f"tmpfs {os.path.realpath(default_temp)} tmpfs rw 0 0\n")
    with caplog.at_level(logging.WARNING, logger=frame_buffer.__name__):
        threads = [threading.Thread(target=_spill) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(caplog.records) == 1
