"""Hostile data files (issue 14, points 1, 3 and 8): decompression bombs, truncated and mislabelled images,
FIFOs, images renamed as videos, zip bombs and forged zips, reversed label intervals, over-long names.

Each goes through the CLI (exit 2, one line naming the file, no traceback, nothing written) and through the
UI's handlers (a specific message, never the generic one).
"""

from __future__ import annotations

import shutil
import struct
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from _hostile import bomb_png, corpus_images, error_line, hostile_dataset, real_run, valid_png  # noqa: F401
from _ui_models import ui_workspace
from anomalens.cli import main
from anomalens.data.preprocessing import read_rgb
from anomalens.errors import AnomalensError, DataError
from anomalens.limits import MAX_IMAGE_PIXELS
from anomalens.ui import handlers as h
from anomalens.ui.security import GENERIC_ERROR, ZipLimits, safe_extract_zip, user_message

CORPUS_SIZE = 13


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    files = corpus_images(tmp_path_factory.mktemp("corpus"))
    assert len(files) == CORPUS_SIZE
    return files


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return ui_workspace(tmp_path_factory)


def test_every_bad_image_is_a_one_line_error_from_the_decoder(corpus):
    for label, path in corpus.items():
        with pytest.raises(DataError) as info:
            read_rgb(path)
        assert info.value.path == path, label
        assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="megapixels are accepted"):
        read_rgb(corpus["over the pixel cap 9000x9000"])
    with pytest.raises(DataError, match="megapixels are accepted|decompression bomb"):
        read_rgb(corpus["bomb 50000x50000"])


def test_predict_refuses_each_bad_image(real_run, corpus, tmp_path, capsys):
    for label, path in corpus.items():
        out = tmp_path / label.replace(" ", "_")
        assert main(["predict", "--checkpoint", str(real_run), str(path), "--output-dir", str(out)]) == 2, label
        assert str(path) in error_line(capsys), label
        assert not out.exists() or [p.name for p in out.iterdir()] == [], label


@pytest.mark.parametrize("label", ["bomb 50000x50000", "over the pixel cap 9000x9000", "truncated PNG",
                                   "text named .png", "empty file", "random bytes .bmp"])
def test_training_refuses_a_bad_image_in_train_good(hostile_dataset, corpus, tmp_path, capsys, label, tiny_model):
    root, category = hostile_dataset
    data = tmp_path / "data"
    shutil.copytree(root / category, data / category)
    bad = data / category / "train" / "good" / f"zz_{corpus[label].name}"
    shutil.copy(corpus[label], bad)
    results = tmp_path / "results"
    assert main(["train", "--data-dir", str(data), "--category", category, "--results-dir", str(results),
                 "--image-size", "64", "--device", "cpu", "--model", tiny_model, "--validation-fraction", "0"]) == 2
    assert str(bad) in error_line(capsys)
    assert not results.exists() or [p for p in results.iterdir()] == []


def test_a_bomb_as_a_mask_and_as_a_test_image(real_run, hostile_dataset, tmp_path, capsys):
    root, category = hostile_dataset
    data = tmp_path / "data"
    shutil.copytree(root / category, data / category)
    mask = next((data / category / "ground_truth").rglob("*_mask.png"))
    bomb_png(mask)
    assert main(["evaluate", "--checkpoint", str(real_run), "--data-dir", str(data), "--category", category]) == 2
    assert str(mask) in error_line(capsys)


def test_ui_inspection_gives_the_specific_message(workspace, corpus):
    settings = workspace.settings
    for label, path in corpus.items():
        if label.startswith("FIFO"):
            continue  # a browser upload is always a regular file
        with pytest.raises(AnomalensError) as info:
            h.inspect_images(settings, workspace.image_run, [path], key="hostile")
        message = user_message(info.value)
        assert message != GENERIC_ERROR and path.name in message, (label, message)


