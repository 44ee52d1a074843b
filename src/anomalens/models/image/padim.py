"""PaDiM (Defard et al., 2021): a Gaussian per patch position, scored by Mahalanobis distance.

Same features, maps and image score as PatchCore, but instead of a memory bank each position of the feature
grid gets a mean and a covariance of the normal features seen there. Fitting is one pass of statistics (no
coreset), so it is faster to train; it assumes roughly aligned parts. Covariances are shrunk towards a scaled
identity with the Ledoit-Wolf rule (plus a small ridge), since a few hundred images cannot pin down ~150 x 150
entries on their own.

Training streams: each batch's features are folded into running sums per position (:class:`GaussianStatistics`)
and dropped, so peak memory is the statistics' size, whatever the number of training images (the images
themselves come batch by batch through :meth:`~FeatureDetector.fit_batches`).

>>> detector = Padim(PadimConfig(image_size=(256, 256)))
>>> detector.fit(train_uint8, validation_uint8).predict(test_uint8).scores   # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from anomalens.errors import ConfigError
from anomalens.models.image.feature_detector import FeatureDetector, FeatureDetectorConfig
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import LAPACK_THREADS, torch_threads

# refuse settings whose statistics would take more than 4 GiB: float64 running sums while fitting (8 bytes per
# covariance entry) plus the float32 precision matrices they become (4 bytes)
MAX_STATISTICS_BYTES = 4 << 30
BYTES_PER_ENTRY = 8 + 4
POSITIONS_PER_STEP = 64


@dataclass
class PadimConfig(FeatureDetectorConfig):
    ridge: float = 0.01  # added to the diagonal of every covariance, as in the PaDiM paper


def ledoit_wolf_covariance(centered: torch.Tensor) -> torch.Tensor:
    """Shrunk covariances of centred samples ``(P, n, C)`` -> ``(P, C, C)`` (Ledoit & Wolf 2004, as scikit-learn)."""
    n = centered.shape[1]
    cov = centered.transpose(1, 2) @ centered / n
    return shrink_covariance(cov, ((centered**2).sum(dim=2) ** 2).sum(dim=1), n)


def shrink_covariance(cov: torch.Tensor, fourth: torch.Tensor, n: int) -> torch.Tensor:
    """The Ledoit-Wolf shrinkage of empirical covariances ``(P, C, C)`` of ``n`` samples, given ``fourth`` ``(P,)``:
    the sum over samples of their squared distance to the mean, squared (the rule's one higher-moment term)."""
    c = cov.shape[-1]
    mu = torch.diagonal(cov, dim1=1, dim2=2).sum(dim=1) / c
    delta_ = (cov**2).sum(dim=(1, 2))
    beta = (fourth / n - delta_) / (c * n)
    delta = (delta_ - 2.0 * mu * mu * c + c * mu**2) / c
    beta = torch.minimum(beta, delta)
    shrinkage = torch.where(delta > 0, beta / delta.clamp(min=1e-12), torch.zeros_like(delta))
    eye = torch.eye(c, dtype=cov.dtype, device=cov.device)
    return (1.0 - shrinkage)[:, None, None] * cov + (shrinkage * mu)[:, None, None] * eye


def spd_inverse(matrices: torch.Tensor) -> torch.Tensor:
    """Inverse of symmetric positive definite matrices ``(P, C, C)`` via Cholesky: ``inv = L^-T L^-1``.

    (Shrunk covariances are SPD by construction. Two triangular steps are 10x faster here than
    ``torch.cholesky_inverse``, and batched LU failed inside MKL on some batches.) On a fixed thread count
    (:data:`anomalens.runtime.LAPACK_THREADS`): MKL's factorisation writes other bits with another count.
    """
    with torch_threads(LAPACK_THREADS):
        lower = torch.linalg.cholesky(matrices)
        eye = torch.eye(matrices.shape[-1], dtype=matrices.dtype, device=matrices.device).expand_as(matrices)
        inverse_lower = torch.linalg.solve_triangular(lower, eye, upper=False)
        return inverse_lower.transpose(-1, -2) @ inverse_lower


class GaussianStatistics:
    """Running sums of samples per position, from which the mean and the Ledoit-Wolf covariance follow exactly as
    from all the samples at once (:func:`ledoit_wolf_covariance`), in memory that does not grow with their number.

    Sums are float64 and taken about a shift (the first batch's mean), so that large means do not cancel the
    variance out. With ``d = x - mean``, the rule's fourth-moment term ``sum ||d||^4`` expands into sums of
    ``||x||^4``, ``||x||^2 x`` and ``x x^T``, all kept here.
    """

    def __init__(self, shift: torch.Tensor | None = None) -> None:
        self.count = 0
        self.shift = shift  # None: the first batch's mean; given, statistics of several sets add up (combined)
        self.sum: torch.Tensor | None = None

    def add(self, samples: torch.Tensor) -> None:
        """Fold in ``samples`` ``(P, n, C)``: ``n`` samples at each of ``P`` positions."""
        x = samples.double()
        if self.sum is None:
            positions, _, channels = x.shape
            if self.shift is None:
                self.shift = x.mean(dim=1)
            zeros = dict(dtype=torch.float64, device=x.device)
            self.sum = torch.zeros(positions, channels, **zeros)
            self.outer = torch.zeros(positions, channels, channels, **zeros)
            self.norm2 = torch.zeros(positions, **zeros)
            self.norm4 = torch.zeros(positions, **zeros)
            self.norm2_weighted = torch.zeros(positions, channels, **zeros)
        x = x - self.shift[:, None, :]
        squared = (x * x).sum(dim=2)  # (P, n)
        self.count += x.shape[1]
        self.sum += x.sum(dim=1)
        self.outer.baddbmm_(x.transpose(1, 2), x)
        self.norm2 += squared.sum(dim=1)
        self.norm4 += (squared * squared).sum(dim=1)
        self.norm2_weighted += torch.bmm(squared[:, None, :], x)[:, 0]

    @classmethod
    def combined(cls, parts: list["GaussianStatistics"]) -> "GaussianStatistics":
        """The statistics of the samples of all ``parts`` together (each with samples, all about one shift)."""
        total = cls(parts[0].shift)
        total.count = sum(p.count for p in parts)
        for name in ("sum", "outer", "norm2", "norm4", "norm2_weighted"):
            setattr(total, name, sum(getattr(p, name) for p in parts))
        return total

    def mean(self) -> torch.Tensor:
        assert self.shift is not None, "no samples were added"
        return self.shift + self.sum / self.count

    def shrunk_covariance(self, start: int, stop: int) -> torch.Tensor:
        """Ledoit-Wolf covariances ``(stop - start, C, C)`` of positions ``start:stop``, float64."""
        n, part = self.count, slice(start, stop)
        m = self.sum[part] / n  # the mean about the shift
        outer = self.outer[part]
        cov = outer / n - m[:, :, None] * m[:, None, :]
        c2 = (m * m).sum(dim=1)  # ||m||^2
        quadratic = (m[:, None, :] @ outer @ m[:, :, None])[:, 0, 0]  # sum (x.m)^2
        # sum ||x - m||^4 = sum ||x||^4 + 4 sum (x.m)^2 - 4 sum ||x||^2 x.m + 2 ||m||^2 sum ||x||^2 - 3 n ||m||^4
        fourth = (self.norm4[part] + 4 * quadratic - 4 * (self.norm2_weighted[part] * m).sum(dim=1)
                  + 2 * c2 * self.norm2[part] - 3 * n * c2 * c2)
        return shrink_covariance(cov, fourth, n)


class Padim(FeatureDetector):
    """Mahalanobis distance of each patch feature to the Gaussian of its position."""

    name = "padim"
    config_class = PadimConfig
    config: PadimConfig
    streams_training = True  # one pass of running sums (GaussianStatistics)
    # cross-fitting keeps running sums per fold (as large as the model's own) and inverts their covariances once
    # per fold: two folds cost two more sets of sums and two more inversions
    cross_fit_folds = 2

    def __init__(self, config: PadimConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        h, w = self.feature_grid()
        tiles = self.grid_.count if self.grid_ is not None else 1
        channels = self.extractor.out_channels
        needed = tiles * h * w * channels * channels * BYTES_PER_ENTRY
        if needed > MAX_STATISTICS_BYTES:
            raise ConfigError(
                f"padim at this size needs {needed / 2**30:.1f} GiB of statistics ({tiles * h * w} positions x "
                f"{channels}^2); use patchcore, a smaller image_size, or a projection_dim"
            )
        self.mean_: torch.Tensor | None = None
        self.precision_: torch.Tensor | None = None

    def _fit(self, train: torch.Tensor | Iterable[torch.Tensor], validation: torch.Tensor | None, reporter: Reporter) -> None:
        statistics = GaussianStatistics()
        for features in self.training_features(train, reporter):
            statistics.add(self.position_samples(features))
        if statistics.count == 0:
            raise ConfigError("padim needs at least one training image")
        self.mean_, self.precision_ = self._gaussians(statistics, reporter)
        self.history_.append({"positions": self.mean_.shape[0], "training_images": statistics.count})

    def position_samples(self, features: torch.Tensor) -> torch.Tensor:
        """Features ``(B * tiles, C, h, w)`` -> positions-first ``(tiles * h * w, B, C)``; the tile is part of the
        position."""
        tiles = self.grid_.count if self.grid_ is not None else 1
        images, (channels, h, w) = len(features) // tiles, features.shape[1:]
        return features.reshape(images, tiles, channels, h * w).permute(1, 3, 0, 2).reshape(-1, images, channels)

    def fold_memories(self, folds: int) -> "FoldGaussians | None":
        h, w = self.feature_grid()
        tiles = self.grid_.count if self.grid_ is not None else 1
        needed = (1 + folds) * tiles * h * w * self.extractor.out_channels**2 * BYTES_PER_ENTRY
        return FoldGaussians(self, folds) if needed <= MAX_STATISTICS_BYTES else None  # each fold: its own sums

    def _gaussians(self, statistics: GaussianStatistics, reporter: Reporter) -> tuple[torch.Tensor, torch.Tensor]:
        """The means and precision matrices of ``statistics``."""
        mean = statistics.mean()
        positions, channels = mean.shape
        precision = torch.empty((positions, channels, channels), device=mean.device)
        eye = torch.eye(channels, dtype=torch.float64, device=mean.device)
        steps = range(0, positions, POSITIONS_PER_STEP)
        for start in reporter.iter(steps, "fit gaussians", total=len(steps)):
            cov = statistics.shrunk_covariance(start, start + POSITIONS_PER_STEP) + self.config.ridge * eye
            precision[start : start + POSITIONS_PER_STEP] = spd_inverse(cov).float()
        return mean.float().to(self.device), precision.to(self.device)

    def _score_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        if self.mean_ is None or self.precision_ is None:
            raise RuntimeError("PaDiM is not fitted")
        features = self.features(batch)
        n, channels, h, w = features.shape
        count = batch.shape[0]  # shape[0], not len(): keeps the batch size symbolic when exported to ONNX
        tiles = n // count
        diff = features.reshape(count, tiles, channels, h * w).permute(1, 3, 0, 2).reshape(-1, count, channels)
        if diff.shape[0] != self.mean_.shape[0]:
            raise ConfigError(f"PaDiM was fitted on {self.mean_.shape[0]} positions; these images give {diff.shape[0]}")
        diff = diff - self.mean_[:, None, :]
        squared = ((diff @ self.precision_) * diff).sum(dim=2).clamp_(min=0.0)  # (positions, B)
        patch_scores = squared.sqrt().reshape(tiles, h, w, count).permute(3, 0, 1, 2).reshape(n, h, w)
        maps = self.scores_to_maps(patch_scores, tuple(batch.shape[-2:]))
        scores, maps = self.scores_and_maps(maps, batch)
        return scores, maps, None

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.mean_ is None or self.precision_ is None:
            raise RuntimeError("PaDiM is not fitted")
        return {"mean": self.mean_, "precision": self.precision_, **self.extractor_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        mean, precision = tensors["mean"], tensors["precision"]
        channels = self.extractor.out_channels
        if mean.ndim != 2 or mean.shape[1] != channels or precision.shape != (mean.shape[0], channels, channels):
            raise ValueError(f"statistics of shape {tuple(mean.shape)} do not fit {channels} channels")
        self.load_extractor_state(tensors)
        self.mean_, self.precision_ = mean.float().to(self.device), precision.float().to(self.device)


class FoldGaussians:
    """PaDiM's memories for cross-fitting (:mod:`~anomalens.models.image.cross_fit`): running sums per fold, all
    about one shift, so that the Gaussians without fold ``j`` are those of the other folds' sums added up."""

    def __init__(self, detector: Padim, folds: int) -> None:
        self.detector = detector
        self.statistics: list[GaussianStatistics] = []
        self.folds = folds

    def add(self, features: torch.Tensor, folds: torch.Tensor) -> None:
        samples = self.detector.position_samples(features)
        if not self.statistics:  # the first batch's mean, as the model's own statistics take it
            shift = samples.double().mean(dim=1)
            self.statistics = [GaussianStatistics(shift) for _ in range(self.folds)]
        for fold in folds.unique().tolist():
            self.statistics[fold].add(samples[:, folds == fold])

    @contextmanager
    def without(self, fold: int) -> Iterator[bool]:
        d = self.detector
        others = [s for f, s in enumerate(self.statistics) if f != fold and s.count]
        if not others:
            yield False
            return
        saved = d.mean_, d.precision_
        d.mean_, d.precision_ = d._gaussians(GaussianStatistics.combined(others), SILENT)
        try:
            yield True
        finally:
            d.mean_, d.precision_ = saved
