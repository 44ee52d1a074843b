"""The hard synthetic sets: tall rods and thin pins with faint defects, deterministic, masks on the part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalens.data.preprocessing import part_share
from anomalens.data.synthetic_tall import PARTS, TALL_DEFECT_TYPES, make_tall_synthetic_dataset, tall_synthetic_image


@pytest.mark.parametrize("part", sorted(PARTS))
def test_defects_are_faint_and_on_the_part(part):
    good, no_mask = tall_synthetic_image(7, None, part)
    assert good.shape == (*PARTS[part][0], 3) and not no_mask.any()
    for defect in TALL_DEFECT_TYPES:
        image, mask = tall_synthetic_image(11, defect, part)
        assert mask.any()
        # faint: the defect's pixels differ from their surroundings by a few percent, not by a bold stroke
        inside = image[mask].astype(float).mean()
        ring = image[np.roll(mask, 6, axis=1) & ~mask].astype(float).mean()
        assert abs(inside - ring) / ring < 0.25
    assert np.array_equal(tall_synthetic_image(7, None, part)[0], good)  # deterministic


def test_the_pin_covers_a_small_share_of_the_frame_and_the_rod_a_large_one():
    pin = np.median([part_share(tall_synthetic_image(s, None, "pin")[0]) for s in range(3)])
    rod = np.median([part_share(tall_synthetic_image(s, None, "rod")[0]) for s in range(3)])
    assert 0.08 < pin < 0.2 and 0.3 < rod < 0.5


def test_dataset_layout(tmp_path: Path):
    root = make_tall_synthetic_dataset(tmp_path, n_train=2, n_test_good=1, n_test_per_defect=1, part="pin")
    category = root / "synthetic_pin"
    assert len(list((category / "train" / "good").glob("*.png"))) == 2
    for defect in TALL_DEFECT_TYPES:
        mask = np.asarray(Image.open(category / "ground_truth" / defect / "000_mask.png"))
        assert mask.shape == (640, 320) and mask.max() == 255
    with pytest.raises(ValueError, match="unknown part"):
        tall_synthetic_image(0, None, "bolt")
