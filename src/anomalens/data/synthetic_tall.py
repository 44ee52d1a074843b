"""A harder synthetic MVTec-layout category: tall machined rods with long, thin, low-contrast defects.

Where the washers of :mod:`.synthetic` are square and their defects bold, this set is built like the cases
that break a default setup: tall images (504 x 200 px, the aspect of a shaft photographed lengthwise), a
machined surface with fine turning grooves whose phase and pitch vary, parts that shift, tilt and change
width slightly, and light that drifts (overall gain and a gradient along the rod differ in every image).
Defects, each with a pixel mask, are faint:

* ``long_scratch``: a 1-2 px line along the rod, a third to half its length, 8-12% darker,
* ``crack``: a thin wavy line across the rod, 15-20% darker,
* ``dent``: a shallow elliptical dip, shaded about 6% darker on one side and brighter on the other.

Normal rods also carry what is not a defect: a few short, faint tool marks and specks of dust in random places,
so that the highest cell of a normal map is not always low.

The ``pin`` variant (category ``synthetic_pin``) is harder still: a pin a third as wide on a wider 640 x 320 mat, so
the part covers about a seventh of the frame (like MVTec's screw) and its defects shrink with it at any input size.

>>> root = make_tall_synthetic_dataset("/tmp/anomalens_tall")   # doctest: +SKIP
>>> sorted(p.name for p in (root / "synthetic_rod" / "test").iterdir())   # doctest: +SKIP
['crack', 'dent', 'good', 'long_scratch']
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from anomalens.runtime import atomic_dir

TALL_DEFECT_TYPES = ("long_scratch", "crack", "dent")
TALL_CATEGORY = "synthetic_rod"
TALL_SIZE = (504, 200)  # (H, W)
PIN_CATEGORY = "synthetic_pin"
PIN_SIZE = (640, 320)
# part -> (image size, half-width of the part as a share of the image width)
PARTS: dict[str, tuple[tuple[int, int], float]] = {"rod": (TALL_SIZE, 0.225), "pin": (PIN_SIZE, 0.075)}


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise in [0, 1] of ``shape`` from a coarse random grid."""
    coarse = (rng.random(cells) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize(shape[::-1], Image.BICUBIC), dtype=np.float64) / 255.0


