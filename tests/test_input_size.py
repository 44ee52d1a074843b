"""Aspect-aware input size: the training images' aspect ratio at about the 256x256 pixel budget, more for small parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalens.data.preprocessing import (
    DEFAULT_PIXEL_BUDGET,
    MAX_ASPECT,
    MAX_BUDGET_GROWTH,
    SIZE_MULTIPLE,
    aspect_aware_size,
    native_size,
    part_share,
    pixel_budget,
)


def _part_on_background(height: int, width: int, box: tuple[int, int, int, int], seed: int = 0) -> np.ndarray:
    """A dark box (top, left, bottom, right) on a bright, slightly noisy background."""
    rng = np.random.default_rng(seed)
    image = 200 + rng.normal(0, 4, (height, width, 3))
    top, left, bottom, right = box
    image[top:bottom, left:right] = 60
    return np.clip(image, 0, 255).astype(np.uint8)


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


def test_part_share_is_the_area_that_differs_from_the_border():
    screw_like = _part_on_background(384, 384, (40, 170, 344, 214))  # 304 x 44 px: 9.1% of the frame
    assert part_share(screw_like) == pytest.approx(304 * 44 / 384**2, abs=0.01)
    filling = _part_on_background(300, 300, (20, 20, 280, 280))
    assert part_share(filling) == pytest.approx(260**2 / 300**2, abs=0.02)
    assert part_share(_part_on_background(200, 200, (0, 0, 0, 0))) == 0.0  # sensor noise is not a part


@pytest.mark.parametrize(
    "native, share, expected",
    [((900, 900), 0.65, DEFAULT_PIXEL_BUDGET),  # a large part: unchanged
     ((900, 900), 0.2, 2 * DEFAULT_PIXEL_BUDGET),  # half the reference share: twice the pixels
     ((2000, 2000), 0.01, int(MAX_BUDGET_GROWTH * DEFAULT_PIXEL_BUDGET)),  # growth capped
     ((384, 384), 0.05, 384 * 384),  # never beyond the native pixels
     ((100, 100), 0.05, DEFAULT_PIXEL_BUDGET)],  # nor below the default (small images are upsampled as before)
)
def test_small_parts_get_more_pixels_within_bounds(native, share, expected):
    assert pixel_budget(native, share) == expected


def test_training_gives_a_small_part_its_native_size(tmp_path: Path, tiny_model):
    from anomalens.workflows.runs import read_model_config
    from anomalens.workflows.train import train_image_model

    good = tmp_path / "pins" / "train" / "good"
    good.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(_part_on_background(320, 320, (30, 150 + i, 290, 180 + i), seed=i)).save(good / f"{i:03d}.png")
    result = train_image_model(tmp_path, "pins", tiny_model, tmp_path / "results")
    assert read_model_config(result.run_dir)["config"]["image_size"] == [320, 320]  # not 256 x 256


def test_part_mask_finds_the_part_and_grows_by_the_margin():
    from anomalens.data.preprocessing import part_mask, to_float

    image = torch.from_numpy(_part_on_background(64, 64, (20, 30, 40, 34))).permute(2, 0, 1)[None]
    mask = part_mask(to_float(image))[0]
    assert mask[20:40, 30:34].all() and not mask[:19].any() and not mask[:, :29].any()  # the box, give or take a pixel
    grown = part_mask(to_float(image), grow=2)[0]
    assert grown[18:42, 28:36].all() and not grown[:17].any() and not grown[:, :27].any()


def _pins(folder: Path, textured: str, count: int = 10) -> None:
    """Training images of a pin on a background; ``textured`` says which of them varies from image to image
    (sensor noise of 12 levels), the other is flat."""
    folder.mkdir(parents=True)
    for i in range(count):
        rng = np.random.default_rng(i)
        image = np.full((128, 128, 3), 200.0) + (rng.normal(0, 12, (128, 128, 3)) if textured == "background" else 0)
        pin = (slice(10, 118), slice(56 + i % 4, 72 + i % 4))
        image[pin] = 60 + (rng.normal(0, 12, (108, 16, 3)) if textured == "part" else 0)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")


@pytest.mark.parametrize("textured, region", [("background", "part"), ("part", "image")])
def test_training_chooses_the_score_region_on_the_validation_images(tmp_path: Path, textured, region):
    """The region follows where the held-out normal images' highest scores lie, not the part's share of the frame
    (the same thin pin both times): on a noisy background around a flat pin the background's peaks set every
    normal score, so the score is taken on the pin; on a flat background the whole map loses nothing."""
    from anomalens.workflows.runs import read_model_config
    from anomalens.workflows.train import train_image_model

    _pins(tmp_path / "pins" / "train" / "good", textured)
    result = train_image_model(tmp_path, "pins", "patchcore", tmp_path / "results", image_size=128, device="cpu",
                               validation_fraction=0.3)
    assert read_model_config(result.run_dir)["config"]["score_region"] == region
    forced = train_image_model(tmp_path, "pins", "patchcore", tmp_path / "results", image_size=64, device="cpu",
                               score_region="image" if region == "part" else "part")
    assert read_model_config(forced.run_dir)["config"]["score_region"] != region  # a given setting is kept


def test_models_saved_before_the_score_region_take_the_whole_map():
    from anomalens.models.image.patchcore import PatchCoreConfig

    assert PatchCoreConfig().score_region == "auto"  # decided when fitting, saved resolved
    saved_before = PatchCoreConfig.from_dict({**PatchCoreConfig.SAVED_BEFORE, "image_size": [64, 64]})
    assert saved_before.score_region == "image"
