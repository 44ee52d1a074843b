"""One preprocessing for every image: any mode Pillow reads becomes RGB uint8 (3, H, W) at the chosen size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from anomalens.data.preprocessing import Preprocessing, list_images, parse_image_size, read_rgb, to_float
from anomalens.errors import ConfigError, DataError


@pytest.fixture
def gradient() -> np.ndarray:
    y, x = np.mgrid[0:40, 0:60]
    return np.stack([x * 4, y * 6, np.full_like(x, 128)], axis=2).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif", ".jpg", ".webp"])
def test_formats_decode_to_the_same_rgb(tmp_path, gradient, suffix):
    path = tmp_path / f"img{suffix}"
    Image.fromarray(gradient).save(path)
    rgb = read_rgb(path)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    tolerance = 16 if suffix in (".jpg", ".webp") else 0  # lossy formats (chroma subsampling)
    assert np.abs(rgb.astype(int) - gradient).max() <= tolerance


def test_grayscale_becomes_three_equal_channels(tmp_path, gradient):
    path = tmp_path / "gray.png"
    Image.fromarray(gradient[:, :, 0]).save(path)
    rgb = read_rgb(path)
    assert np.array_equal(rgb[:, :, 0], gradient[:, :, 0]) and np.array_equal(rgb[:, :, 0], rgb[:, :, 2])


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32768, 65535]], dtype=np.uint16).repeat(4, 0)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    rgb = read_rgb(path)
    assert rgb[0, :, 0].tolist() == [0, 128, 255]


def test_rgba_is_composited_on_black(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    rgb = read_rgb(path)
    assert rgb[0, 0].tolist() == [200, 200, 200] and rgb[3, 0].tolist() == [0, 0, 0]


def test_palette_image(tmp_path, gradient):
    path = tmp_path / "palette.png"
    Image.fromarray(gradient).convert("P", palette=Image.ADAPTIVE, colors=16).save(path)
    assert read_rgb(path).shape == (40, 60, 3)


def test_load_image_resizes_to_height_width(tmp_path, gradient):
    path = tmp_path / "img.png"
    Image.fromarray(gradient).save(path)
    tensor = Preprocessing(image_size=(32, 48)).load_image(path)
    assert tensor.shape == (3, 32, 48) and tensor.dtype == torch.uint8
    batch = Preprocessing(image_size=(32, 48)).load_images([path, path])
    assert batch.shape == (2, 3, 32, 48)
    assert to_float(batch).max() <= 1.0 and to_float(batch).dtype == torch.float32


def test_prepare_array_matches_loading_the_same_pixels(tmp_path, gradient):
    path = tmp_path / "img.png"
    Image.fromarray(gradient).save(path)
    prep = Preprocessing(image_size=(32, 32))
    assert torch.equal(prep.prepare_array(gradient), prep.load_image(path))
    with pytest.raises(DataError, match="expected an RGB image array"):
        prep.prepare_array(np.zeros((4, 4, 2), np.uint8))


def test_mask_is_resized_like_its_image_and_checked(tmp_path, gradient):
    image = tmp_path / "img.png"
    Image.fromarray(gradient).save(image)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "img_mask.png")
    loaded = Preprocessing(image_size=(20, 30)).load_mask(tmp_path / "img_mask.png", image_path=image)
    assert loaded.dtype == torch.bool and loaded.shape == (20, 30)
    assert loaded[10, 15] and not loaded[0, 0]
    Image.fromarray(mask[:, :50]).save(tmp_path / "bad_mask.png")
    with pytest.raises(DataError, match="bad_mask.png.*50x40.*60x40"):
        Preprocessing(image_size=(40, 60)).load_mask(tmp_path / "bad_mask.png", image_path=image)


def test_thin_defects_survive_the_mask_resize_and_large_ones_resize_as_before(tmp_path):
    """A 1-3 px scratch shrunk 4x covers a quarter of each pixel: "more than half covered" once erased it, and the
    image counted as all-normal pixels. Each trace now keeps its most covered pixels; a large defect is unchanged."""
    from anomalens.data.preprocessing import resize_mask
    from anomalens.metrics.regions import label_components

    mask = np.zeros((512, 512), bool)
    mask[100, 50:400] = True  # 1 px
    mask[200:202, 50:400] = True  # 2 px
    mask[300:303, 50:400] = True  # 3 px
    mask[400:460, 100:200] = True  # a blob
    for size in [(256, 256), (128, 128)]:
        resized = resize_mask(mask, size)
        labels, count = label_components(resized)
        assert count == 4, size
        # one row or two per scratch, along its whole length; the blob as "more than half covered" makes it
        scale = size[0] / 512
        for row in (100, 200, 300):
            trace = resized[max(0, int(row * scale) - 1) : int(row * scale) + 3]
            assert 1 <= trace.any(axis=1).sum() <= 2 and trace.any(axis=0).sum() >= int(340 * scale)
        blob = np.asarray(Image.fromarray(mask[380:480].astype(np.uint8) * 255).resize((size[1], int(100 * scale)), Image.BILINEAR)) > 127
        assert np.array_equal(resized[int(380 * scale) : int(480 * scale)], blob)


def test_masks_of_zeros_and_ones_are_read_as_defects(tmp_path, gradient):
    """0/1 masks (other datasets than MVTec) read as all-normal under "> 127", with no warning."""
    image = tmp_path / "img.png"
    Image.fromarray(gradient).save(image)

    def read_back(values: np.ndarray) -> np.ndarray:
        Image.fromarray(values).save(tmp_path / "img_mask.png")
        return Preprocessing(image_size=(40, 60)).load_mask(tmp_path / "img_mask.png", image_path=image).numpy()

    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 20:40] = 1
    assert np.array_equal(read_back(mask), mask == 1)
    mask[10:30, 20:40] = 255
    mask[0, 0] = 60  # JPEG-like ringing of a 0/255 mask stays below half
    assert np.array_equal(read_back(mask), mask == 255)
    # an empty mask stored as JPEG: faint noise of many values, no defect
    assert not read_back(np.random.default_rng(0).integers(0, 40, (40, 60)).astype(np.uint8)).any()


def test_unreadable_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.png.*0 bytes"):
        read_rgb(empty)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match="corrupt.png.*corrupt or unknown"):
        read_rgb(corrupt)
    with pytest.raises(DataError, match="missing.png.*not found"):
        read_rgb(tmp_path / "missing.png")


def test_parse_image_size():
    assert parse_image_size(256) == (256, 256)
    assert parse_image_size([128]) == (128, 128)
    assert parse_image_size([128, 96]) == (128, 96)
    for bad in ([16], [64, 5000], [1, 2, 3]):
        with pytest.raises(ConfigError, match="image_size"):  # a setting; the CLI names it --image-size
            parse_image_size(bad)


def test_list_images_skips_hidden_and_other_files(tmp_path, gradient):
    for name in ("b.png", "a.JPG", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.JPG", "b.png"]


def test_round_trip_of_settings():
    prep = Preprocessing(image_size=(64, 96))
    assert Preprocessing.from_dict(prep.to_dict()) == prep


def test_background_decoding_gives_the_same_batches_in_order_and_raises_in_the_caller(tmp_path):
    paths = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((20, 30, 3), i * 30, np.uint8)).save(path)
        paths.append(path)
    pre = Preprocessing(image_size=(16, 16))
    batches = pre.iter_images(paths, batch_size=3)
    assert len(batches) == 3  # known before decoding: progress bars show a total
    batches = list(batches)
    assert [len(b) for b in batches] == [3, 3, 1]
    assert torch.equal(torch.cat(batches), pre.load_images(paths))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        list(pre.iter_images([*paths, tmp_path / "bad.png"], batch_size=4))


def test_a_photo_stored_sideways_is_read_the_way_it_is_shown(tmp_path):
    """EXIF orientation 6 (a phone held upright stores the pixels turned): the image, its header size and its
    mask are read upright, so overlays and regions match what a viewer shows and where the mask was drawn."""
    from anomalens.data.pixels import decode_rgb, encoded_image_size, image_size_of, read_rgb

    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:16, :24] = 255  # stored top-left: shown top-right after turning 90 degrees clockwise
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    shown = read_rgb(path)
    assert shown.shape == (96, 64, 3) and image_size_of(path) == (96, 64)
    assert shown[:8, -8:].mean() > 240 and shown[:8, :8].mean() < 15
    data = path.read_bytes()
    assert np.array_equal(decode_rgb(data), shown) and encoded_image_size(data) == (96, 64)
    mask = np.zeros((96, 64), np.uint8)  # drawn on the image as shown
    mask[:24, -16:] = 255
    Image.fromarray(mask).save(tmp_path / "sideways_mask.png")
    loaded = Preprocessing(image_size=(96, 64)).load_mask(tmp_path / "sideways_mask.png", image_path=path)
    assert np.array_equal(loaded.numpy(), mask > 127)
    upright = tmp_path / "upright.jpg"
    image.save(upright, quality=95)  # no orientation: read as stored, as before
    assert read_rgb(upright).shape == (64, 96, 3) and image_size_of(upright) == (64, 96)


def test_header_sizes_of_pngs_decode_no_pixels(monkeypatch):
    """Looking for an EXIF orientation once made Pillow decode every PNG in full (its getexif reads past the pixels
    for a late eXIf chunk): the server's decode gate, which admits images by their header's size, came too late."""
    import io

    from PIL import ImageFile

    from anomalens.data.pixels import encoded_image_size

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((3000, 2000), np.uint8)).save(buffer, format="PNG")
    loads: list[int] = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self, *a: loads.append(1) or original(self, *a))
    assert encoded_image_size(buffer.getvalue()) == (3000, 2000) and loads == []
