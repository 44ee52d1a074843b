"""The default video model: pretrained appearance features and cheap motion, against a memory of normal patches.

Cameras in inspection and surveillance are fixed, so "normal" depends on where in the frame a patch is.
For every cell of a stride-8 grid this model keeps a small memory of what normal training frames showed there
(and in the neighbouring cells, for tolerance):

* appearance: locally aware patch features of the frozen EfficientNet-Lite backbone (:mod:`.features`);
* motion: per-cell Lucas-Kanade velocity ``(vx, vy)`` and temporal-difference energy at a few frame lags,
  computed on the blurred grey frames (a stopped conveyor, an object too fast or going the wrong way are all
  far from every normal motion seen in that cell; absence of expected motion counts as much as excess).

Both are joined into one vector per cell (each part scaled to the same total variance on the training frames),
so the memory knows which motion goes with which appearance. A cell's anomaly is the distance to its nearest
normal memory entry; the frame score is the maximum over the (locally averaged) cells, smoothed in time with a
Gaussian. Nothing about the analysed video (nor any test video) sets a scale or a threshold.

>>> detector = create_detector("stfeatures")                   # doctest: +SKIP
>>> detector.fit_clips(train_clips, validation_clips)          # doctest: +SKIP
>>> result = detector.predict_clip(clip)                        # doctest: +SKIP
>>> result.scores.shape, result.maps.shape                      # (T,), (T, H/8, W/8)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from anomalens.data.preprocessing import to_float
from anomalens.errors import ConfigError, DataError
from anomalens.models.base import DetectorConfig
from anomalens.models.features import PatchFeatureExtractor
from anomalens.models.video_base import Clip, ClipPrediction, VideoDetector, clip_name
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import seed_everything


@dataclass
class SpatioTemporalConfig(DetectorConfig):
    """Settings of ``stfeatures``; field names are the CLI flags with underscores."""

    image_size: tuple[int, int] = (160, 240)
    batch_size: int = 16
    backbone: str = "lite0"
    stages: tuple[int, ...] = (2, 3)
    motion_lags: tuple[int, ...] = (1,)
    motion_weight: float = 1.0  # weight of motion against appearance in the joint feature
    memory_size: int = 256  # normal entries kept per cell
    position_tolerance: int = 1  # a cell's memory also holds what its neighbours within this many cells saw
    frame_step: int = 2  # use every n-th training frame for the memory (neighbouring frames are redundant)
    temporal_sigma: float = 2.0  # Gaussian smoothing of frame scores, in frames (0 = none)


# ---- motion ------------------------------------------------------------------------------------


MOTION_LEVELS = (2, 4)  # grey frames at 1/2 and 1/4 of the input size: small and large displacements


def grey_pyramid(frames01: torch.Tensor) -> list[torch.Tensor]:
    """``(B, 3, H, W)`` in [0, 1] -> blurred grey frames ``(B, 1, H/f, W/f)`` for each factor of MOTION_LEVELS."""
    grey = frames01.mean(dim=1, keepdim=True)
    return [_gaussian_blur(F.avg_pool2d(grey, factor, ceil_mode=True), sigma=1.0) for factor in MOTION_LEVELS]


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    return F.conv2d(x, kernel.view(1, 1, -1, 1))


def lucas_kanade_cells(
    before: torch.Tensor, after: torch.Tensor, grid: tuple[int, int], ridge: float = 1e-5, max_speed: float = 3.0
) -> torch.Tensor:
    """Per-cell motion between two grey frame batches ``(B, 1, h, w)``: ``(B, 3, *grid)`` = (vx, vy, energy).

    One least-squares velocity per cell (Lucas-Kanade over the cell), in pixels of the input per step;
    ``ridge`` pulls textureless cells, where velocity is undefined, towards zero. ``energy`` is the RMS of the
    temporal difference, which keeps growing where the linearised velocity saturates (fast motion).
    """
    mean = 0.5 * (before + after)
    ix = 0.5 * (F.pad(mean, (0, 1, 0, 0), mode="replicate")[..., 1:] - F.pad(mean, (1, 0, 0, 0), mode="replicate")[..., :-1])
    iy = 0.5 * (F.pad(mean, (0, 0, 0, 1), mode="replicate")[..., 1:, :] - F.pad(mean, (0, 0, 1, 0), mode="replicate")[..., :-1, :])
    it = after - before
    products = torch.cat([ix * ix, ix * iy, iy * iy, ix * it, iy * it, it * it], dim=1)
    s = F.adaptive_avg_pool2d(products, grid)
    sxx, sxy, syy, sxt, syt, stt = (s[:, i] for i in range(6))
    # Regularise in proportion to the texture too, so that along an edge (aperture problem) the undefined
    # component shrinks to zero instead of turning into noise; beyond max_speed the linearisation is meaningless
    damping = ridge + 0.05 * (sxx + syy)
    sxx, syy = sxx + damping, syy + damping
    det = sxx * syy - sxy * sxy
    vx = (-(syy * sxt - sxy * syt) / det).clamp(-max_speed, max_speed)
    vy = (-(sxx * syt - sxy * sxt) / det).clamp(-max_speed, max_speed)
    return torch.stack([vx, vy, stt.clamp_min(0).sqrt()], dim=1)


class MotionEncoder:
    """Streams grey pyramids and returns each frame's motion descriptor ``(channels, h, w)``.

    Per lag and pyramid level: Lucas-Kanade velocity (input pixels per frame) and difference energy per cell.
    Frame ``t`` compares with frame ``t - lag``; at the start of a clip the largest available lag is used, and
    the very first frame borrows the motion of the second (it has no past), so no frame looks "stopped".
    """

    def __init__(self, lags: Sequence[int], grid: tuple[int, int]) -> None:
        self.lags = tuple(int(lag) for lag in lags)
        self.grid = grid
        self.history: list[list[torch.Tensor]] = []

    @property
    def channels(self) -> int:
        return 3 * len(self.lags) * len(MOTION_LEVELS)

    def push(self, pyramid: list[torch.Tensor]) -> torch.Tensor | None:
        """Add one frame's pyramid (each level ``(1, h, w)``); its motion, or None for a clip's first frame."""
        self.history.append(pyramid)
        self.history = self.history[-(max(self.lags) + 1) :]
        if len(self.history) == 1:
            return None
        parts = []
        for lag in self.lags:
            used = min(lag, len(self.history) - 1)
            for level, factor in enumerate(MOTION_LEVELS):
                before, after = self.history[-1 - used][level], pyramid[level]
                motion = lucas_kanade_cells(before[None], after[None], self.grid)[0]
                motion[:2] *= factor / used  # velocity per frame, in input pixels
                motion[2] /= math.sqrt(used)  # the energy of a difference grows about as sqrt(lag)
                parts.append(motion)
        return torch.cat(parts)


# ---- per-position memory -----------------------------------------------------------------------


def batched_greedy_coreset(points: torch.Tensor, size: int, seed: int = 0, projection_dim: int = 32) -> torch.Tensor:
    """Greedy k-centre selection run for many small sets at once: ``(P, N, C)`` -> indices ``(P, size)``.

    The PatchCore coreset rule (each pick is the point farthest from those already picked), vectorised over
    the P cells, so that every cell's memory covers its normal variety with ``size`` entries. As in PatchCore,
    distances are measured after a seeded random projection to ``projection_dim`` channels (much faster).
    """
    p, n, c = points.shape
    size = min(size, n)
    generator = torch.Generator().manual_seed(seed)
    if projection_dim < c:
        points = points @ (torch.randn(c, projection_dim, generator=generator) / projection_dim**0.5).to(points)
    points = points.contiguous()
    picked = torch.empty(p, size, dtype=torch.long, device=points.device)
    picked[:, 0] = torch.randint(0, n, (p,), generator=generator).to(points.device)
    rows = torch.arange(p, device=points.device)
    nearest = torch.full((p, n), math.inf, device=points.device)
    norms = points.pow(2).sum(-1)
    for k in range(1, size + 1):
        chosen = points[rows, picked[:, k - 1]].unsqueeze(2)  # (P, C, 1)
        dist = torch.baddbmm(norms.unsqueeze(2), points, chosen, alpha=-2.0).squeeze(2)
        dist += chosen.pow(2).sum(1)
        torch.minimum(nearest, dist, out=nearest)
        if k < size:
            picked[:, k] = nearest.argmax(dim=1)
    return picked


class PositionalMemory:
    """Normal feature vectors per grid cell; distances of new features to their cell's nearest entry."""

    def __init__(self, bank: torch.Tensor | None = None) -> None:
        self.bank = bank  # (h*w, M, C)

    @classmethod
    def build(
        cls, features: torch.Tensor, size: int, tolerance: int, seed: int, chunk: int = 8, reporter: Reporter = SILENT
    ) -> "PositionalMemory":
        """``features`` ``(N, C, h, w)`` of normal frames -> a memory of ``size`` entries per cell."""
        n, c, h, w = features.shape
        banks = []
        for start in reporter.iter(range(0, h * w, chunk), "select the normal memory of each cell"):
            cells = torch.arange(start, min(start + chunk, h * w))
            samples = _cell_samples(features, tolerance, cells).float()
            picked = batched_greedy_coreset(samples, size, seed)
            banks.append(torch.gather(samples, 1, picked[..., None].expand(-1, -1, c)))
        # kept at float16 precision, as saved, so that a reloaded model scores exactly the same
        return cls(torch.cat(banks).half().float())

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, h, w)`` -> ``(B, h, w)`` Euclidean distance to the nearest entry of each cell's memory."""
        assert self.bank is not None
        b, c, h, w = features.shape
        queries = features.flatten(2).permute(2, 0, 1).to(self.bank.dtype)  # (h*w, B, C)
        d2 = (
            queries.pow(2).sum(-1, keepdim=True)
            - 2 * torch.bmm(queries, self.bank.transpose(1, 2))
            + self.bank.pow(2).sum(-1).unsqueeze(1)
        )
        return d2.amin(dim=2).clamp_min(0).sqrt().permute(1, 0).reshape(b, h, w)


