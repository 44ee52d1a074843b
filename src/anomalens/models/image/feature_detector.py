"""What PatchCore and PaDiM share: the pretrained patch features, optional tiling, and map post-processing.

A subclass only decides how patch features become patch scores (nearest neighbour in a memory bank, or
Mahalanobis distance to a Gaussian). Everything about pixels is here: images are cut into tiles when
``tile`` is set, features are extracted in batches, patch scores are upsampled, stitched and blurred.

>>> class MyDetector(FeatureDetector): ...   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator

import torch
from torch.nn import functional as F

from anomalens.data.preprocessing import part_mask, to_float
from anomalens.errors import ConfigError
from anomalens.models.components.anomaly_map import SeparableMapOperator, upsample
from anomalens.models.components.kernels import gaussian_blur
from anomalens.models.base import Detector, DetectorConfig
from anomalens.models.components.features import PatchFeatureExtractor
from anomalens.models.components.tiling import TileGrid
from anomalens.progress import SILENT, Reporter


@dataclass
class FeatureDetectorConfig(DetectorConfig):
    """Settings of the pretrained feature extractor and of the anomaly maps."""

    backbone: str = "lite0"  # pretrained EfficientNet: lite0, lite1 or lite2 (larger, slower)
    stages: tuple[int, ...] = (2, 4)  # backbone stages combined into patch features (stride 8 and 16)
    neighbourhood: int = 3  # each patch feature averages this many cells square around it
    projection_dim: int | None = None  # random projection of the features to this many channels (None: keep all)
    blur_sigma: float = 4.0  # Gaussian smoothing of the anomaly map, in pixels
    tile: int | None = None  # work at native size on overlapping N x N tiles (None: resize the whole image)
    tile_overlap: int = 32  # pixels shared by neighbouring tiles
    # where the image score (the map's maximum) is taken: image (all of it), part (data/preprocessing.py part_mask)
    # or auto: decided at fit on the held-out normal images (FeatureDetector.choose_score_region); saved resolved
    score_region: str = "auto"

    # models saved before score_region existed took the maximum of the whole map
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {"score_region": "image"}


SCORE_REGIONS = ("auto", "image", "part")
# "auto" takes the score on the part when capping the map off the part lowers the score of at least this share of
# the held-out normal images by more than PART_SCORE_DROP: then the background (its texture, dust, the image border)
# competes with the part for the highest normal scores, and a defect of the part has to outscore it. Where no
# held-out image's score comes from off the part (MVTec AD bottle: 0 of 21), the part score could only lose defects
# that lie beside the part or where the colour rule misses some of it, so the whole map stays.
PART_SCORE_MIN_SHARE = 0.1
PART_SCORE_DROP = 0.01  # relative: smaller changes of the maximum are the blur's tails, not the background
# pixels (at the model's input size, per 256 of its shorter side) around the part that still count for the score:
# a chip at the outline is background-coloured itself, but its blurred score reaches the part's edge
PART_MARGIN = 4
PART_CELL = 4  # the part's mask is made of blocks of this many pixels square


class FeatureDetector(Detector):
    """Base of detectors on :class:`PatchFeatureExtractor` features."""

    config: FeatureDetectorConfig

    def __init__(self, config: FeatureDetectorConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        c = self.config
        if c.score_region not in SCORE_REGIONS:
            raise ConfigError(f"score_region must be one of {', '.join(SCORE_REGIONS)}, got {c.score_region!r}")
        self.extractor = PatchFeatureExtractor(c.backbone, c.stages, c.neighbourhood, c.projection_dim, seed=c.seed)
        self.extractor.to(self.device)
        self.grid_: TileGrid | None = None
        self._map_operators: dict[tuple[int, int, int, int], SeparableMapOperator] = {}
        if c.tile is not None:
            height, width = c.image_size
            self.grid_ = TileGrid.for_image(height, width, c.tile, c.tile_overlap)

    def feature_grid(self) -> tuple[int, int]:
        """Size of the patch-score grid of one image (of one tile when tiling)."""
        side = self.config.tile
        return self.extractor.grid_size(side, side) if side else self.extractor.grid_size(*self.config.image_size)

    def features(self, batch: torch.Tensor) -> torch.Tensor:
        """Float batch ``(B, 3, H, W)`` in [0, 1] on the device -> ``(B * tiles, C, h, w)`` features."""
        if self.grid_ is None:
            return self.extractor(batch)
        if tuple(batch.shape[-2:]) != (self.grid_.height, self.grid_.width):
            raise ConfigError(
                f"this model tiles images of {self.grid_.height}x{self.grid_.width}; got {tuple(batch.shape[-2:])}"
            )
        tiles = self.grid_.cut(batch)
        step = self.config.batch_size
        return torch.cat([self.extractor(tiles[i : i + step]) for i in range(0, len(tiles), step)])

    # True where _fit reads its training images once, front to back, so that they can come from an iterable of
    # batches decoded as they are needed (fit_batches) instead of one tensor holding them all
    streams_training = False

    def training_batch_size(self) -> int:
        """Images per feature-extraction batch during training (fewer when tiling: each image gives many tiles)."""
        return self.config.batch_size if self.grid_ is None else max(1, self.config.batch_size // self.grid_.count)

    def training_features(self, images: torch.Tensor | Iterable[torch.Tensor], reporter: Reporter) -> Iterator[torch.Tensor]:
        """Features of ``uint8`` training images (one tensor, or an iterable of batches), batch by batch, with a
        progress bar."""
        if isinstance(images, torch.Tensor):
            step = self.training_batch_size()
            starts = range(0, len(images), step)
            batches: Iterable[torch.Tensor] = reporter.iter((images[s : s + step] for s in starts), "extract features", total=len(starts))
        else:
            batches = reporter.iter(images, "extract features")
        for batch in batches:
            self._check_input(batch)
            yield self.features(to_float(batch).to(self.device))

    def fit_batches(self, train: Callable[[], Iterable[torch.Tensor]], validation: torch.Tensor | None,
                    reporter: Reporter) -> "FeatureDetector":
        """:meth:`fit` on training images that never all sit in memory: ``train()`` yields ``uint8`` batches
        ``(B, 3, H, W)`` (e.g. :meth:`Preprocessing.iter_images`, which decodes the next batch meanwhile), once
        per call, so that peak memory does not grow with the number of training images. Only for detectors with
        ``streams_training``. The threshold comes from ``validation``, or (with a warning) from a second pass
        over ``train()``."""
        if not self.streams_training:
            raise ConfigError(f"{self.name} learns from all training images at once; call fit() with a tensor")
        held_out: Any = validation if validation is not None and len(validation) > 0 else None
        if held_out is None:
            reporter.log("warning: no validation images; the threshold is set on training images and may be low")
            held_out = train()
        return self.fit_with(lambda r: self._fit(train(), validation, r), held_out, reporter)  # type: ignore[arg-type]

    def fit_with(self, learn: Callable[[Reporter], None], held_out: Any, reporter: Reporter = SILENT) -> "FeatureDetector":
        """:meth:`ImageDetector.fit_with`; with ``score_region`` "auto", the region is chosen on ``held_out``
        (:meth:`choose_score_region`) between the learning and the threshold, which is then set for that region."""
        if self.config.score_region != "auto":
            return super().fit_with(learn, held_out, reporter)  # type: ignore[return-value]

        def learn_then_choose(r: Reporter) -> None:
            learn(r)
            if isinstance(held_out, torch.Tensor):
                self.config.score_region = self.choose_score_region(held_out, r)
            else:  # training images streamed twice, no validation split: nothing held out to decide on
                self.config.score_region = "image"
                r.log("image score on the whole map (no held-out images to choose the score region on)")

        try:
            return super().fit_with(learn_then_choose, held_out, reporter)  # type: ignore[return-value]
        except BaseException:  # stopped (or failed) before the threshold: the next fit chooses again
            self.config.score_region = "auto"
            raise

    @torch.no_grad()
    def choose_score_region(self, held_out: torch.Tensor, reporter: Reporter = SILENT) -> str:
        """"part" or "image" for ``score_region`` "auto", from the fitted model's maps of held-out normal
        ``uint8`` images ``(N, 3, H, W)``: "part" when capping the map off the part (:meth:`scores_and_maps`) lowers
        the image score of at least :data:`PART_SCORE_MIN_SHARE` of them by more than :data:`PART_SCORE_DROP`.

        The share of the frame that the part covers does not say this: capping lowers 5 of 6 held-out scores of
        the synthetic rods (0.39 of the frame, on a textured mat), none of 21 of MVTec AD bottle (0.65). Uses no
        labels and no defects; leaves ``score_region`` as it was.
        """
        given, lowered = self.config.score_region, []
        try:
            for start in range(0, len(held_out), self.config.batch_size):
                batch = to_float(held_out[start : start + self.config.batch_size]).to(self.device)
                self.config.score_region = "image"
                scores, maps, _ = self._score_batch(batch)  # the whole map: its maximum, PatchCore's reweighting
                self.config.score_region = "part"
                on_part, _ = self.scores_and_maps(maps, batch)
                lowered.append((on_part < scores * (1 - PART_SCORE_DROP)).cpu())
        finally:
            self.config.score_region = given
        count, total = int(torch.cat(lowered).sum()) if lowered else 0, len(held_out)
        region = "part" if total and count >= PART_SCORE_MIN_SHARE * total else "image"
        reporter.log(f"image score on the {'part' if region == 'part' else 'whole map'}: capping the map off the part "
                     f"lowers {count} of {total} held-out normal scores by more than {PART_SCORE_DROP:.0%} (the part "
                     f"from {PART_SCORE_MIN_SHARE:.0%} of them)")
        return region

    def scores_to_maps(self, patch_scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B * tiles, h, w)`` patch scores -> ``(B, H, W)`` smoothed anomaly maps."""
        if self.grid_ is None:
            key = (*patch_scores.shape[-2:], *size)
            if key not in self._map_operators:
                self._map_operators[key] = SeparableMapOperator(
                    tuple(patch_scores.shape[-2:]), size, self.config.blur_sigma, self.extractor.stride, patch_scores.device
                )
            return self._map_operators[key](patch_scores)
        tile = (self.grid_.tile, self.grid_.tile)
        maps = self.grid_.stitch(upsample(patch_scores, tile, self.extractor.stride))
        return gaussian_blur(maps.float(), self.config.blur_sigma)

    def scores_and_maps(self, maps: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image scores and maps of ``batch`` from its ``(B, H, W)`` maps: the maximum of each map. With
        ``score_region`` "part", the map off the part is first capped at its typical level (the median of its
        ``PART_CELL`` blocks' means), unchanged where no part is found (e.g. when the part is missing).

        On a plain background around a small part, the background's texture, dust and the image border give the
        highest normal scores; a defect of the part would have to outscore them. Capping (not zeroing) keeps the
        score the map's highest point (regions and overlays show what it used) and keeps the map's typical level,
        which the drift check (:mod:`anomalens.metrics.drift`) compares with the training data.
        """
        if self.config.score_region == "part":
            # on blocks of PART_CELL pixels: the mask costs a sixteenth of a pixel mask
            margin = -(-max(1, round(PART_MARGIN * min(batch.shape[-2:]) / 256)) // PART_CELL)
            blocks = part_mask(batch, grow=margin, cell=PART_CELL)
            blocks = blocks | ~blocks.flatten(1).any(dim=1)[:, None, None]  # no part found: keep the whole map
            on_part = blocks.repeat_interleave(PART_CELL, dim=1).repeat_interleave(PART_CELL, dim=2)
            on_part = on_part[:, : maps.shape[1], : maps.shape[2]]
            means = F.avg_pool2d(maps[:, None], PART_CELL, ceil_mode=True).flatten(1)
            typical = means.sort(dim=1).values[:, means.shape[1] // 2]  # a sort: exported graphs compute the same
            maps = torch.where(on_part, maps, torch.minimum(maps, typical[:, None, None]))
        return maps.flatten(1).amax(dim=1), maps

    def extractor_state(self) -> dict[str, torch.Tensor]:
        """The random projection, if any: saved so a model never depends on the RNG of another torch version."""
        projection = self.extractor.projection
        return {} if projection is None else {"feature_projection": projection}

    def load_extractor_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.config.score_region == "auto":  # training saves the region it chose; scoring "auto" would guess
            raise ValueError('score_region "auto" in a fitted model: training saves "image" or "part" in its place')
        if "feature_projection" in tensors:
            projection = tensors["feature_projection"]
            if self.extractor.projection is None or projection.shape != self.extractor.projection.shape:
                raise ValueError(f"feature projection of shape {tuple(projection.shape)} does not fit the config")
            self.extractor.projection = projection.float().to(self.device)
            self.extractor.reset_runtime()  # an exported graph holds the projection: export the loaded one
