"""Hostile inputs for the tests of issue 14, generated on the spot (nothing hostile is committed).

``bomb_png`` writes a tiny PNG whose header claims a huge size; ``corpus_images`` writes the whole set of bad
image files; ``real_run`` trains a real PatchCore model (64 px synthetic washers, a few seconds) whose
checkpoint the tampering tests mutate field by field.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalens.cli import main


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    """A PNG of a few dozen bytes whose header says ``width`` x ``height`` (the issue's 69-byte bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 16)) + _chunk(b"IEND", b"")
    path.write_bytes(data)
    return path


def valid_png(path: Path, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def corpus_images(folder: Path) -> dict[str, Path]:
    """Every kind of bad image file the tests feed to training, prediction and the UI (name -> path)."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files["bomb 50000x50000"] = bomb_png(folder / "bomb.png")
    files["over the pixel cap 9000x9000"] = bomb_png(folder / "large.png", 9000, 9000)
    files["bomb named .jpg"] = bomb_png(folder / "bomb_as.jpg")
    good = valid_png(folder / "_good.png", 64)
    data = good.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    files["truncated PNG"] = folder / "truncated.png"
    (folder / "header_only.png").write_bytes(data[:40])
    files["PNG header only"] = folder / "header_only.png"
    (folder / "text.png").write_text("hello, not an image")
    files["text named .png"] = folder / "text.png"
    (folder / "empty.png").write_bytes(b"")
    files["empty file"] = folder / "empty.png"
    (folder / "random.bmp").write_bytes(np.random.default_rng(1).integers(0, 255, 4096, dtype=np.uint8).tobytes())
    files["random bytes .bmp"] = folder / "random.bmp"
    (folder / "zip.jpg").write_bytes(b"PK\x03\x04" + b"\0" * 200)
    files["zip named .jpg"] = folder / "zip.jpg"
    html = folder / "page.webp"
    html.write_text("<html><script>alert(1)</script></html>")
    files["HTML named .webp"] = html
    tiff = folder / "tiff.tif"
    Image.new("RGB", (8, 8)).save(tiff)
    raw = bytearray(tiff.read_bytes())
    files["TIFF with a damaged body"] = tiff
    tiff.write_bytes(bytes(raw[:12]) + b"\xff" * (len(raw) - 12))
    fifo = folder / "fifo.png"
    os.mkfifo(fifo)
    files["FIFO named .png (would block)"] = fifo
    device = folder / "zero.png"
    device.symlink_to("/dev/zero")
    files["link to /dev/zero"] = device
    good.unlink()
    return files


@pytest.fixture(scope="session")
def hostile_dataset(tmp_path_factory) -> tuple[Path, str]:
    from anomalens.data.synthetic import make_synthetic_image_dataset

    root = make_synthetic_image_dataset(tmp_path_factory.mktemp("hostile_data") / "data", n_train=8, n_test_good=2,
                                        n_test_per_defect=1, image_size=64)
    return root, "synthetic_widget"


@pytest.fixture(scope="session")
def real_run(hostile_dataset, tmp_path_factory) -> Path:
    """A real PatchCore run (saved by `anomalens train`), never modified: tests copy it before tampering."""
    root, category = hostile_dataset
    results = tmp_path_factory.mktemp("hostile_results")
    assert main(["train", "--data-dir", str(root), "--category", category, "--results-dir", str(results),
                 "--image-size", "64", "--device", "cpu"]) == 0
    return next(p for p in results.iterdir() if not p.name.startswith("."))


def copy_run(run: Path, target: Path) -> Path:
    shutil.copytree(run, target)
    return target


def error_line(capsys) -> str:
    """The one error line of a refused command (progress bars may come first); fails on a traceback."""
    captured = capsys.readouterr()
    err = captured.err
    assert "Traceback" not in err and "Traceback" not in captured.out, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines, "no error line"
    line = lines[-1]
    assert line.startswith("anomalens: error: "), line
    return line
