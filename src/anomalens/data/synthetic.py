"""A small synthetic MVTec-layout category for tests and the demo: washers on a textured bench.

Every image shows a metal washer (a ring with six bolt holes) on a mottled work surface. Normal images vary
the way real production photos do: the washer shifts by a few pixels, turns, changes size slightly, the light
is brighter or dimmer, the bench texture is never the same and there is sensor noise. So a detector has to
learn what a washer looks like, not memorise one picture. Defects, each with a pixel mask:

* ``scratch``: a thin dark line across the metal,
* ``spot``: a small rust-brown stain,
* ``missing_piece``: a bite out of the rim (the bench shows through),
* ``colour_shift``: a patch of the metal tinted warm (heat discolouration).

The layout is exactly MVTec AD's (``train/good``, ``test/good``, ``test/<type>``,
``ground_truth/<type>/<stem>_mask.png``), written atomically as one folder and deterministic for a seed.

>>> root = make_synthetic_image_dataset("/tmp/anomalens_synth")   # doctest: +SKIP
>>> sorted(p.name for p in (root / "synthetic_widget" / "test").iterdir())   # doctest: +SKIP
['colour_shift', 'good', 'missing_piece', 'scratch', 'spot']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from anomalens.runtime import atomic_dir

DEFECT_TYPES = ("scratch", "spot", "missing_piece", "colour_shift")
DEFAULT_CATEGORY = "synthetic_widget"


@dataclass
class _Scene:
    """The geometry of one washer, drawn in pixels of an S x S image."""

    size: int
    cx: float
    cy: float
    outer: float
    inner: float
    hole_ring: float
    hole_radius: float
    angle: float

    def grids(self) -> tuple[np.ndarray, np.ndarray]:
        yy, xx = np.mgrid[0 : self.size, 0 : self.size].astype(np.float64)
        return yy, xx

    def metal_mask(self) -> np.ndarray:
        yy, xx = self.grids()
        r = np.hypot(xx - self.cx, yy - self.cy)
        metal = (r <= self.outer) & (r >= self.inner)
        for k in range(6):
            a = self.angle + k * np.pi / 3
            hx, hy = self.cx + self.hole_ring * np.cos(a), self.cy + self.hole_ring * np.sin(a)
            metal &= np.hypot(xx - hx, yy - hy) > self.hole_radius
        return metal


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    img = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float64) / 255.0


def _random_scene(rng: np.random.Generator, size: int) -> _Scene:
    s = float(size)
    return _Scene(
        size=size,
        cx=s / 2 + rng.uniform(-0.04, 0.04) * s,
        cy=s / 2 + rng.uniform(-0.04, 0.04) * s,
        outer=s * rng.uniform(0.33, 0.36),
        inner=s * rng.uniform(0.10, 0.12),
        hole_ring=s * 0.235,
        hole_radius=s * rng.uniform(0.035, 0.042),
        angle=rng.uniform(0, np.pi / 3),
    )


def _render(rng: np.random.Generator, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """A normal image as float RGB (S, S, 3) in [0, 255], and the metal mask."""
    size = scene.size
    bench_base = np.array([92.0, 104.0, 88.0]) * rng.uniform(0.9, 1.1)
    bench = bench_base[None, None, :] * (0.85 + 0.3 * _smooth_noise(rng, size, 6))[:, :, None]
    bench += 10.0 * (_smooth_noise(rng, size, max(8, size // 6)) - 0.5)[:, :, None]

    yy, xx = scene.grids()
    metal = scene.metal_mask()
    # Brushed metal: radial shading plus a fine angular grain that turns with the washer
    r = np.hypot(xx - scene.cx, yy - scene.cy)
    theta = np.arctan2(yy - scene.cy, xx - scene.cx)
    light = rng.uniform(0.85, 1.15)
    shade = 0.8 + 0.25 * np.cos(theta - scene.angle - 0.8) * (r / max(scene.outer, 1.0))
    grain = 0.04 * np.sin(40 * (theta - scene.angle) + 0.3 * r)
    metal_rgb = np.array([178.0, 182.0, 192.0])[None, None, :] * (light * (shade + grain))[:, :, None]

    image = np.where(metal[:, :, None], metal_rgb, bench)
    # A soft shadow ring just outside the rim
    shadow = np.clip((r - scene.outer) / (0.04 * size), 0, 1)
    image = np.where(metal[:, :, None], image, image * (0.7 + 0.3 * shadow)[:, :, None])
    return image, metal


def _ellipse(scene: _Scene, cx: float, cy: float, rx: float, ry: float, angle: float) -> np.ndarray:
    yy, xx = scene.grids()
    c, s = np.cos(angle), np.sin(angle)
    u = ((xx - cx) * c + (yy - cy) * s) / rx
    v = (-(xx - cx) * s + (yy - cy) * c) / ry
    return u * u + v * v <= 1.0


def _point_on_metal(rng: np.random.Generator, scene: _Scene, metal: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(metal)
    i = rng.integers(len(xs))
    return float(xs[i]), float(ys[i])


def _scratch(rng: np.random.Generator, scene: _Scene, image: np.ndarray, metal: np.ndarray) -> np.ndarray:
    s = scene.size
    x0, y0 = _point_on_metal(rng, scene, metal)
    angle = rng.uniform(0, np.pi)
    length = s * rng.uniform(0.22, 0.32)
    yy, xx = scene.grids()
    dx, dy = np.cos(angle), np.sin(angle)
    along = (xx - x0) * dx + (yy - y0) * dy
    across = -(xx - x0) * dy + (yy - y0) * dx
    width = max(1.0, s / 48)
    mask = (np.abs(across) <= width) & (np.abs(along) <= length / 2) & metal
    image[mask] = image[mask] * 0.35
    return mask


def _blob_on_metal(rng: np.random.Generator, scene: _Scene, metal: np.ndarray, radius: tuple[float, float]) -> np.ndarray:
    """An ellipse at a random point of the metal, its radius a random share in ``radius`` of the image size."""
    x0, y0 = _point_on_metal(rng, scene, metal)
    r = scene.size * rng.uniform(*radius)
    return _ellipse(scene, x0, y0, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)) & metal


def _spot(rng: np.random.Generator, scene: _Scene, image: np.ndarray, metal: np.ndarray) -> np.ndarray:
    mask = _blob_on_metal(rng, scene, metal, (0.04, 0.06))
    image[mask] = np.array([120.0, 62.0, 30.0]) * rng.uniform(0.8, 1.1)
    return mask


def _missing_piece(rng: np.random.Generator, scene: _Scene, image: np.ndarray, metal: np.ndarray) -> np.ndarray:
    s = scene.size
    a = rng.uniform(0, 2 * np.pi)
    bite = s * rng.uniform(0.11, 0.15)
    cx = scene.cx + scene.outer * np.cos(a)
    cy = scene.cy + scene.outer * np.sin(a)
    mask = _ellipse(scene, cx, cy, bite, bite, 0.0) & metal
    bench = np.array([92.0, 104.0, 88.0]) * (0.85 + 0.3 * _smooth_noise(rng, s, 6))[:, :, None]
    image[mask] = bench[mask]
    return mask


def _colour_shift(rng: np.random.Generator, scene: _Scene, image: np.ndarray, metal: np.ndarray) -> np.ndarray:
    mask = _blob_on_metal(rng, scene, metal, (0.07, 0.10))
    image[mask] = image[mask] * np.array([1.25, 0.95, 0.55])
    return mask


_DEFECTS: dict[str, Callable[[np.random.Generator, _Scene, np.ndarray, np.ndarray], np.ndarray]] = {
    "scratch": _scratch,
    "spot": _spot,
    "missing_piece": _missing_piece,
    "colour_shift": _colour_shift,
}


def synthetic_image(
    seed: int, image_size: int = 128, defect: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One image (RGB ``uint8`` (S, S, 3)) and its defect mask (``bool`` (S, S)); ``defect=None`` is normal."""
    rng = np.random.default_rng(seed)
    scene = _random_scene(rng, image_size)
    image, metal = _render(rng, scene)
    mask = np.zeros((image_size, image_size), dtype=bool)
    if defect is not None:
        if defect not in _DEFECTS:
            raise ValueError(f"unknown defect type {defect!r}; choose from {', '.join(DEFECT_TYPES)}")
        mask = _DEFECTS[defect](rng, scene, image, metal)
    image = image + rng.normal(0.0, 3.0, image.shape)  # sensor noise
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), mask


