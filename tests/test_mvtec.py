"""MVTec-layout discovery, the seeded validation split and decoding the test set with masks."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from anomalens.data.mvtec import discover_category, load_test_set, split_train_validation
from anomalens.data.preprocessing import Preprocessing
from anomalens.data.synthetic import make_synthetic_image_dataset
from anomalens.errors import DataError
from anomalens.progress import Reporter


@pytest.fixture
def small_dataset(tmp_path):
    root = make_synthetic_image_dataset(tmp_path, n_train=6, n_test_good=2, n_test_per_defect=2, image_size=64)
    return root, root / "synthetic_widget"


def test_split_is_seeded_disjoint_and_complete():
    paths = [f"img_{i:03d}.png" for i in range(50)]
    train, val = split_train_validation(paths, 0.1, seed=3)
    assert len(val) == 5 and len(train) == 45
    assert set(train).isdisjoint(val) and set(train) | set(val) == set(paths)
    assert split_train_validation(paths, 0.1, seed=3) == (train, val)
    assert split_train_validation(paths, 0.1, seed=4)[1] != val


def test_split_keeps_one_on_each_side_and_rejects_bad_fractions():
    train, val = split_train_validation(["a", "b"], 0.01, seed=0)
    assert len(train) == 1 and len(val) == 1
    assert split_train_validation(["a", "b", "c"], 0.0)[1] == []
    with pytest.raises(DataError, match="validation fraction"):
        split_train_validation(["a", "b"], 1.0)


def test_discover_and_load_test_set(small_dataset):
    root, category_dir = small_dataset
    found = discover_category(root, "synthetic_widget", require_test=True)
    assert len(found.train_paths) == 6 and len(found.test_samples) == 10
    test = load_test_set(found, Preprocessing(image_size=(48, 48)))
    assert test.images.shape == (10, 3, 48, 48)
    assert test.labels.tolist() == [0 if t == "good" else 1 for t in test.defect_types]
    assert test.has_mask.all()
    normal = test.labels == 0
    assert not test.masks[normal].any() and all(test.masks[i].any() for i in np.flatnonzero(~normal))


def test_defect_type_without_masks_is_reported_and_left_unknown(small_dataset):
    root, category_dir = small_dataset
    shutil.rmtree(category_dir / "ground_truth" / "spot")
    found = discover_category(root, "synthetic_widget", require_test=True)
    assert found.types_without_masks == ["spot"]
    messages = []
    test = load_test_set(found, Preprocessing(image_size=(48, 48)), Reporter(callback=lambda *a: messages.append(a[0]), show_tqdm=False))
    spot = np.array([t == "spot" for t in test.defect_types])
    assert not test.has_mask[spot].any() and test.has_mask[~spot].all()
    assert any("spot" in m and "no masks" in m for m in messages)


def test_a_missing_mask_file_is_named(small_dataset):
    root, category_dir = small_dataset
    (category_dir / "ground_truth" / "scratch" / "001_mask.png").unlink()
    with pytest.raises(DataError, match="scratch/001.png"):
        discover_category(root, "synthetic_widget")


def test_layout_errors_name_the_folder(small_dataset, tmp_path):
    root, category_dir = small_dataset
    with pytest.raises(DataError, match="category 'nope' not found.*synthetic_widget"):
        discover_category(root, "nope")
    shutil.rmtree(category_dir / "test" / "good")
    with pytest.raises(DataError, match="no normal"):
        discover_category(root, "synthetic_widget", require_test=True)
    for f in (category_dir / "train" / "good").iterdir():
        f.unlink()
    with pytest.raises(DataError, match="train/good.*no images"):
        discover_category(root, "synthetic_widget")


def test_real_bottle_layout(mvtec_root):
    found = discover_category(mvtec_root, "bottle", require_test=True)
    types = {s.defect_type for s in found.test_samples}
    assert {"good", "broken_large", "broken_small", "contamination"} <= types
    assert len(found.train_paths) > 100 and found.types_without_masks == []