def tall_synthetic_image(seed: int, defect: str | None = None, part: str = "rod") -> tuple[np.ndarray, np.ndarray]:
    """One rod (or pin) image (RGB ``uint8`` ``(H, W, 3)``) and its defect mask (``bool`` ``(H, W)``)."""
    if defect is not None and defect not in TALL_DEFECT_TYPES:
        raise ValueError(f"unknown defect type {defect!r}; choose from {', '.join(TALL_DEFECT_TYPES)}")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    size, width_share = PARTS[part]
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # Geometry: centre line x = cx + tilt * (y - h/2), half-width hw, ends at top/bottom margins
    cx = w / 2 + rng.uniform(-0.03, 0.03) * w
    tilt = np.tan(np.radians(rng.uniform(-1.5, 1.5)))
    half_width = w * width_share * rng.uniform(0.96, 1.04)
    top, bottom = h * rng.uniform(0.05, 0.07), h * rng.uniform(0.93, 0.95)
    across = (xx - (cx + tilt * (yy - h / 2))) / half_width  # -1..1 across the rod
    rod = (np.abs(across) <= 1.0) & (yy >= top) & (yy <= bottom)

    # Background: a dark textured mat
    mat = np.array([58.0, 60.0, 66.0])[None, None, :] * (0.8 + 0.4 * _smooth(rng, size, (12, 5)))[:, :, None]
    mat += 8.0 * (rng.random(size) - 0.5)[:, :, None]
    # Machined steel: cylindrical shading, turning grooves (pitch and phase vary), slow mottling
    pitch = rng.uniform(2.8, 3.4)
    grooves = 0.05 * np.sin(2 * np.pi * yy / pitch + rng.uniform(0, 2 * np.pi) + 0.6 * across)
    mottling = 0.08 * (_smooth(rng, size, (16, 4)) - 0.5)
    shading = 0.72 + 0.28 * np.sqrt(np.clip(1 - across**2, 0, 1)) + 0.08 * across
    steel = np.array([168.0, 172.0, 180.0])[None, None, :] * (shading + grooves + mottling)[:, :, None]
    image = np.where(rod[:, :, None], steel, mat)
    # Light drifts between images: gain and a gradient along the rod
    # Normal marks: short faint tool marks along the grooves and a few dust specks, anywhere on the rod
    for _ in range(int(rng.integers(2, 6))):
        my, mx = rng.uniform(top, bottom), cx + rng.uniform(-0.8, 0.8) * half_width
        mark = (np.abs(yy - my) <= 0.7) & (np.abs(xx - mx) <= rng.uniform(4, 12)) & rod
        image[mark] *= rng.uniform(0.92, 1.06)
    for _ in range(int(rng.integers(1, 4))):
        sy, sx = rng.uniform(0, h), rng.uniform(0, w)
        speck = (yy - sy) ** 2 + (xx - sx) ** 2 <= rng.uniform(1.0, 2.5) ** 2
        image[speck] = image[speck] * 0.6 + 90.0
    gain = rng.uniform(0.8, 1.2) * (1.0 + rng.uniform(-0.2, 0.2) * (yy / h - 0.5) + rng.uniform(-0.1, 0.1) * (xx / w - 0.5))
    image = image * gain[:, :, None]

    mask = np.zeros(size, dtype=bool)
    if defect is not None:
        ys, xs = np.nonzero(rod & (np.abs(across) < 0.7) & (yy > top + 0.1 * h) & (yy < bottom - 0.1 * h))
        i = rng.integers(len(xs))
        x0, y0 = float(xs[i]), float(ys[i])
        if defect == "long_scratch":
            angle = np.pi / 2 + rng.uniform(-0.2, 0.2)  # mostly along the rod
            length = h * rng.uniform(0.3, 0.5)
            dx, dy = np.cos(angle), np.sin(angle)
            along = (xx - x0) * dx + (yy - y0) * dy
            off = -(xx - x0) * dy + (yy - y0) * dx
            mask = (np.abs(off) <= rng.uniform(0.6, 1.0)) & (np.abs(along) <= length / 2) & rod
            image[mask] *= rng.uniform(0.88, 0.92)
        elif defect == "crack":
            wave = 2.0 * np.sin((xx - x0) / rng.uniform(4, 7) + rng.uniform(0, 6))
            mask = (np.abs(yy - y0 - wave) <= 0.8) & (np.abs(xx - x0) <= half_width * rng.uniform(0.5, 0.8)) & rod
            image[mask] *= rng.uniform(0.8, 0.85)
        else:  # dent
            rx, ry = half_width * rng.uniform(0.25, 0.35), h * rng.uniform(0.025, 0.04)
            u, v = (xx - x0) / rx, (yy - y0) / ry
            inside = (u * u + v * v <= 1.0) & rod
            image[inside] *= (1.0 - 0.06 * u[inside])[:, None]  # shaded dip: darker one side, brighter the other
            mask = inside
    image = image + rng.normal(0.0, 2.5, image.shape)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), mask


def make_tall_synthetic_dataset(
    root: str | Path,
    category: str | None = None,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_per_defect: int = 10,
    seed: int = 0,
    part: str = "rod",
) -> Path:
    """Write an MVTec-layout category ``root/category`` (atomically) and return ``root`` (the ``--data-dir``).

    ``category`` defaults to ``synthetic_rod`` or ``synthetic_pin`` after ``part``."""
    category = category or (TALL_CATEGORY if part == "rod" else PIN_CATEGORY)
    root = Path(root)
    streams = iter(np.random.SeedSequence(seed).spawn(2 + len(TALL_DEFECT_TYPES)))
    splits = [("train/good", None, n_train), ("test/good", None, n_test_good)]
    splits += [(f"test/{d}", d, n_test_per_defect) for d in TALL_DEFECT_TYPES]
    with atomic_dir(root / category) as tmp:
        for folder, defect, count in splits:
            (tmp / folder).mkdir(parents=True, exist_ok=True)
            seeds = next(streams).generate_state(max(count, 1))
            for i in range(count):
                image, mask = tall_synthetic_image(int(seeds[i]), defect, part)
                Image.fromarray(image).save(tmp / folder / f"{i:03d}.png")
                if defect is not None:
                    (tmp / "ground_truth" / defect).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp / "ground_truth" / defect / f"{i:03d}_mask.png")
    return root
