"""The one place where pixels become tensors: training, evaluation, the CLI and the UI all come here.

Images of any mode Pillow reads (8/16-bit, grayscale, RGBA, palette) become RGB ``uint8`` tensors of
shape ``(3, H, W)``; detectors turn them into floats in [0, 1] batch by batch (:func:`to_float`).
Masks become ``bool`` tensors ``(H, W)``.

>>> prep = Preprocessing(image_size=(256, 256))
>>> prep.load_image("bottle/test/broken_large/000.png").shape  # doctest: +SKIP
torch.Size([3, 256, 256])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

# decoding and resizing are torch-free, shared with the runtime of exported models (anomalens.inference)
from anomalens.data.pixels import (IMAGE_EXTENSIONS, image_size_of, open_image, read_rgb, resize_rgb_array, rgb_array,
                                   upright)
from anomalens.errors import ConfigError, DataError
from anomalens.limits import MAX_IMAGE_SIDE, MIN_IMAGE_SIDE
from anomalens.runtime import run_ahead

__all__ = ["IMAGE_EXTENSIONS", "Preprocessing", "list_images", "parse_image_size", "read_rgb", "resize_rgb", "to_float"]
MIN_IMAGE_SIZE = MIN_IMAGE_SIDE


def parse_image_size(value: int | Sequence[int]) -> tuple[int, int]:
    """``256`` or ``[256]`` -> ``(256, 256)``; ``[H, W]`` -> ``(H, W)``; rejects what no model can take."""
    if isinstance(value, int):
        size = (value, value)
    else:
        values = [int(v) for v in value]
        if len(values) == 1:
            size = (values[0], values[0])
        elif len(values) == 2:
            size = (values[0], values[1])
        else:
            raise ConfigError(f"image_size takes one or two numbers (H W), got {len(values)}")
    if min(size) < MIN_IMAGE_SIDE or max(size) > MAX_IMAGE_SIDE:
        raise ConfigError(f"image_size {size[0]} {size[1]} is out of range: each side must be "
                          f"{MIN_IMAGE_SIDE}..{MAX_IMAGE_SIDE} pixels")
    return size


DEFAULT_PIXEL_BUDGET = 256 * 256  # pixels per model input when the size is chosen from the data
SIZE_MULTIPLE = 32  # sides are rounded to the coarsest stride of the backbone stages in use
MAX_ASPECT = 8.0  # beyond this the narrow side would become a few feature cells wide


def aspect_aware_size(height: int, width: int, pixels: int = DEFAULT_PIXEL_BUDGET, multiple: int = SIZE_MULTIPLE) -> tuple[int, int]:
    """The model input ``(H, W)`` that keeps an image's aspect ratio at about ``pixels`` pixels.

    Squashing a 500x1260 part into 256x256 halves the detail along its length and makes long thin defects
    thinner still; keeping the aspect at the same budget keeps the cost (memory, time) of a square input.
    Sides are rounded to ``multiple`` (the backbone's stride, so feature cells tile the image exactly) and
    the aspect is capped at ``MAX_ASPECT``.

    >>> aspect_aware_size(1260, 500)
    (416, 160)
    >>> aspect_aware_size(900, 900)
    (256, 256)
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    aspect = min(max(height / width, 1.0 / MAX_ASPECT), MAX_ASPECT)
    ideal_h, ideal_w = (pixels * aspect) ** 0.5, (pixels / aspect) ** 0.5
    floor = max(multiple, -(-MIN_IMAGE_SIZE // multiple) * multiple)
    return (max(floor, int(round(ideal_h / multiple)) * multiple), max(floor, int(round(ideal_w / multiple)) * multiple))


# Small parts get more input pixels: a part covering less than PART_SHARE_FOR_BUDGET of the frame (a screw, a pin, a
# wire on a plain background) raises the budget in proportion, by at most MAX_BUDGET_GROWTH (1.5x per side) and never
# beyond the images' native pixels. 0.4 is where a large part (bottle 0.65, the synthetic rods 0.39) gets (almost) no
# change.
PART_SHARE_FOR_BUDGET = 0.4
MAX_BUDGET_GROWTH = 2.25
PART_CONTRAST = 40  # levels (of 255) from the border colour that make a pixel part of the part, not background
PART_THUMBNAIL = 128  # width at which the part's share is measured (cheap; the share does not depend on detail)


def part_mask(images01: torch.Tensor, grow: int = 0, cell: int = 1) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB in [0, 1] -> ``bool`` ``(B, H, W)``: where the part is, not the background.

    A pixel is part of the part when its colour (after a 3x3 mean that ignores sensor noise) differs from the
    median colour of the image's outermost pixels by more than :data:`PART_CONTRAST` levels in some channel;
    ``grow`` widens the mask by that many pixels. With ``cell`` > 1 the mask is of ``cell`` x ``cell`` blocks
    (their mean colour; ``grow`` then counts blocks), ``(B, ceil(H / cell), ceil(W / cell))``: far cheaper.
    This assumes a part inside the frame on a roughly uniform background; a textured or cluttered background reads
    as a large part. Plain tensor operations (a sort for the median), so exported scoring graphs compute the same.
    """
    x = images01.float()
    if cell > 1:
        x = F.avg_pool2d(x, cell, ceil_mode=True)
    else:
        x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., 1:-1, 0], x[..., 1:-1, -1]], dim=-1)  # (B, 3, n)
    background = border.sort(dim=-1).values[..., border.shape[-1] // 2]  # (B, 3)
    mask = (x - background[..., None, None]).abs().amax(dim=1) > PART_CONTRAST / 255.0
    if grow > 0:  # a square dilation, as two 1-D ones (several times faster)
        grown = F.max_pool2d(mask[:, None].float(), (1, 2 * grow + 1), stride=1, padding=(0, grow))
        mask = F.max_pool2d(grown, (2 * grow + 1, 1), stride=1, padding=(grow, 0))[:, 0] > 0
    return mask


def part_share(rgb: np.ndarray) -> float:
    """Share of an RGB ``uint8`` image covered by the part (:func:`part_mask`, measured on a small copy)."""
    image = Image.fromarray(rgb_array(rgb))
    height = max(1, round(PART_THUMBNAIL * image.height / image.width))
    thumb = torch.from_numpy(np.asarray(image.resize((PART_THUMBNAIL, height), Image.BILINEAR)).copy())
    return float(part_mask(to_float(thumb.permute(2, 0, 1)[None])).float().mean())


def pixel_budget(native: tuple[int, int], share: float) -> int:
    """Input pixels for images of ``native`` size whose part covers ``share`` of the frame.

    >>> pixel_budget((900, 900), 0.65)       # a bottle filling the frame: the default
    65536
    >>> pixel_budget((384, 384), 0.17)       # a screw on a plain background: its native 384x384
    147456
    """
    growth = min(max(PART_SHARE_FOR_BUDGET / max(share, 1e-6), 1.0), MAX_BUDGET_GROWTH)
    budget = int(DEFAULT_PIXEL_BUDGET * growth)
    return max(DEFAULT_PIXEL_BUDGET, min(budget, native[0] * native[1]))


def typical_part_share(paths: Sequence[str | Path], sample: int = 16) -> float:
    """Median :func:`part_share` over up to ``sample`` images spread over ``paths``."""
    paths = list(paths)
    if not paths:
        raise DataError("no images to measure the part's share from")
    step = max(1, len(paths) // sample)
    return float(np.median([part_share(read_rgb(path)) for path in paths[::step][:sample]]))


def default_input_size(paths: Sequence[str | Path], share: float | None = None) -> tuple[int, int]:
    """The input size an image model trains at when none is given: the training images' aspect ratio at the
    pixel budget of :func:`pixel_budget` (256x256, more for small parts), rounded by :func:`aspect_aware_size`.
    ``share``: the part's share of the frame if already measured (:func:`typical_part_share`)."""
    native = native_size(paths)
    share = typical_part_share(paths) if share is None else share
    return aspect_aware_size(*native, pixels=pixel_budget(native, share))


def native_size(paths: Sequence[str | Path], sample: int = 32) -> tuple[int, int]:
    """Typical native ``(H, W)`` of images (the median over up to ``sample`` of them, read from headers only)."""
    sizes = []
    for path in list(paths)[:sample]:
        sizes.append(image_size_of(path))
    if not sizes:
        raise DataError("no images to take a size from")
    heights, widths = zip(*sizes)
    return int(np.median(heights)), int(np.median(widths))


def resize_rgb(array: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """RGB ``uint8`` ``(H, W, 3)`` -> ``uint8`` tensor ``(3, h, w)``, resized as every runtime does (data/pixels.py)."""
    array = resize_rgb_array(array, size)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8`` ``(N, 3, H, W)`` -> ``float32`` in [0, 1] (floats pass through)."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


# a mask with at most this many distinct values, all 127 or below, holds labels (0 = normal, any other = defect)
MAX_MASK_LABELS = 16


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``bool`` defect mask at ``size`` ``(H, W)``: a pixel is defective where more than half of it was, and a
    defect too thin for that anywhere (a 1-3 px scratch shrunk 4x covers a quarter of each pixel) keeps its most
    covered pixels instead of vanishing, which once counted such images as all-normal in pixel AUROC and left
    their regions out of AUPRO."""
    from anomalens.metrics.regions import label_components

    coverage = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((size[1], size[0]), Image.BILINEAR))
    kept = coverage > 127
    labels, count = label_components(coverage > 0)
    if count:
        peak = np.zeros(count + 1, np.int32)
        np.maximum.at(peak, labels, coverage)
        majority = np.zeros(count + 1, bool)
        majority[labels[kept]] = True
        thin = ~majority[labels] & (labels > 0)  # pixels of traces with no pixel more than half covered
        kept |= thin & (2 * coverage.astype(np.int32) >= peak[labels])
    return kept


@dataclass(frozen=True)
class Preprocessing:
    """How every image is prepared; saved with each model so that scoring matches training.

    ``image_size`` is (height, width); ``None`` keeps the native size (used when tiling).
    """

    image_size: tuple[int, int] | None

    def load_image(self, path: str | Path) -> torch.Tensor:
        return resize_rgb(read_rgb(path), self.image_size)

    def load_images(self, paths: Sequence[str | Path], reporter: Any = None) -> torch.Tensor:
        """Decode and resize each image once into one ``uint8`` tensor ``(N, 3, H, W)``."""
        if self.image_size is None:
            raise ConfigError("images of native size cannot be stacked; load them one by one")
        iterator: Iterable = paths if reporter is None else reporter.iter(paths, "decode images")
        if not paths:
            return torch.empty((0, 3, *self.image_size), dtype=torch.uint8)
        return torch.stack([self.load_image(p) for p in iterator])

    def iter_images(self, paths: Sequence[str | Path], batch_size: int, prefetch: int = 2) -> "ImageBatches":
        """Batches ``(B, 3, H, W)`` of decoded images, decoded in a background thread while the caller computes
        on the previous batch (:func:`~anomalens.runtime.run_ahead`; PIL releases the GIL while decoding). Errors
        surface in the caller's thread. ``len()`` is the number of batches (progress bars show a total)."""
        if self.image_size is None:
            raise ConfigError("images of native size cannot be stacked; load them one by one")
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {batch_size}")
        return ImageBatches(self, list(paths), batch_size, prefetch)

    def prepare_array(self, array: np.ndarray) -> torch.Tensor:
        """An RGB ``uint8`` array already in memory (an upload, a video frame) -> ``(3, H, W)`` tensor."""
        return resize_rgb(rgb_array(array), self.image_size)

    def load_mask(self, path: str | Path, image_path: str | Path | None = None) -> torch.Tensor:
        """A ground-truth mask -> ``bool`` ``(H, W)``; its native size must match its image's."""
        path = Path(path)
        with open_image(path, "mask") as img:
            img.load()
            grey = np.asarray(upright(img).convert("L"))
        # 0/255 masks (MVTec; a JPEG's ringing stays below half), or 0/1 and label-index masks (other datasets,
        # which "> 127" read as all-normal without a word): a few distinct values, none above 127. Many faint
        # values are a JPEG's noise on an empty mask, not labels
        low_labels = grey.max(initial=0) <= 127 and np.unique(grey).size <= MAX_MASK_LABELS
        mask = grey > (0 if low_labels else 127)
        if image_path is not None:
            native = image_size_of(image_path)
            if mask.shape != native:
                raise DataError(
                    f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {Path(image_path).name} is "
                    f"{native[1]}x{native[0]}",
                    path,
                )
        if self.image_size is not None and mask.shape != tuple(self.image_size):
            mask = resize_mask(mask, self.image_size)
        return torch.from_numpy(mask.copy())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["image_size"] = list(self.image_size) if self.image_size is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        size = data.get("image_size")
        return cls(image_size=tuple(size) if size is not None else None)  # type: ignore[arg-type]


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


class ImageBatches:
    """What :meth:`Preprocessing.iter_images` gives: iterable (each pass decodes again) and sized in batches."""

    def __init__(self, preprocessing: Preprocessing, paths: list[str | Path], batch_size: int, prefetch: int) -> None:
        self.preprocessing, self.paths, self.batch_size, self.prefetch = preprocessing, paths, batch_size, prefetch

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        size, load = self.batch_size, self.preprocessing.load_image
        batches = (torch.stack([load(p) for p in self.paths[start : start + size]])
                   for start in range(0, len(self.paths), size))
        return iter(run_ahead(batches, depth=self.prefetch))