# ---- video ---------------------------------------------------------------------------------------------
def test_analyze_video_refuses_bad_fps_and_images_renamed_as_video(workspace, tmp_path, capsys):
    run = workspace.video_run
    video = next(workspace.video_category.glob("test/*/*.mp4"))
    for fps in ("-5", "0", "nan", "inf", "1e9"):
        assert main(["analyze-video", "--checkpoint", str(run), "--video", str(video), "--fps", fps,
                     "--output-dir", str(tmp_path / "out")]) == 2, fps
        assert "--fps" in error_line(capsys)
    png_as_mp4 = valid_png(tmp_path / "frame.png")
    png_as_mp4 = png_as_mp4.rename(tmp_path / "clip.mp4")
    bomb_as_mp4 = bomb_png(tmp_path / "bomb.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 500)
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(b"")
    fifo = tmp_path / "fifo.mp4"
    import os

    os.mkfifo(fifo)
    for path, words in ((png_as_mp4, "single image"), (bomb_as_mp4, ""), (garbage, "cannot read this video"),
                        (empty, "empty file"), (fifo, "not a regular file")):
        out = tmp_path / f"out_{path.name}"
        assert main(["analyze-video", "--checkpoint", str(run), "--video", str(path), "--output-dir", str(out)]) == 2
        line = error_line(capsys)
        assert str(path) in line and words in line, line
        assert not out.exists()


def test_ui_video_gives_the_specific_message(workspace, tmp_path):
    png_as_mp4 = valid_png(tmp_path / "frame.png").rename(tmp_path / "clip.mp4")
    with pytest.raises(AnomalensError) as info:
        h.analyze_video_file(workspace.settings, workspace.video_run, png_as_mp4, key="hostile")
    assert "single image" in user_message(info.value)


def test_frame_folder_with_a_bomb_frame(workspace, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        valid_png(frames / f"{i:03d}.png", 64, seed=i)
    bomb = bomb_png(frames / "003.png")
    assert main(["analyze-video", "--checkpoint", str(workspace.video_run), "--video", str(frames),
                 "--output-dir", str(tmp_path / "out")]) == 2
    assert str(bomb) in error_line(capsys)


def test_reversed_label_interval_is_named(workspace, tmp_path, capsys):
    data = tmp_path / "video"
    shutil.copytree(workspace.video_category, data / "conveyor")
    clip = next((data / "conveyor" / "test").glob("*/*.mp4"))
    sidecar = clip.with_name(f"{clip.stem}.labels.csv")
    sidecar.write_text("start_frame,end_frame\n40,10\n")
    assert main(["evaluate-video", "--checkpoint", str(workspace.video_run), "--data-dir", str(data),
                 "--category", "conveyor"]) == 2
    line = error_line(capsys)
    assert str(sidecar) in line and "reversed" in line and "10,40" in line


# ---- zip uploads ---------------------------------------------------------------------------------------
def _zip_of_zeros(path: Path, members: int, size: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for i in range(members):
            bundle.writestr(f"bottle/train/good/{i:04d}.png", b"\0" * size)
    return path


def _forged_zip(path: Path, real_size: int, declared: int) -> Path:
    """A zip whose headers declare ``declared`` bytes for a member that inflates to ``real_size``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("bottle/train/good/000.png", b"\0" * real_size)
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        at = data.find(signature)
        data[at + offset: at + offset + 4] = struct.pack("<I", declared)
    path.write_bytes(bytes(data))
    return path


def test_the_issue_zip_bomb_is_refused_and_deleted(workspace, tmp_path):
    """1,000 members of 1,000,000 zero bytes: 1 MB packed, 1 GB unpacked (point 1 of the issue)."""
    settings = workspace.settings
    archive = _zip_of_zeros(tmp_path / "bomb.zip", 1000, 1_000_000)
    assert archive.stat().st_size < 2_000_000
    before = set(settings.sessions_dir.rglob("*"))
    with pytest.raises(DataError, match="zip bomb") as info:
        h.choose_dataset(settings, None, str(archive), "hostile-zip", "image")
    assert user_message(info.value) != GENERIC_ERROR
    assert not archive.exists()  # the refused upload is deleted
    assert set(settings.sessions_dir.rglob("*")) <= before  # and nothing unpacked stays


def test_forged_sizes_stop_at_the_budget_while_extracting(tmp_path):
    archive = _forged_zip(tmp_path / "forged.zip", real_size=5_000_000, declared=1000)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="could not be extracted|declares"):
        safe_extract_zip(archive, out, ZipLimits(max_ratio=10**9))
    assert not out.exists()
    # a budget smaller than the real content: extraction stops there even though the headers are honest
    honest = _zip_of_zeros(tmp_path / "honest.zip", 3, 40_000)
    with pytest.raises(DataError, match="unpacks to"):
        safe_extract_zip(honest, tmp_path / "o2", ZipLimits(max_unpacked_bytes=100_000, max_ratio=10**9))
    assert not (tmp_path / "o2").exists()


def test_zip_member_count_and_long_names(tmp_path):
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as bundle:
        for i in range(30):
            bundle.writestr(f"d/{i}.txt", b"x")
    with pytest.raises(DataError, match="at most 20"):
        safe_extract_zip(many, tmp_path / "o", ZipLimits(max_members=20))
    long = tmp_path / "long.zip"
    with zipfile.ZipFile(long, "w") as bundle:
        bundle.writestr("d/" + "n" * 300 + ".png", b"x")
    with pytest.raises(DataError, match="longer than 255 bytes"):
        safe_extract_zip(long, tmp_path / "o3")


# ---- the Train view's settings and names ---------------------------------------------------------------
@pytest.mark.parametrize("advanced, words", [
    ({"surprise": 1}, "surprise is not a setting"),
    ({"batch_size": -1}, "batch_size"),
    ({"target_fpr": 2}, "target_fpr"),
    ({"results_dir": "/etc"}, "results_dir is not a setting"),
    ({"image_size": 64}, "image_size with its own field"),
    ({"epochs": "many"}, "epochs"),
])
def test_train_view_advanced_json_gives_a_specific_message(workspace, advanced, words):
    settings = workspace.settings
    dataset = h.choose_dataset(settings, "images/widget", None, "hostile", "image")
    with pytest.raises(AnomalensError) as info:
        h.train_model(settings, dataset, "autoencoder", image_size=64, advanced=advanced)
    message = user_message(info.value)
    assert message != GENERIC_ERROR and words in message, message


def test_very_long_folder_names(workspace, tmp_path, capsys):
    long = "x" * 300
    with pytest.raises(DataError, match="longer than 255 bytes") as info:
        h.choose_dataset(workspace.settings, long, None, "hostile", "image")
    assert user_message(info.value) != GENERIC_ERROR
    assert main(["train", "--data-dir", str(tmp_path / long), "--category", "c", "--results-dir", str(tmp_path / "r"),
                 "--device", "cpu"]) == 2
    assert "File name too long" in error_line(capsys) or "not found" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / long), str(tmp_path)]) == 2
    error_line(capsys)


def test_pixel_cap_is_the_same_everywhere():
    from anomalens.data import pixels, video_io

    assert pixels.check_image_pixels is video_io.check_image_pixels
    assert MAX_IMAGE_PIXELS >= 8192 * 8192  # a real 8k inspection image still works
    Image.MAX_IMAGE_PIXELS  # Pillow's own guard stays on (its error is turned into ours)


def test_only_the_accepted_formats_are_decoded(tmp_path):
    """Pillow would try every plugin it has (an EPS ran Ghostscript): only those of IMAGE_EXTENSIONS are used,
    whatever the file is named."""
    import io

    from anomalens.data.pixels import IMAGE_FORMATS, decode_rgb
    from test_serve_hardening import EPS

    assert IMAGE_FORMATS == ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
    for fmt in ("GIF", "PPM", "TGA", "PCX"):  # formats Pillow decodes without help
        path = tmp_path / f"{fmt.lower()}_named.png"
        Image.new("RGB", (40, 40), (90, 90, 90)).save(path, format=fmt)
        with pytest.raises(DataError, match="corrupt or unknown format; accepted: PNG, JPEG, BMP, TIFF, WEBP") as info:
            read_rgb(path)
        assert info.value.path == path
    with pytest.raises(DataError, match=r"^part\.eps: not an image anomalens reads"):
        decode_rgb(EPS, "part.eps")
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (90, 90, 90)).save(buffer, format="TIFF")
    assert decode_rgb(buffer.getvalue()).shape == (40, 40, 3)


def test_a_decoder_error_of_any_type_is_a_data_error_naming_the_file(tmp_path):
    from anomalens.data.pixels import decode_rgb
    from test_serve_hardening import tiff_with_rational_strip_offsets

    path = tmp_path / "damaged.tif"
    path.write_bytes(tiff_with_rational_strip_offsets())  # Pillow raises TypeError
    with pytest.raises(DataError, match=r"cannot decode image \('IFDRational'") as info:
        read_rgb(path)
    assert info.value.path == path
    with pytest.raises(DataError, match=r"^upload\.tif: cannot decode image"):
        decode_rgb(path.read_bytes(), "upload.tif")


def _tiff(path: Path, values) -> Path:
    Image.fromarray(values).save(path)
    return path


def test_float_and_32_bit_images_are_scaled_by_their_range_or_refused(tmp_path):
    """Float (mode F) and 32-bit integer (mode I) images are scaled by the smallest range that holds their values
    ([0, 1] for floats, 0-255, 0-65535, and 0-2147483647 for integers); NaN, infinities, negative values and
    floats above 65535 are refused naming the file (they all became black before)."""
    import numpy as np

    ramp = np.linspace(0.0, 1.0, 64 * 64).reshape(64, 64)
    expected = (ramp * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(read_rgb(_tiff(tmp_path / "unit.tif", ramp.astype(np.float32)))[:, :, 0], expected)
    f255 = (ramp * 255).astype(np.float32)
    assert np.array_equal(read_rgb(_tiff(tmp_path / "f255.tif", f255))[:, :, 0], (f255.astype(np.float64) + 0.5).astype(np.uint8))
    f16 = np.full((64, 64), 65535.0, np.float32)
    assert (read_rgb(_tiff(tmp_path / "f16.tif", f16)) == 255).all()
    int32 = np.full((64, 64), 2**31 - 1, np.int32)
    int32[0, 0], int32[0, 1] = 2**30, 0
    grey = read_rgb(_tiff(tmp_path / "i32.tif", int32))[:, :, 0]
    assert grey[0, 0] == 128 and grey[0, 1] == 0 and grey[1, 1] == 255  # was 255 for everything above 65535
    int16 = np.full((64, 64), 65535, np.int32)
    assert (read_rgb(_tiff(tmp_path / "i16.tif", int16)) == 255).all()
    for name, values, says in [
        ("nan.tif", np.full((64, 64), np.nan, np.float32), "float image holds NaN or infinite values (4096 pixels)"),
        ("inf.tif", np.full((64, 64), np.inf, np.float32), "float image holds NaN or infinite values"),
        ("negative.tif", np.full((64, 64), -5, np.float32), "float image holds negative values (lowest -5)"),
        ("negative_int.tif", np.full((64, 64), -5, np.int32), "32-bit integer image holds negative values (lowest -5)"),
        ("huge.tif", np.full((64, 64), 1e6, np.float32), "float image holds values up to 1e+06"),
    ]:
        path = _tiff(tmp_path / name, values)
        with pytest.raises(DataError) as info:
            read_rgb(path)
        assert info.value.path == path and says in info.value.message, info.value


def test_16_bit_scaling_in_float32_gives_the_float64_bits():
    import numpy as np

    from anomalens.data.pixels import _scaled_to_uint8

    every = np.arange(65536, dtype=np.uint16)
    assert np.array_equal(_scaled_to_uint8(every, 65535.0), np.clip(every / 65535 * 255.0 + 0.5, 0, 255).astype(np.uint8))