def _cell_samples(features: torch.Tensor, tolerance: int, cells: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(P, N * (2t+1)^2, C)``: for each listed cell, what it and its neighbours saw."""
    n, c, h, w = features.shape
    rows, cols = cells // w, cells % w
    offsets = torch.arange(-tolerance, tolerance + 1)
    r = (rows[:, None, None] + offsets[None, :, None]).clamp(0, h - 1)
    q = (cols[:, None, None] + offsets[None, None, :]).clamp(0, w - 1)
    flat = (r * w + q).reshape(len(cells), -1)  # (P, K)
    gathered = features.flatten(2)[:, :, flat]  # (N, C, P, K)
    return gathered.permute(2, 0, 3, 1).reshape(len(cells), -1, c)


def motion_view(before: torch.Tensor, after: torch.Tensor) -> np.ndarray:
    """What the model looks at, for display: the grey frame with its frame-to-frame change brightened."""
    change = (after - before).abs().mul(4.0).clamp(0, 1)
    view = (0.6 * after + 0.4 * change).clamp(0, 1).mul(255).round().to(torch.uint8)
    return view.expand(-1, 3, -1, -1).cpu().numpy()


def gaussian_smooth_1d(values: np.ndarray, sigma: float) -> np.ndarray:
    """Smooth a score series with a Gaussian of ``sigma`` frames, reflecting at both ends."""
    if sigma <= 0 or len(values) < 2:
        return values.astype(np.float32)
    radius = int(math.ceil(3 * sigma))
    t = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (t / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values.astype(np.float64), radius, mode="reflect" if len(values) > radius else "edge")
    return np.convolve(padded, kernel, mode="valid").astype(np.float32)


# ---- the detector ------------------------------------------------------------------------------


@dataclass
class FrameFeatures:
    """Per-frame features of a clip: appearance ``(T, C, h, w)``, motion ``(T, M, h, w)``, views ``(T, 3, h2, w2)``."""

    appearance: torch.Tensor
    motion: torch.Tensor
    views: np.ndarray


class SpatioTemporalFeatures(VideoDetector):
    """Position-aware kNN on pretrained appearance features and per-cell motion, smoothed in time."""

    name = "stfeatures"
    config_class = SpatioTemporalConfig
    config: SpatioTemporalConfig

    def __init__(self, config: SpatioTemporalConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        c = self.config
        if not c.motion_lags or min(c.motion_lags) < 1:
            raise ConfigError(f"motion_lags must be positive frame counts, got {list(c.motion_lags)}")
        if c.memory_size < 1 or c.frame_step < 1 or c.position_tolerance < 0:
            raise ConfigError("memory_size and frame_step must be >= 1 and position_tolerance >= 0")
        self.extractor = PatchFeatureExtractor(c.backbone, stages=c.stages, neighbourhood=3, seed=c.seed).to(self.device)
        self.grid = self.extractor.grid_size(*c.image_size)
        self.memory_: PositionalMemory | None = None
        self.appearance_scale_: torch.Tensor | None = None  # scalar, from training frames
        self.motion_scale_: torch.Tensor | None = None  # per motion channel, from training frames

    # ---- features -------------------------------------------------------------------------------
    def _batches(self, clip: Clip) -> Iterator[torch.Tensor]:
        batch: list[torch.Tensor] = []
        for frame in clip:
            if tuple(frame.shape[-2:]) != tuple(self.config.image_size):
                raise DataError(
                    f"frame of size {frame.shape[-1]}x{frame.shape[-2]}, expected the model's "
                    f"{self.config.image_size[1]}x{self.config.image_size[0]} (prepare frames with the model's preprocessing)",
                    clip_name(clip),
                )
            batch.append(frame)
            if len(batch) == self.config.batch_size:
                yield torch.stack(batch)
                batch = []
        if batch:
            yield torch.stack(batch)

    @torch.no_grad()
    def clip_features(self, clip: Clip, reporter: Reporter) -> FrameFeatures:
        """Decode the clip once, front to back, and compute every frame's appearance and motion features."""
        motion = MotionEncoder(self.config.motion_lags, self.grid)
        appearance, motions, views = [], [], []
        first_missing = False
        previous: torch.Tensor | None = None
        for count, batch in enumerate(self._batches(clip)):
            if count % 4 == 0:
                reporter.check_cancelled()
            frames = to_float(batch).to(self.device)
            appearance.append(self.extractor(frames).half().cpu())
            pyramid = grey_pyramid(frames)
            for index in range(len(frames)):
                m = motion.push([level[index] for level in pyramid])
                if m is None:
                    first_missing = True
                else:
                    motions.append(m.cpu())
            grey = pyramid[0]
            before = torch.cat([grey[:1] if previous is None else previous, grey[:-1]])
            previous = grey[-1:]
            views.append(motion_view(before, grey))
        if not appearance:
            raise DataError("the clip has no frames")
        if first_missing:
            motions.insert(0, motions[0] if motions else torch.zeros(motion.channels, *self.grid))
        return FrameFeatures(torch.cat(appearance), torch.stack(motions), np.concatenate(views))

    def joint_features(self, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """Appearance and motion ``(N, *, h, w)`` -> one vector per cell, each part of unit total variance.

        One joint memory (rather than one per cue) knows which motion goes with which appearance: a striped
        belt standing still is anomalous even though an empty, motionless patch of belt between parts is not.
        """
        assert self.appearance_scale_ is not None and self.motion_scale_ is not None
        weight = self.config.motion_weight / math.sqrt(len(self.motion_scale_))
        return torch.cat(
            [
                appearance.float() / self.appearance_scale_,
                motion.float() / self.motion_scale_.view(1, -1, 1, 1) * weight,
            ],
            dim=1,
        )

    # ---- training -------------------------------------------------------------------------------
    def _fit_clips(self, train: Sequence[Clip], validation: Sequence[Clip], reporter: Reporter) -> None:
        c = self.config
        seed_everything(c.seed)
        train = list(train)
        if not train:
            raise DataError("no training clips")
        appearance, motion, jitter = [], [], _Jitter()
        for clip in reporter.iter(train, "features of training clips"):
            features = self.clip_features(clip, reporter)
            jitter.add(features.appearance, features.motion)
            keep = torch.arange(0, len(features.appearance), c.frame_step)
            appearance.append(features.appearance[keep])
            motion.append(features.motion[keep])
        appearance_all, motion_all = torch.cat(appearance), torch.cat(motion)
        del appearance, motion
        # Each part is measured in units of its own frame-to-frame change on normal video, so that "as unusual
        # as a typical change between two normal frames" weighs the same for appearance and for motion
        self.appearance_scale_, self.motion_scale_ = jitter.scales()
        reporter.log(f"building the normal memory from {len(appearance_all)} frames, {self.grid[0]}x{self.grid[1]} cells")
        joint = torch.cat(
            [self.joint_features(appearance_all[i : i + 256], motion_all[i : i + 256]).half() for i in range(0, len(appearance_all), 256)]
        )
        del appearance_all, motion_all
        self.memory_ = PositionalMemory.build(joint, c.memory_size, c.position_tolerance, c.seed, reporter=reporter)

    def _distance_maps(self, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        assert self.memory_ is not None
        step = 64
        return torch.cat(
            [
                self.memory_.distances(self.joint_features(appearance[i : i + step], motion[i : i + step]))
                for i in range(0, len(appearance), step)
            ]
        )

    # ---- scoring --------------------------------------------------------------------------------
    @torch.no_grad()
    def _predict_clip(self, clip: Clip, reporter: Reporter) -> ClipPrediction:
        if self.memory_ is None:
            raise RuntimeError("stfeatures is not fitted: call fit_clips() first")
        features = self.clip_features(clip, reporter)
        distances = self._distance_maps(features.appearance, features.motion)
        maps = F.avg_pool2d(distances[:, None], 3, stride=1, padding=1, count_include_pad=False)[:, 0]
        frame_scores = maps.flatten(1).amax(dim=1).numpy()
        return ClipPrediction(
            scores=gaussian_smooth_1d(frame_scores, self.config.temporal_sigma),
            maps=maps.numpy().astype(np.float16),
            views=features.views,
        )

    # ---- persistence ----------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.memory_ is None or self.memory_.bank is None:
            raise RuntimeError("stfeatures is not fitted: nothing to save")
        return {
            "memory": self.memory_.bank.half(),
            "appearance_scale": self.appearance_scale_,
            "motion_scale": self.motion_scale_,
        }

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        cells = self.grid[0] * self.grid[1]
        bank = tensors["memory"]
        channels = self.extractor.out_channels + MotionEncoder(self.config.motion_lags, self.grid).channels
        if bank.ndim != 3 or bank.shape[0] != cells or bank.shape[2] != channels:
            raise ValueError(f"memory of shape {tuple(bank.shape)} does not fit {cells} cells of {channels} channels")
        self.memory_ = PositionalMemory(bank.float())
        self.appearance_scale_ = tensors["appearance_scale"].float()
        self.motion_scale_ = tensors["motion_scale"].float()


class _Jitter:
    """Accumulates the RMS frame-to-frame change of appearance (over all channels) and of motion (velocities
    sharing one scale, so that a rare direction keeps its physical size; energies their own), per lag and level."""

    def __init__(self) -> None:
        self.appearance, self.motion, self.count = 0.0, None, 0

    def add(self, appearance: torch.Tensor, motion: torch.Tensor) -> None:
        if len(appearance) < 2:
            return
        for i in range(1, len(appearance), 128):
            chunk = slice(i, i + 128)
            previous = slice(i - 1, min(i + 127, len(appearance) - 1))
            da = appearance[chunk].float() - appearance[previous].float()
            dm = motion[chunk].float() - motion[previous].float()
            self.appearance += float(da.pow(2).sum(1).sum())
            squares = dm.pow(2).transpose(0, 1).flatten(1).sum(1).double()
            self.motion = squares if self.motion is None else self.motion + squares
            self.count += da.shape[0] * da.shape[2] * da.shape[3]

    def scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.count == 0 or self.motion is None:
            raise DataError("training clips need at least two frames each to learn normal motion")
        appearance = torch.tensor(math.sqrt(self.appearance / self.count)).float()
        rms = (self.motion / self.count).sqrt().float().view(-1, 3)
        velocity = rms[:, :2].pow(2).mean(dim=1).sqrt()
        motion = torch.stack([velocity, velocity, rms[:, 2]], dim=1).flatten()
        return appearance.clamp_min(1e-6), motion.clamp_min(1e-4)
