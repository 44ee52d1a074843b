"""PaDiM (Defard et al., 2021): a Gaussian per patch position, scored by Mahalanobis distance.

Same features, maps and image score as PatchCore, but instead of a memory bank each position of the feature
grid gets a mean and a covariance of the normal features seen there. Fitting is one pass of statistics (no
coreset), so it is faster to train; it assumes roughly aligned parts. Covariances are shrunk towards a scaled
identity with the Ledoit-Wolf rule (plus a small ridge), since a few hundred images cannot pin down ~150 x 150
entries on their own.

>>> detector = Padim(PadimConfig(image_size=(256, 256)))
>>> detector.fit(train_uint8, validation_uint8).predict(test_uint8).scores   # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anomalens.errors import ConfigError
from anomalens.models.image.feature_detector import FeatureDetector, FeatureDetectorConfig
from anomalens.progress import Reporter

MAX_STATISTICS_BYTES = 2 << 30  # refuse settings whose covariances alone would take more than 2 GiB
POSITIONS_PER_STEP = 64


@dataclass
class PadimConfig(FeatureDetectorConfig):
    ridge: float = 0.01  # added to the diagonal of every covariance, as in the PaDiM paper


def ledoit_wolf_covariance(centered: torch.Tensor) -> torch.Tensor:
    """Shrunk covariances of centred samples ``(P, n, C)`` -> ``(P, C, C)`` (Ledoit & Wolf 2004, as scikit-learn)."""
    _, n, c = centered.shape
    cov = centered.transpose(1, 2) @ centered / n
    mu = torch.diagonal(cov, dim1=1, dim2=2).sum(dim=1) / c
    delta_ = (cov**2).sum(dim=(1, 2))
    beta_ = ((centered**2).sum(dim=2) ** 2).sum(dim=1)
    beta = (beta_ / n - delta_) / (c * n)
    delta = (delta_ - 2.0 * mu * mu * c + c * mu**2) / c
    beta = torch.minimum(beta, delta)
    shrinkage = torch.where(delta > 0, beta / delta.clamp(min=1e-12), torch.zeros_like(delta))
    eye = torch.eye(c, dtype=cov.dtype, device=cov.device)
    return (1.0 - shrinkage)[:, None, None] * cov + (shrinkage * mu)[:, None, None] * eye


def spd_inverse(matrices: torch.Tensor) -> torch.Tensor:
    """Inverse of symmetric positive definite matrices ``(P, C, C)`` via Cholesky: ``inv = L^-T L^-1``.

    (Shrunk covariances are SPD by construction. Two triangular steps are 10x faster here than
    ``torch.cholesky_inverse``, and batched LU failed inside MKL on some batches.)
    """
    lower = torch.linalg.cholesky(matrices)
    eye = torch.eye(matrices.shape[-1], dtype=matrices.dtype, device=matrices.device).expand_as(matrices)
    inverse_lower = torch.linalg.solve_triangular(lower, eye, upper=False)
    return inverse_lower.transpose(-1, -2) @ inverse_lower


class Padim(FeatureDetector):
    """Mahalanobis distance of each patch feature to the Gaussian of its position."""

    name = "padim"
    config_class = PadimConfig
    config: PadimConfig

    def __init__(self, config: PadimConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        h, w = self.feature_grid()
        tiles = self.grid_.count if self.grid_ is not None else 1
        channels = self.extractor.out_channels
        needed = tiles * h * w * channels * channels * 4
        if needed > MAX_STATISTICS_BYTES:
            raise ConfigError(
                f"padim at this size needs {needed / 2**30:.1f} GiB of covariances ({tiles * h * w} positions x "
                f"{channels}^2); use patchcore, a smaller image_size, or a projection_dim"
            )
        self.mean_: torch.Tensor | None = None
        self.precision_: torch.Tensor | None = None

    def _fit(self, train: torch.Tensor, validation: torch.Tensor | None, reporter: Reporter) -> None:
        # (N * tiles, C, h, w) -> positions-first (tiles * h * w, N, C); tile position is part of the location
        per_batch = [f.cpu() for f in self.training_features(train, reporter)]
        features = torch.cat(per_batch)
        del per_batch
        tiles = self.grid_.count if self.grid_ is not None else 1
        n_images, (channels, h, w) = len(features) // tiles, features.shape[1:]
        samples = features.reshape(n_images, tiles, channels, h * w).permute(1, 3, 0, 2).reshape(-1, n_images, channels)
        del features
        positions = len(samples)
        mean = samples.mean(dim=1)
        precision = torch.empty((positions, channels, channels))
        eye = torch.eye(channels, dtype=torch.float64)
        steps = range(0, positions, POSITIONS_PER_STEP)
        for start in reporter.iter(steps, "fit gaussians", total=len(steps)):
            block = samples[start : start + POSITIONS_PER_STEP].double()
            cov = ledoit_wolf_covariance(block - block.mean(dim=1, keepdim=True)) + self.config.ridge * eye
            precision[start : start + POSITIONS_PER_STEP] = spd_inverse(cov).float()
        self.mean_, self.precision_ = mean.to(self.device), precision.to(self.device)
        self.history_.append({"positions": positions, "training_images": n_images})

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
