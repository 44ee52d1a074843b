"""Image datasets in the MVTec AD layout, and the seeded train / validation split.

Layout::

    <data_dir>/<category>/train/good/*.png
    <data_dir>/<category>/test/good/*.png
    <data_dir>/<category>/test/<defect_type>/*.png
    <data_dir>/<category>/ground_truth/<defect_type>/<stem>_mask.png   (optional)

The validation split is carved out of ``train/good`` and is the only data that model selection, early
stopping and the threshold ever see. ``test/`` is read only by evaluation and benchmarks.

>>> category = discover_category("../shared/data/mvtec_ad", "bottle")   # doctest: +SKIP
>>> train, validation = split_train_validation(category.train_paths, 0.1, seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from anomalens.data.preprocessing import Preprocessing, list_images
from anomalens.errors import DataError
from anomalens.progress import SILENT, Reporter

log = logging.getLogger(__name__)

NORMAL_TYPE = "good"


@dataclass(frozen=True)
class TestSample:
    path: Path
    defect_type: str
    mask_path: Path | None

    @property
    def label(self) -> int:
        return 0 if self.defect_type == NORMAL_TYPE else 1


@dataclass
class ImageCategory:
    """What was found on disk for one category; nothing is decoded yet."""

    root: Path
    train_paths: list[Path]
    test_samples: list[TestSample] = field(default_factory=list)
    types_without_masks: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.root.name


@dataclass
class LabelledImages:
    """Decoded test images with labels and, where masks exist, pixel ground truth."""

    images: torch.Tensor  # uint8 (N, 3, H, W)
    labels: np.ndarray  # (N,) 0 normal / 1 anomalous
    defect_types: list[str]
    paths: list[Path]
    masks: torch.Tensor  # bool (N, H, W); all False for normal images
    has_mask: np.ndarray  # (N,) whether the pixel truth of sample i is known


def discover_category(data_dir: str | Path, category: str, require_test: bool = False) -> ImageCategory:
    """Find the files of ``category``; raise :class:`DataError` naming what is missing."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError("data directory not found", data_dir)
    root = data_dir / category
    if not root.is_dir():
        found = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and (p / "train").is_dir())
        hint = f" (categories here: {', '.join(found)})" if found else ""
        raise DataError(f"category {category!r} not found{hint}", root)
    good = root / "train" / NORMAL_TYPE
    if not good.is_dir():
        raise DataError("missing train/good/: expected the MVTec AD layout <category>/train/good/*.png", root)
    train_paths = list_images(good)
    if not train_paths:
        raise DataError("train/good/ holds no images (png, jpg, bmp, tif)", good)
    result = ImageCategory(root=root, train_paths=train_paths)
    test_dir = root / "test"
    if not test_dir.is_dir():
        if require_test:
            raise DataError("missing test/: expected test/good/ and test/<defect_type>/", root)
        return result
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        paths = list_images(type_dir)
        mask_dir = root / "ground_truth" / type_dir.name
        masks_exist = type_dir.name != NORMAL_TYPE and mask_dir.is_dir()
        if type_dir.name != NORMAL_TYPE and not masks_exist and paths:
            result.types_without_masks.append(type_dir.name)
        for path in paths:
            mask = None
            if masks_exist:
                mask = _find_mask(mask_dir, path)
                if mask is None:
                    raise DataError(f"no mask for test image {type_dir.name}/{path.name} in ground_truth/{type_dir.name}/", mask_dir)
            result.test_samples.append(TestSample(path=path, defect_type=type_dir.name, mask_path=mask))
    if require_test:
        if not result.test_samples:
            raise DataError("test/ holds no images", test_dir)
        labels = {s.label for s in result.test_samples}
        if labels != {0, 1}:
            missing = "normal (test/good/)" if 0 not in labels else "anomalous (test/<defect_type>/)"
            raise DataError(f"the test set needs both normal and anomalous images; no {missing} images found", test_dir)
    return result


def _find_mask(mask_dir: Path, image_path: Path) -> Path | None:
    for candidate in (f"{image_path.stem}_mask", image_path.stem):
        for ext in (".png", ".bmp", ".tif", ".tiff", ".jpg"):
            path = mask_dir / f"{candidate}{ext}"
            if path.is_file():
                return path
    return None


def split_train_validation(
    paths: Sequence[Path], validation_fraction: float, seed: int = 0
) -> tuple[list[Path], list[Path]]:
    """Seeded split of normal training images; at least one image goes to each side when there are two."""
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    paths = list(paths)
    n_val = int(round(len(paths) * validation_fraction))
    if validation_fraction > 0 and len(paths) >= 2:
        n_val = min(max(n_val, 1), len(paths) - 1)
    order = np.random.default_rng(seed).permutation(len(paths))
    val_idx = set(order[:n_val].tolist())
    train = [p for i, p in enumerate(paths) if i not in val_idx]
    val = [p for i, p in enumerate(paths) if i in val_idx]
    return train, val


def load_test_set(
    category: ImageCategory, preprocessing: Preprocessing, reporter: Reporter = SILENT, images: torch.Tensor | None = None
) -> LabelledImages:
    """Decode the test split once, with masks resized by the same preprocessing as the images.

    ``images``: the test images already decoded (in ``test_samples`` order), e.g. while they were scored.
    """
    for defect_type in category.types_without_masks:
        reporter.log(f"warning: defect type {defect_type!r} has no masks in ground_truth/; it gets no pixel metrics")
    samples = category.test_samples
    if images is None:
        images = preprocessing.load_images([s.path for s in samples], reporter=reporter)
    h, w = images.shape[-2:]
    masks = torch.zeros((len(samples), h, w), dtype=torch.bool)
    has_mask = np.zeros(len(samples), dtype=bool)
    for i, sample in enumerate(samples):
        if sample.label == 0:
            has_mask[i] = True  # a normal image's truth is known: no anomalous pixel
        elif sample.mask_path is not None:
            masks[i] = preprocessing.load_mask(sample.mask_path, image_path=sample.path)
            has_mask[i] = True
    return LabelledImages(
        images=images,
        labels=np.array([s.label for s in samples], dtype=np.int64),
        defect_types=[s.defect_type for s in samples],
        paths=[s.path for s in samples],
        masks=masks,
        has_mask=has_mask,
    )
