"""What PatchCore and PaDiM share: the pretrained patch features, optional tiling, and map post-processing.

A subclass only decides how patch features become patch scores (nearest neighbour in a memory bank, or
Mahalanobis distance to a Gaussian). Everything about pixels is here: images are cut into tiles when
``tile`` is set, features are extracted in batches, patch scores are upsampled, stitched and blurred.

>>> class MyDetector(FeatureDetector): ...   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Iterator

import numpy as np
import torch
from torch.nn import functional as F

from anomalens.data.preprocessing import part_mask, to_float
from anomalens.errors import ConfigError
from anomalens.models.components.anomaly_map import SeparableMapOperator, upsample
from anomalens.models.components.kernels import gaussian_blur
from anomalens.models.base import Detector, DetectorConfig
from anomalens.models.components.features import PatchFeatureExtractor
from anomalens.models.components.tiling import TileGrid
from anomalens.models.image.cross_fit import FOLDS, FoldMemories, TrainingFolds
from anomalens.metrics.threshold import ScoreShift, needed_validation_count, no_shift, score_shift
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
    # the part score (score_region part) is the highest mean of the capped map over squares of this many pixels
    # (rounded to PART_CELL blocks, an odd count), not its highest pixel: the normal maxima of a part lie in thin
    # bands along its outline (pose, width, the mat at the edge: 14-19 of 20 good images of the synthetic tall
    # sets), a dent or a scratch spreads over an area. On the tall sets of seeds 1-5 (README "Hard images") image
    # AUROC rose from 0.947 to 0.967 on average, the lowest from 0.910 to 0.953. 1: the map's highest pixel (as
    # before). The whole map (score_region image) keeps its highest pixel: there a mean over squares favours
    # broad background texture (the same sets: 0.851 -> 0.823).
    score_window: int = 20
    # the threshold and the score region also hear the training images, each scored by a memory built from the
    # other folds only (models/image/cross_fit.py), not only the ~10% held out: thresholds from the 6 held out of 60
    # synthetic rods or pins flagged 0-20% of further normal images (1% promised), with the folds 0-1.3% (README).
    # Only while the held-out images are too few to measure target_fpr (300 at 1%): beyond, they suffice
    threshold_from_folds: bool = True  # the threshold also hears training images scored by memories without them

    # models saved before these fields existed took the maximum of the whole map, the threshold from validation alone
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {"score_region": "image", "threshold_from_folds": False, "score_window": 1}


SCORE_REGIONS = ("auto", "image", "part")
# "auto" takes the score on the part when capping the map off the part lowers the score of at least this share of
# the held-out normal images by more than PART_SCORE_DROP: then the background (its texture, dust, the image border)
# competes with the part for the highest normal scores, and a defect of the part has to outscore it. Where no
# held-out image's score comes from off the part (MVTec AD bottle: 0 of 21), the part score could only lose defects
# that lie beside the part or where the colour rule misses some of it, so the whole map stays.
PART_SCORE_MIN_SHARE = 0.1
PART_SCORE_MIN_COUNT = 2  # ... and of at least two of them: one image's background outscoring its part is chance
PART_SCORE_DROP = 0.01  # relative: smaller changes of the maximum are the blur's tails, not the background
# pixels (at the model's input size, per 256 of its shorter side) around the part that still count for the score:
# a chip at the outline is background-coloured itself, but its blurred score reaches the part's edge
PART_MARGIN = 4
PART_CELL = 4  # the part's mask is made of blocks of this many pixels square
# with fewer held-out normal images than this, one or two of them decide the score region: training warns
MIN_REGION_IMAGES = 20
# held-out images scored by each fold's memory to measure the folds' bias (fold_shift): a paired difference, whose
# spread is a fraction of the scores', is measured well by a few hundred
SHIFT_IMAGES = 256
# the key of the part's highest pixel among the scores by region: what "auto" compares with the whole map's maximum
# (whether the background gives the highest scores), whatever score_window the part score then averages over
CAPPED = "capped"


def window_cells(window: int) -> int:
    """``score_window`` pixels -> the side of the square of ``PART_CELL`` blocks it averages (odd, so that the
    square is centred on a block; 1: no averaging)."""
    cells = max(1, round(window / PART_CELL))
    return cells if cells % 2 else cells + 1


def window_maximum(means: torch.Tensor, maps: torch.Tensor, cells: int) -> torch.Tensor:
    """Per image, the highest mean of ``cells`` x ``cells`` blocks of the ``(B, h, w)`` block ``means`` (squares
    at the border average the blocks inside the image only); with ``cells`` 1 the highest pixel of the
    ``(B, H, W)`` ``maps`` instead."""
    if cells <= 1:
        return maps.flatten(1).amax(dim=1)
    pooled = F.avg_pool2d(means[:, None], cells, stride=1, padding=cells // 2, count_include_pad=False)
    return pooled.flatten(1).amax(dim=1)


class FeatureDetector(Detector):
    """Base of detectors on :class:`PatchFeatureExtractor` features."""

    config: FeatureDetectorConfig

    def __init__(self, config: FeatureDetectorConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        c = self.config
        if c.score_region not in SCORE_REGIONS:
            raise ConfigError(f"score_region must be one of {', '.join(SCORE_REGIONS)}, got {c.score_region!r}")
        if not isinstance(c.score_window, int) or c.score_window < 1:
            raise ConfigError(f"score_window must be a whole number of pixels >= 1, got {c.score_window!r}")
        self.extractor = PatchFeatureExtractor(c.backbone, c.stages, c.neighbourhood, c.projection_dim, seed=c.seed)
        self.extractor.to(self.device)
        self.grid_: TileGrid | None = None
        self._map_operators: dict[tuple[int, int, int, int], SeparableMapOperator] = {}
        self._training_folds: TrainingFolds | None = None  # set while a local fit deals its images to folds
        self._cross_fitted: np.ndarray | None = None  # the training images' scores by memories without them
        self._dealt = False  # True from _deal_to_folds to the end of fit_with
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

    # folds of the training images for threshold_from_folds (models/image/cross_fit.py)
    cross_fit_folds: ClassVar[int] = FOLDS

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
            features = self.features(to_float(batch).to(self.device))
            if self._training_folds is not None:  # the same features also build the cross-fitting memories
                self._training_folds.add(batch, features)
            yield features

    def fold_memories(self, folds: int) -> FoldMemories | None:
        """What the model builds, beside its own memory, to score training images by memories without them
        (:mod:`~anomalens.models.image.cross_fit`); None where it cannot."""
        return None

    def _deal_to_folds(self, held_out: int, reporter: Reporter) -> None:
        """Before a local fit: deal the training images to folds, when ``threshold_from_folds`` asks for it and
        the ``held_out`` validation images are too few to measure the target rate. From that count on (300 at
        1%) the held-out images alone place the threshold, and cross-fitting would only cost time (2.4x the fit
        on bottle): with thousands of training images the 10% split is large enough."""
        self._training_folds, self._dealt = None, True
        if not self.config.threshold_from_folds:
            return
        needed = needed_validation_count(self.config.target_fpr)
        if held_out >= needed:
            reporter.log(f"threshold from the {held_out} held-out images alone: they are enough to measure a "
                         f"false-alarm rate of {self.config.target_fpr:g} (from {needed} on), so no cross-fitting")
            return
        height, width = self.config.image_size
        folds = TrainingFolds(3 * height * width, self.config.seed, self.cross_fit_folds)
        folds.memories = self.fold_memories(folds.folds)
        if folds.memories is None:
            reporter.log(f"{self.name} builds no cross-fitting memories: the threshold comes from the held-out images")
            return
        self._training_folds = folds

    def fit(self, train: torch.Tensor, validation: torch.Tensor | None = None, reporter: Reporter = SILENT) -> "FeatureDetector":
        self._deal_to_folds(0 if validation is None else len(validation), reporter)
        return super().fit(train, validation, reporter)  # type: ignore[return-value]

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
        self._no_held_out = held_out is None  # read once by fit_with's threshold
        if held_out is None:
            reporter.log("warning: no validation images; the threshold is set on training images and may be low")
            held_out = train()
        self._deal_to_folds(0 if validation is None else len(validation), reporter)
        return self.fit_with(lambda r: self._fit(train(), validation, r), held_out, reporter)  # type: ignore[arg-type]

    def fit_with(self, learn: Callable[[Reporter], None], held_out: Any, reporter: Reporter = SILENT) -> "FeatureDetector":
        """:meth:`ImageDetector.fit_with`; after the learning, the training images dealt to folds (:meth:`fit`,
        :meth:`fit_batches` with ``threshold_from_folds``) are scored by memories without them, and with
        ``score_region`` "auto" the region is chosen on ``held_out`` and those images together
        (:meth:`choose_score_region`); the threshold is then set for that region on both, the training images'
        scores lowered by how far the folds' memories score the held-out images above the model
        (:meth:`fold_shift`), which the calibration keeps (``fold_shift``)."""
        folds, self._cross_fitted = self._training_folds, None
        shift: ScoreShift | None = None
        # validation images, unseen by every memory, measure how far the folds' scores stand above the model's;
        # without validation (fit and fit_batches set _no_held_out) the held-out images are the training images
        unseen = held_out if not getattr(self, "_no_held_out", False) and isinstance(held_out, torch.Tensor) else None
        auto = self.config.score_region == "auto"
        if self.config.threshold_from_folds and not self._dealt:  # fitted elsewhere (anomalens.distributed)
            reporter.log("threshold from the held-out images alone: training images are scored by memories without "
                         "them only when the model is fitted in this process")

        def learn_then_cross_fit(r: Reporter) -> None:
            try:
                learn(r)
            finally:
                self._training_folds = None  # the features of later passes (scoring) are not training images
            regions = ("image", "part", CAPPED) if auto else (self.config.score_region,)
            cross, held_out_by_folds = self._score_by_fold_memories(folds, regions, unseen, r) if folds is not None else ({}, {})
            if auto:
                self.config.score_region = self.choose_score_region(
                    held_out if isinstance(held_out, torch.Tensor) else None, r, cross=cross)
            self._cross_fitted = cross.get(self.config.score_region)
            if self._cross_fitted is not None and folds is not None:
                nonlocal shift
                shift = self._shift_of(held_out_by_folds.get(self.config.score_region), unseen)
                r.log(shift.note)
                self._cross_fitted = self._cross_fitted - shift.shift

        try:
            super().fit_with(learn_then_cross_fit, held_out, reporter)
            if shift is not None and self.calibration_ is not None:
                self.calibration_ = self.calibration_.with_fold_shift(shift.shift, shift.items)
            return self
        except BaseException:  # stopped (or failed) before the threshold: the next fit chooses again
            if auto:
                self.config.score_region = "auto"
            raise
        finally:
            self._training_folds = self._cross_fitted = None
            self._dealt = False

    def _cross_validated_scores(self) -> np.ndarray | None:
        return self._cross_fitted

    def fold_shift(self, folds: TrainingFolds, held_out: torch.Tensor | None, reporter: Reporter = SILENT) -> ScoreShift:
        """How far the folds' memories score unseen normal images above the fitted model, in its score region:
        the held-out ``uint8`` images (at most :data:`SHIFT_IMAGES`), which no memory learned, scored by the model
        and by each fold's memory (:func:`~anomalens.metrics.threshold.score_shift`). A memory that learned fewer
        images scores normal images higher, and each training image's cross-fitted score comes from such a memory;
        uncorrected, the threshold erred high (the synthetic pins of seed 1: their mean stood 0.39 above that of
        unseen normal images, README). No held-out images: no shift. (:meth:`fit_with` scores the held-out images
        in the same pass as the training images, while each fold's memory is built once.)"""
        region = self.config.score_region
        by_folds = self._score_by_fold_memories(folds, (region,), held_out, reporter)[1].get(region)
        return self._shift_of(by_folds, held_out)

    @torch.no_grad()
    def _shift_of(self, by_folds: np.ndarray | None, held_out: torch.Tensor | None) -> ScoreShift:
        """:func:`~anomalens.metrics.threshold.score_shift` of the held-out images' scores by the folds' memories
        ``(folds, N)`` against the model's own (in its score region)."""
        if held_out is None or by_folds is None or not by_folds.size:
            return no_shift()
        return score_shift(by_folds, self._region_scores(held_out[:SHIFT_IMAGES], (self.config.score_region,))[self.config.score_region])

    def _region_scores(self, images: torch.Tensor, regions: tuple[str, ...]) -> dict[str, np.ndarray]:
        """Image scores of ``uint8`` images per region, by the memory the model holds now."""
        step, found = self.config.batch_size, {region: [] for region in regions}
        for start in range(0, len(images), step):
            for region, scores in self._scores_by_region(to_float(images[start : start + step]).to(self.device), regions).items():
                found[region].append(scores.float().cpu().numpy())
        return {region: np.concatenate(parts) for region, parts in found.items() if parts}

    def cross_fitted_scores(self, folds: TrainingFolds, regions: tuple[str, ...], reporter: Reporter = SILENT) -> dict[str, np.ndarray]:
        """Image scores (per region of ``regions``) of the training images sampled by ``folds``, each scored by
        the memory built from the other folds (:meth:`FoldMemories.without`), in fold order."""
        return self._score_by_fold_memories(folds, regions, None, reporter)[0]

    @torch.no_grad()
    def _score_by_fold_memories(self, folds: TrainingFolds, regions: tuple[str, ...], held_out: torch.Tensor | None,
                                reporter: Reporter = SILENT) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """:meth:`cross_fitted_scores`, and (given ``held_out`` images) their scores by each fold's memory,
        ``(folds, N)`` per region, for :meth:`fold_shift`: each memory is built once for both."""
        found: dict[str, list[np.ndarray]] = {region: [] for region in regions}
        by_folds: dict[str, list[np.ndarray]] = {region: [] for region in regions}
        assert folds.memories is not None
        for fold in reporter.iter(range(folds.folds), "score training images by memories without them", total=folds.folds):
            reporter.check_cancelled()
            with folds.memories.without(fold) as ready:
                if not ready:
                    continue
                for images in folds.sampled(fold, self.config.batch_size):
                    for region, scores in self._scores_by_region(to_float(images).to(self.device), regions).items():
                        found[region].append(scores.float().cpu().numpy())
                if held_out is not None and len(held_out):
                    for region, scores in self._region_scores(held_out[:SHIFT_IMAGES], regions).items():
                        by_folds[region].append(scores)
        return ({region: np.concatenate(parts) for region, parts in found.items() if parts},
                {region: np.stack(parts) for region, parts in by_folds.items() if parts})

    def _scores_by_region(self, batch: torch.Tensor, regions: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Image scores of a float batch with the score taken on each of ``regions`` ("image", "part", and
        :data:`CAPPED`: the highest pixel of the map capped off the part, which :meth:`choose_score_region`
        compares with the whole map's)."""
        given = self.config.score_region
        try:
            self.config.score_region = "image"
            scores, maps, _ = self._score_batch(batch)  # the whole map: its maximum, PatchCore's reweighting
        finally:
            self.config.score_region = given
        found = {"image": scores}
        if "part" in regions or CAPPED in regions:
            capped, means = self._capped_off_part(maps, batch)
            found["part"] = window_maximum(means, capped, window_cells(self.config.score_window))
            found[CAPPED] = capped.flatten(1).amax(dim=1)
        return {region: found[region] for region in regions}

    @torch.no_grad()
    def choose_score_region(self, held_out: torch.Tensor | None, reporter: Reporter = SILENT,
                            cross: dict[str, np.ndarray] | None = None) -> str:
        """"part" or "image" for ``score_region`` "auto", from the fitted model's maps of held-out normal
        ``uint8`` images ``(N, 3, H, W)`` and of the training images scored by memories without them (``cross``:
        their scores per region, :meth:`cross_fitted_scores`): "part" when capping the map off the part
        (:meth:`scores_and_maps`) lowers its highest point (:data:`CAPPED`; not the part score, which also averages
        over ``score_window``) of at least :data:`PART_SCORE_MIN_SHARE` of them (and at
        least :data:`PART_SCORE_MIN_COUNT`) by more than :data:`PART_SCORE_DROP`. Warns when fewer than
        :data:`MIN_REGION_IMAGES` images decide.

        The share of the frame that the part covers does not say this: capping lowers 5 of 6 held-out scores of
        the synthetic rods (0.39 of the frame, on a textured mat), none of 21 of MVTec AD bottle (0.65). Uses no
        labels and no defects; leaves ``score_region`` as it was.
        """
        lowered = []
        step = self.config.batch_size
        for start in range(0, 0 if held_out is None else len(held_out), step):
            batch = to_float(held_out[start : start + step]).to(self.device)  # type: ignore[index]
            scores = self._scores_by_region(batch, ("image", CAPPED))
            lowered.append((scores[CAPPED] < scores["image"] * (1 - PART_SCORE_DROP)).cpu().numpy())
        if cross and CAPPED in cross:
            lowered.append(cross[CAPPED] < cross["image"] * (1 - PART_SCORE_DROP))
        flags = np.concatenate(lowered) if lowered else np.zeros(0, bool)
        count, total = int(flags.sum()), len(flags)
        region = "part" if total and count >= max(PART_SCORE_MIN_COUNT, PART_SCORE_MIN_SHARE * total) else "image"
        if not total:
            reporter.log("image score on the whole map (no held-out images to choose the score region on)")
            return region
        what = "held-out normal scores" if not cross else "normal scores (held-out, and training images scored by memories without them)"
        reporter.log(f"image score on the {'part' if region == 'part' else 'whole map'}: capping the map off the part "
                     f"lowers {count} of {total} {what} by more than {PART_SCORE_DROP:.0%} (the part is chosen when "
                     f"at least {PART_SCORE_MIN_SHARE:.0%} of them, and at least {PART_SCORE_MIN_COUNT}, are lowered)")
        if total < MIN_REGION_IMAGES:
            reporter.log(f"warning: the score region was decided on {total} normal images (fewer than "
                         f"{MIN_REGION_IMAGES}: one or two of them decide it); hold out more normal images, or choose "
                         "it with --score-region image or part")
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
        """Image scores and maps of ``batch`` from its ``(B, H, W)`` maps. With ``score_region`` "image", the
        maximum of each map. With "part", the map off the part is first capped at its typical level (the median
        of its ``PART_CELL`` blocks' means), unchanged where no part is found (e.g. when the part is missing), and
        the score is the highest mean of the capped map over ``score_window`` pixels square
        (:func:`window_maximum`).

        On a plain background around a small part, the background's texture, dust and the image border give the
        highest normal scores; a defect of the part would have to outscore them. Capping (not zeroing) keeps the
        map's typical level, which the drift check (:mod:`anomalens.metrics.drift`) compares with the training
        data; the score never exceeds the capped map's highest point, so an image flagged by its score always has
        map pixels above the threshold (its regions and overlays show where).
        """
        if self.config.score_region != "part":
            return maps.flatten(1).amax(dim=1), maps
        capped, means = self._capped_off_part(maps, batch)
        return window_maximum(means, capped, window_cells(self.config.score_window)), capped

    def _capped_off_part(self, maps: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``maps`` capped at their typical level off the part, and the ``PART_CELL`` block means of those."""
        # on blocks of PART_CELL pixels: the mask costs a sixteenth of a pixel mask
        margin = -(-max(1, round(PART_MARGIN * min(batch.shape[-2:]) / 256)) // PART_CELL)
        blocks = part_mask(batch, grow=margin, cell=PART_CELL)
        blocks = blocks | ~blocks.flatten(1).any(dim=1)[:, None, None]  # no part found: keep the whole map
        on_part = blocks.repeat_interleave(PART_CELL, dim=1).repeat_interleave(PART_CELL, dim=2)
        on_part = on_part[:, : maps.shape[1], : maps.shape[2]]
        means = F.avg_pool2d(maps[:, None], PART_CELL, ceil_mode=True)[:, 0]
        flat = means.flatten(1)
        typical = flat.sort(dim=1).values[:, flat.shape[1] // 2]  # a sort: exported graphs compute the same
        capped = torch.where(on_part, maps, torch.minimum(maps, typical[:, None, None]))
        return capped, F.avg_pool2d(capped[:, None], PART_CELL, ceil_mode=True)[:, 0]

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
