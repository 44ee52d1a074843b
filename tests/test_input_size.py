"""Aspect-aware input size: the training images' aspect ratio at about the 256x256 pixel budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalens.data.preprocessing import MAX_ASPECT, SIZE_MULTIPLE, aspect_aware_size, native_size


@pytest.mark.parametrize(
    "native, expected",
    [((256, 256), (256, 256)), ((1024, 1024), (256, 256)), ((1260, 500), (416, 160)), ((480, 640), (224, 288)),
     ((500, 1260), (160, 416))],
)
def test_size_keeps_the_aspect_at_the_pixel_budget(native, expected):
    size = aspect_aware_size(*native)
    assert size == expected
    assert size[0] % SIZE_MULTIPLE == 0 and size[1] % SIZE_MULTIPLE == 0
    assert abs(size[0] * size[1] / 256**2 - 1) < 0.12  # about the same cost as 256x256
    assert abs(np.log(size[0] / size[1]) - np.log(native[0] / native[1])) < 0.15


def test_extreme_aspects_are_capped_and_sides_stay_usable():
    h, w = aspect_aware_size(10_000, 100)
    assert h / w <= MAX_ASPECT + 1e-9 and w >= SIZE_MULTIPLE
    with pytest.raises(ValueError):
        aspect_aware_size(0, 10)


def test_native_size_is_the_median_of_the_headers(tmp_path: Path):
    for i, (h, w) in enumerate([(300, 100), (310, 100), (900, 900)]):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / f"{i}.png")
    assert native_size(sorted(tmp_path.glob("*.png"))) == (310, 100)


def test_training_records_the_aspect_aware_size(tmp_path: Path, tiny_model):
    from anomalens.workflows.runs import read_model_config
    from anomalens.workflows.train import train_image_model

    rng = np.random.default_rng(0)
    good = tmp_path / "tall" / "train" / "good"
    good.mkdir(parents=True)
    for i in range(12):
        Image.fromarray((rng.random((252, 100, 3)) * 50 + 100).astype(np.uint8)).save(good / f"{i:03d}.png")
    result = train_image_model(tmp_path, "tall", tiny_model, tmp_path / "results")
    assert read_model_config(result.run_dir)["config"]["image_size"] == [416, 160]
    assert result.detector.preprocessing.load_image(good / "000.png").shape == (3, 416, 160)
