"""Defect regions and masks are given in pixels of the image as the user gave it, not of the model's input: by the
library (``predict``), the torch-free runtime and the server alike, for images of another size and aspect."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from anomalens.metrics.regions import find_regions, mask_at_size, pixel_cells

IMAGE_SIZE = (200, 200)  # (height, width): not the model's 64x64 (the aspect is the training images', which it detects)


def _keys(regions) -> list[tuple]:
    return sorted((r.x, r.y, r.width, r.height, r.area, r.peak_score) for r in regions)


def test_regions_in_image_pixels_are_those_of_the_map_resized_to_the_image():
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(3, 16, 2))
        size = (int(h * rng.integers(1, 5) + rng.integers(0, 3)), int(w * rng.integers(1, 5) + rng.integers(0, 3)))
        score_map = rng.random((h, w)).astype(np.float32)
        resized = score_map[np.ix_(pixel_cells(size[0], h), pixel_cells(size[1], w))]
        assert _keys(find_regions(score_map, 0.7, image_size=size)) == _keys(find_regions(resized, 0.7))
        assert np.array_equal(mask_at_size(score_map > 0.7, size), resized > 0.7)
        for region in find_regions(score_map, 0.7, image_size=size):  # the peak lies in its box, on its value
            assert region.x <= region.peak_x < region.x + region.width and region.y <= region.peak_y < region.y + region.height
            assert resized[region.peak_y, region.peak_x] == region.peak_score


def test_a_known_block_scaled_to_the_image():
    score_map = np.zeros((4, 6), np.float32)
    score_map[1:3, 2:4] = 1.0
    score_map[1, 2] = 2.0
    (region,) = find_regions(score_map, 0.5, image_size=(8, 18))  # 2 image rows and 3 columns per cell
    assert (region.x, region.y, region.width, region.height, region.area) == (6, 2, 6, 4, 24)
    assert (region.peak_score, region.peak_x, region.peak_y) == (2.0, 7, 2)  # the centre of the peak's cell
    assert find_regions(score_map, 0.5, min_area=25, image_size=(8, 18)) == []  # the area counts image pixels
    (same,) = find_regions(score_map, 0.5)  # without the image's size: the map's own pixels, as before
    assert (same.x, same.y, same.width, same.height, same.area, same.peak_x, same.peak_y) == (2, 1, 2, 2, 4, 2, 1)


def test_an_image_smaller_than_the_map_keeps_only_regions_its_pixels_fall_in():
    score_map = np.zeros((8, 8), np.float32)
    score_map[0, 0] = 1.0  # no pixel of a 4x4 image has this cell nearest
    score_map[1:4, 1:4] = 1.0
    assert pixel_cells(4, 8).tolist() == [1, 3, 5, 7]
    (region,) = find_regions(score_map, 0.5, image_size=(4, 4))
    assert (region.x, region.y, region.width, region.height, region.area) == (0, 0, 2, 2, 4)
    speck = np.zeros((256, 256), np.float32)
    speck[100, 100] = 1.0  # a 128-pixel image reaches only odd cells of a 256-pixel map
    assert find_regions(speck, 0.5, image_size=(128, 128)) == []
    assert find_regions(speck, 0.5, image_size=(256, 256))[0].area == 1


def test_arrays_of_any_channel_count_give_regions_in_their_own_size(patchcore_run):
    from anomalens.models.base import load_detector
    from anomalens.workflows.predict import predict_images

    detector = load_detector(patchcore_run / "model")
    rgba = np.full((90, 150, 4), 200, np.uint8)  # RGBA and grey arrays, as a camera SDK may give them
    grey = np.full((70, 110), 90, np.uint8)
    results = predict_images(detector, [rgba, grey]).results  # a detector object: no files, the header-free path
    assert [r.image_size for r in results] == [(90, 150), (70, 110)]


def _flat_category(root, size: tuple[int, int], count: int = 12):
    """Grey parts with a little noise (``size`` = (height, width)): every pixel's normal range is known."""
    rng = np.random.default_rng(0)
    for split in ("train/good", "test/good"):
        folder = root / "flat" / split
        folder.mkdir(parents=True)
        for i in range(count if split.startswith("train") else 2):
            pixels = np.clip(rng.normal(120, 3, (*size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def test_predict_puts_a_known_defect_where_it_is_in_a_larger_image(tiny_model, tmp_path):
    from anomalens.workflows.predict import predict_images
    from anomalens.workflows.train import train_image_model

    root = _flat_category(tmp_path / "data", (60, 150))
    run = train_image_model(root, "flat", tiny_model, tmp_path / "runs", image_size=(32, 64), seed=0).run_dir
    image = np.full((120, 300, 3), 120, np.uint8)  # twice the training images' size, another aspect than 32x64
    image[40:72, 200:232] = 250  # the defect: rows 40-71, columns 200-231
    Image.fromarray(image).save(tmp_path / "part.png")
    report = predict_images(run, [tmp_path / "part.png"], output_dir=tmp_path / "p", save_masks=True)
    (result,) = report.results
    assert result.anomalous and result.image_size == (120, 300)
    top = result.regions[0]
    # the model sees 32x64 (a pixel is 3.75 x 4.69 of the image's) and pools by 4, interpolating between pooled cells:
    # the box holds the defect and may reach two pooled cells (30 rows, 37 columns) beyond it
    assert 40 - 30 <= top.y <= 40 and 72 <= top.y + top.height <= 72 + 30
    assert 200 - 37 <= top.x <= 200 and 232 <= top.x + top.width <= 232 + 37
    assert 40 <= top.peak_y < 72 and 200 <= top.peak_x < 232
    mask = np.asarray(Image.open(result.mask_path)) > 0
    assert mask.shape == (120, 300) and mask.sum() == sum(r.area for r in result.regions)
    assert mask[40:72, 200:232].all()
    entry = json.loads((tmp_path / "p" / "predictions.json").read_text())["results"][0]
    assert (entry["image_height"], entry["image_width"]) == (120, 300)
    assert entry["regions"] == [r.to_dict() for r in result.regions]


def test_library_runtime_and_server_path_give_the_same_regions_in_image_pixels(
        patchcore_run, onnx_bundle, synthetic_image_dataset, tmp_path):
    from anomalens.inference import Inferencer
    from anomalens.workflows.predict import predict_images

    root, category = synthetic_image_dataset
    path = tmp_path / "spot.png"  # a flagged test image, enlarged from 128 to 200 pixels
    Image.open(root / category / "test" / "spot" / "000.png").convert("RGB").resize((200, 200), Image.BILINEAR).save(path)
    (library,) = predict_images(patchcore_run, [path], output_dir=tmp_path / "p", save_masks=True, device="cpu").results
    assert library.image_size == (200, 200) and library.regions
    assert max(r.x + r.width for r in library.regions) > 64  # beyond the model's 64 pixels

    inferencer = Inferencer.load(onnx_bundle)
    (runtime,) = inferencer.predict([path])  # the exported model: the same regions, in the same pixels
    assert runtime.image_size == (200, 200)
    assert [(r.x, r.y, r.width, r.height, r.area, r.peak_x, r.peak_y) for r in runtime.regions] == \
        [(r.x, r.y, r.width, r.height, r.area, r.peak_x, r.peak_y) for r in library.regions]
    assert [r.peak_score for r in runtime.regions] == pytest.approx([r.peak_score for r in library.regions], rel=1e-4)
    assert np.array_equal(runtime.image_mask(), np.asarray(Image.open(library.mask_path)) > 0)

    array, size = inferencer.prepare_sized(path.read_bytes())  # what the server does: sizes travel with the pixels
    (served,) = inferencer.predict_prepared(np.stack([array]), [size])
    assert served.to_dict()["regions"] == runtime.to_dict()["regions"] and served.to_dict()["image_width"] == 200
    (unsized,) = inferencer.predict_prepared(np.stack([array]))  # arrays resized by the caller: the model's pixels
    assert unsized.image_size is None and "image_width" not in unsized.to_dict()
    assert all(r.x + r.width <= 64 and r.y + r.height <= 64 for r in unsized.regions)
