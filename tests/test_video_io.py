"""Video decoding and encoding: frame counts, codecs, streaming, and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomalens.data.preprocessing import Preprocessing
from anomalens.data.video_io import open_clip, probe_video, write_video
from anomalens.errors import DataError
from anomalens.progress import Reporter

PREP = Preprocessing(image_size=(32, 48))


def _frames(n: int, h: int = 40, w: int = 56) -> list[np.ndarray]:
    """Frames whose brightness encodes their index, so order can be checked after lossy coding."""
    return [np.full((h, w, 3), 10 + 8 * i, dtype=np.uint8) for i in range(n)]


def _brightness(frames) -> list[float]:
    return [float(np.asarray(f, dtype=np.float64).mean()) for f in frames]


def test_write_then_read_roundtrip_keeps_count_order_and_codec(tmp_path):
    path = write_video(tmp_path / "a.mp4", _frames(20), fps=12)
    info = probe_video(path)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["frames"] == 20 and info["fps"] == pytest.approx(12)
    assert info["faststart"] is True
    clip = open_clip(path, PREP)
    assert clip.fps == pytest.approx(12) and clip.num_frames == 20
    prepared = list(clip)
    assert len(prepared) == 20 and tuple(prepared[0].shape) == (3, 32, 48)
    levels = _brightness(clip.iter_native())
    assert np.all(np.diff(levels) > 4)  # strictly brighter frame after frame: order kept
    assert len(list(clip)) == 20  # re-iterable


def test_odd_size_is_padded_to_even(tmp_path):
    info = probe_video(write_video(tmp_path / "odd.mp4", _frames(3, 31, 45), fps=5))
    assert (info["width"], info["height"]) == (46, 32)


def test_segment_selects_frames_without_seeking(tmp_path):
    clip = open_clip(write_video(tmp_path / "a.mp4", _frames(20), fps=10), PREP)
    tail = clip.segment(15)
    assert tail.num_frames == 5
    full, part = _brightness(clip.iter_native()), _brightness(tail.iter_native())
    assert part == pytest.approx(full[15:], abs=1e-6)
    assert len(list(clip.segment(3, 7))) == 4


def test_frame_folder_natural_order_and_fps(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    for i, frame in enumerate(_frames(12)):
        Image.fromarray(frame).save(folder / f"f{i}.png")  # f10 must come after f9
    clip = open_clip(folder, PREP, fps=7.5)
    assert clip.fps == clip.stated_fps == 7.5 and clip.num_frames == 12 and clip.name == "clip"
    assert np.all(np.diff(_brightness(clip.iter_native())) > 0)
    unstated = open_clip(folder, PREP)  # image files state no rate: 25 for timing, unknown for motion
    assert unstated.fps == 25.0 and unstated.stated_fps is None


def test_mixed_frame_sizes_name_the_frame(tmp_path):
    folder = tmp_path / "clip"
    folder.mkdir()
    Image.fromarray(_frames(1)[0]).save(folder / "000.png")
    Image.fromarray(_frames(1, 20, 20)[0]).save(folder / "001.png")
    with pytest.raises(DataError, match="001.png"):
        open_clip(folder, PREP)


def test_empty_folder_and_unreadable_file_are_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no frames"):
        open_clip(tmp_path / "empty", PREP)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video at all" * 10)
    with pytest.raises(DataError, match="bad.mp4"):
        open_clip(bad, PREP)
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(DataError, match="0 bytes"):
        open_clip(tmp_path / "zero.mp4", PREP)
    with pytest.raises(DataError, match="not found"):
        open_clip(tmp_path / "missing.mp4", PREP)


def test_truncated_video_yields_decoded_frames_and_warns_once(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(30)]  # noise: big packets
    data = write_video(tmp_path / "full.mp4", frames, fps=10).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    messages: list[str] = []
    reporter = Reporter(callback=lambda stage, *_: messages.append(stage), show_tqdm=False)
    clip = open_clip(cut, PREP, reporter)
    got = len(list(clip))
    assert 0 < got < 30 and clip.truncated
    assert clip.num_frames == got
    list(clip)
    warnings = [m for m in messages if "truncated" in m]
    assert len(warnings) == 1 and "cut.mp4" in warnings[0]


def test_write_video_is_atomic_on_failure(tmp_path):
    target = tmp_path / "out.mp4"

    def broken():
        yield _frames(1)[0]
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        write_video(target, broken(), fps=5)
    assert list(tmp_path.iterdir()) == []
