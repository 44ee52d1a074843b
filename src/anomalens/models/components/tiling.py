"""Cut large images into overlapping tiles and stitch per-tile maps back together.

Used when a model works at native resolution (``tile=N``): small defects on a 2000-pixel part survive because
the image is never shrunk; each N x N tile goes through the backbone at its own scale. Tiles overlap by
``overlap`` pixels and the last tile of a row or column is aligned to the image edge, so every pixel is
covered; overlapping maps are averaged.

>>> grid = TileGrid.for_image(1000, 700, tile=256, overlap=32)
>>> tiles = grid.cut(torch.zeros(2, 3, 1000, 700))        # (2 * grid.count, 3, 256, 256)
>>> grid.stitch(torch.ones(2 * grid.count, 256, 256)).shape
torch.Size([2, 1000, 700])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anomalens.errors import ConfigError


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` pixels shared."""
    if tile >= length:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of an ``height`` x ``width`` image lie (row-major order)."""

    height: int
    width: int
    tile: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]

    @classmethod
    def for_image(cls, height: int, width: int, tile: int, overlap: int) -> "TileGrid":
        if tile < 32:
            raise ConfigError(f"tile {tile} is too small: tiles must be at least 32 pixels")
        if not 0 <= overlap < tile:
            raise ConfigError(f"tile overlap must be in [0, {tile}), got {overlap}")
        if tile > min(height, width):
            raise ConfigError(
                f"tile {tile} is larger than the image ({height}x{width}); use a smaller value or no tiling"
            )
        return cls(height, width, tile, tuple(tile_starts(height, tile, overlap)), tuple(tile_starts(width, tile, overlap)))

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def cut(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B * count, C, tile, tile)``, tiles of one image consecutive."""
        t = self.tile
        tiles = [images[:, :, r : r + t, c : c + t] for r in self.rows for c in self.cols]
        return torch.stack(tiles, dim=1).flatten(0, 1)

    def stitch(self, maps: torch.Tensor) -> torch.Tensor:
        """``(B * count, tile, tile)`` per-tile maps -> ``(B, H, W)``, averaged where tiles overlap."""
        t = self.tile
        maps = maps.reshape(-1, self.count, t, t)
        total = maps.new_zeros((maps.shape[0], self.height, self.width))
        weight = maps.new_zeros((self.height, self.width))
        index = 0
        for r in self.rows:
            for c in self.cols:
                total[:, r : r + t, c : c + t] += maps[:, index]
                weight[r : r + t, c : c + t] += 1.0
                index += 1
        return total / weight
