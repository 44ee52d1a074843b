"""The built-in synthetic dataset: MVTec layout, masks that match, deterministic, with normal variation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from anomalens.data.mvtec import discover_category
from anomalens.data.synthetic import DEFECT_TYPES, make_synthetic_image_dataset, synthetic_image


def test_layout_and_counts(synthetic_image_dataset):
    root, category = synthetic_image_dataset
    found = discover_category(root, category, require_test=True)
    assert len(found.train_paths) == 40
    by_type: dict[str, int] = {}
    for sample in found.test_samples:
        by_type[sample.defect_type] = by_type.get(sample.defect_type, 0) + 1
        assert (sample.mask_path is None) == (sample.defect_type == "good")
    assert by_type == {"good": 8, **{t: 4 for t in DEFECT_TYPES}}
    assert found.types_without_masks == []


def test_masks_mark_real_changes_of_matching_size(synthetic_image_dataset):
    root, category = synthetic_image_dataset
    for defect in DEFECT_TYPES:
        for path in sorted((root / category / "test" / defect).glob("*.png")):
            image = np.asarray(Image.open(path))
            mask = np.asarray(Image.open(root / category / "ground_truth" / defect / f"{path.stem}_mask.png")) > 127
            assert image.shape == (128, 128, 3) and mask.shape == (128, 128)
            assert 4 <= mask.sum() <= 0.1 * mask.size  # a small defect, but visible


def test_defect_changes_pixels_only_inside_its_mask():
    normal, empty = synthetic_image(seed=7, image_size=96)
    for defect in DEFECT_TYPES:
        broken, mask = synthetic_image(seed=7, image_size=96, defect=defect)
        assert not empty.any() and mask.any()
        diff = np.abs(broken.astype(int) - normal.astype(int)).max(axis=2)
        # the defect draws random numbers before the sensor noise, so compare means, not pixels
        assert diff[mask].mean() > 3 * max(diff[~mask].mean(), 1.0)


def _digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*.png")):
        h.update(path.relative_to(folder).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed_and_different_for_another(tmp_path):
    a = make_synthetic_image_dataset(tmp_path / "a", n_train=3, n_test_good=1, n_test_per_defect=1, image_size=64, seed=5)
    b = make_synthetic_image_dataset(tmp_path / "b", n_train=3, n_test_good=1, n_test_per_defect=1, image_size=64, seed=5)
    c = make_synthetic_image_dataset(tmp_path / "c", n_train=3, n_test_good=1, n_test_per_defect=1, image_size=64, seed=6)
    assert _digest(a / "synthetic_widget") == _digest(b / "synthetic_widget")
    assert _digest(a / "synthetic_widget") != _digest(c / "synthetic_widget")


def test_normal_images_vary_like_real_photos(synthetic_image_dataset):
    root, category = synthetic_image_dataset
    paths = sorted((root / category / "train" / "good").glob("*.png"))[:6]
    images = np.stack([np.asarray(Image.open(p)).astype(float) for p in paths])
    # position, rotation, light and background change: images differ clearly from each other
    pairwise = [np.abs(images[i] - images[j]).mean() for i in range(6) for j in range(i + 1, 6)]
    assert min(pairwise) > 5.0


def test_unknown_defect_and_tiny_size_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown defect"):
        synthetic_image(0, 64, defect="dent")
    with pytest.raises(ValueError, match="at least 32"):
        make_synthetic_image_dataset(tmp_path, image_size=16)