def make_synthetic_image_dataset(
    root: str | Path,
    category: str = DEFAULT_CATEGORY,
    n_train: int = 40,
    n_test_good: int = 8,
    n_test_per_defect: int = 4,
    image_size: int = 128,
    seed: int = 0,
) -> Path:
    """Write an MVTec-layout category ``root/category`` and return ``root`` (the ``--data-dir``).

    The category folder appears whole or not at all; an existing one is replaced.
    """
    root = Path(root)
    if image_size < 32:
        raise ValueError(f"image_size must be at least 32, got {image_size}")
    # Separate seed streams per split so that changing one count does not change the other images
    base = np.random.SeedSequence(seed)
    streams = iter(base.spawn(2 + len(DEFECT_TYPES)))
    with atomic_dir(root / category) as tmp:
        _write_split(tmp / "train" / "good", next(streams), n_train, image_size, None, None)
        _write_split(tmp / "test" / "good", next(streams), n_test_good, image_size, None, None)
        for defect in DEFECT_TYPES:
            _write_split(
                tmp / "test" / defect, next(streams), n_test_per_defect, image_size, defect, tmp / "ground_truth" / defect
            )
    return root


def _write_split(
    folder: Path, stream: np.random.SeedSequence, count: int, size: int, defect: str | None, mask_folder: Path | None
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if mask_folder is not None:
        mask_folder.mkdir(parents=True, exist_ok=True)
    seeds = stream.generate_state(max(count, 1))
    for i in range(count):
        image, mask = synthetic_image(int(seeds[i]), size, defect)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        if mask_folder is not None:
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_folder / f"{i:03d}_mask.png")
