"""The convolutional autoencoder: the original system's image model, trained and scored honestly.

It learns to rebuild normal images through a 16x smaller bottleneck; where a test image differs from
anything normal, the reconstruction fails and the per-pixel error is high.

* :class:`ConvAutoencoder`: the maths, a plain ``nn.Module`` (four conv blocks down, 256 -> 16 spatial,
  four transposed-conv blocks up, latent 256 channels, about 1.54M parameters), as in the original.
* :class:`Autoencoder`: the :class:`~anomalens.models.base.Detector` around it: training with the best
  epoch chosen on held-out *normal* images, the anomaly map, the image score, saving.

Anomaly map: the per-pixel reconstruction error (see :mod:`anomalens.models.components.losses`), Gaussian-smoothed,
then compared with the normal training images at the same pixel (``normal_reference``): ``mean`` subtracts
their mean smoothed error (the error every normal image has at the same place, such as edges and
reflections), ``zscore`` also divides by its spread, ``none`` keeps the raw smoothed error. These are
normal-data statistics, saved with the model. Image score: the *maximum* of that map. The original scored the *mean* error: a defect of
a few hundred pixels vanishes in a mean over 65,536 pixels, while the maximum of the smoothed map
responds to it and smoothing keeps single noisy pixels from deciding.

>>> from anomalens.models.base import create_detector
>>> model = create_detector("autoencoder", epochs=2, image_size=(64, 64))
>>> model.fit(train_uint8, validation_uint8)                     # doctest: +SKIP
>>> prediction = model.predict(test_uint8)                       # doctest: +SKIP
>>> prediction.scores.shape, prediction.maps.shape, prediction.views.shape   # doctest: +SKIP
((83,), (83, 64, 64), (83, 3, 64, 64))
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn

from anomalens.data.preprocessing import to_float
from anomalens.errors import Cancelled, ConfigError
from anomalens.models.base import Detector, DetectorConfig
from anomalens.models.components.kernels import gaussian_blur
from anomalens.models.components.losses import LOSS_KINDS, error_map
from anomalens.progress import Reporter
from anomalens.runtime import seed_everything

DOWNSAMPLING = 16  # four 2x poolings: each image side must be a multiple of this
ENCODER_CHANNELS = (32, 64, 128)  # the fourth block has latent_dim channels
NORMAL_REFERENCES = ("none", "mean", "zscore")
STD_FLOOR = 0.1  # share of the average per-pixel std added to each pixel's std in ``zscore``


# ---- the network ---------------------------------------------------------------------------------
def _conv_bn(cin: int, cout: int, act: nn.Module) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel_size=3, padding=1), nn.BatchNorm2d(cout), act]


def _down_block(cin: int, cout: int) -> nn.Sequential:
    """Two 3x3 conv + BN + LeakyReLU, then a 2x max-pool (halves each side)."""
    act = nn.LeakyReLU(0.2, inplace=True)
    return nn.Sequential(*_conv_bn(cin, cout, act), *_conv_bn(cout, cout, act), nn.MaxPool2d(2, 2))


def _up_block(cin: int, cout: int, final_channels: int | None = None) -> nn.Sequential:
    """2x transposed conv + BN + ReLU, then a 3x3 conv (+ BN + ReLU, or to ``final_channels`` + tanh)."""
    layers: list[nn.Module] = [nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    if final_channels is None:
        layers += _conv_bn(cout, cout, nn.ReLU(inplace=True))
    else:
        layers += [nn.Conv2d(cout, final_channels, kernel_size=3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


class ConvAutoencoder(nn.Module):
    """Images in [-1, 1] ``(B, 3, H, W)`` -> latent ``(B, latent_dim, H/16, W/16)`` -> images in [-1, 1].

    >>> net = ConvAutoencoder()
    >>> net(torch.zeros(1, 3, 256, 256)).shape
    torch.Size([1, 3, 256, 256])
    """

    def __init__(self, in_channels: int = 3, latent_dim: int = 256) -> None:
        super().__init__()
        c1, c2, c3 = ENCODER_CHANNELS
        self.encoder = nn.Sequential(
            _down_block(in_channels, c1), _down_block(c1, c2), _down_block(c2, c3), _down_block(c3, latent_dim)
        )
        self.decoder = nn.Sequential(
            _up_block(latent_dim, c3), _up_block(c3, c2), _up_block(c2, c1), _up_block(c1, c1, final_channels=in_channels)
        )
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_normal_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


# ---- the detector --------------------------------------------------------------------------------
@dataclass
class AutoencoderConfig(DetectorConfig):
    """Settings of :class:`Autoencoder`; the first seven are the original's CLI flags.

    ``loss``: ``mse``, ``ssim`` or ``combined``; it is both the training loss and the anomaly map.
    ``ssim_weight``: in ``combined``, the weight of the SSIM term ``(1 - SSIM)``; the squared error gets
    ``1 - ssim_weight`` (0.5 weighs both equally; ignored by ``mse`` and ``ssim``).
    ``num_workers``: accepted for the original's flag; images arrive decoded in memory, so batches are
    sliced without worker processes and it has no effect.
    ``smoothing_sigma``: Gaussian sigma in pixels (at ``image_size``) applied to the error map.
    ``patience``: stop after this many epochs without a better validation loss (0: never stop early).
    ``normal_reference``: ``none``, ``mean`` or ``zscore``: how the map is compared with the smoothed error
    maps of the normal training images at each pixel (nothing; minus their mean; minus their mean, divided
    by their standard deviation plus 10% of its average, a floor for pixels that never vary).
    """

    epochs: int = 50
    batch_size: int = 16
    lr: float = 1e-3
    latent_dim: int = 256
    loss: str = "mse"
    ssim_weight: float = 0.5
    num_workers: int = 0
    smoothing_sigma: float = 4.0
    patience: int = 10
    weight_decay: float = 1e-5
    normal_reference: str = "mean"

    def __post_init__(self) -> None:
        h, w = self.image_size
        if h % DOWNSAMPLING or w % DOWNSAMPLING:
            raise ConfigError(
                f"image_size {h} {w}: the autoencoder needs each side divisible by {DOWNSAMPLING} "
                f"(four 2x down-samplings), for example {max(DOWNSAMPLING, round(h / DOWNSAMPLING) * DOWNSAMPLING)}"
            )
        if self.loss not in LOSS_KINDS:
            raise ConfigError(f"loss {self.loss}: choose one of {', '.join(LOSS_KINDS)}")
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise ConfigError(f"ssim_weight {self.ssim_weight}: must be between 0 and 1")
        for name in ("epochs", "batch_size", "latent_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} {getattr(self, name)}: must be at least 1")
        if self.normal_reference not in NORMAL_REFERENCES:
            raise ConfigError(f"normal_reference {self.normal_reference!r}: choose one of {', '.join(NORMAL_REFERENCES)}")
        if not self.lr > 0:
            raise ConfigError(f"lr {self.lr}: must be positive")


class Autoencoder(Detector):
    """Reconstruction-error detector (see the module docstring for the map and the score).

    After :meth:`fit`: ``history_`` (one dict per epoch: ``epoch, train_loss, val_loss, seconds, lr``),
    ``best_epoch_`` (chosen by loss on the validation images, which are normal and held out from
    training), ``interrupted_`` (training was stopped early by Ctrl-C or Cancel; the best weights so far
    are kept).
    """

    name = "autoencoder"
    kind = "image"
    config_class = AutoencoderConfig
    config: AutoencoderConfig

    def __init__(self, config: AutoencoderConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        self.net = self._new_network()
        h, w = self.config.image_size
        self.normal_error_ = torch.zeros((h, w), device=self.device)
        self.normal_error_std_ = torch.ones((h, w), device=self.device)
        self.best_epoch_: int | None = None

    def _new_network(self) -> ConvAutoencoder:
        net = ConvAutoencoder(latent_dim=self.config.latent_dim)
        # channels_last lets oneDNN (CPU) and cuDNN pick their fast convolution kernels
        return net.to(self.device, memory_format=torch.channels_last)

    # ---- training ----------------------------------------------------------------------------
    def _fit(self, train: torch.Tensor, validation: torch.Tensor | None, reporter: Reporter) -> None:
        cfg = self.config
        seed_everything(cfg.seed)
        self.net = self._new_network()
        self.history_, self.best_epoch_, self.interrupted_ = [], None, False
        has_validation = validation is not None and len(validation) > 0
        if not has_validation:
            reporter.log("warning: no validation images; the best epoch is chosen by training loss")
        optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
        # cosine decay to 5% of lr over all steps: large steps early, fine ones when choosing the best epoch
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step / (cfg.epochs * steps_per_epoch), 1.0)))
        )
        shuffler = torch.Generator().manual_seed(cfg.seed)
        best_loss, best_state, stale = math.inf, None, 0
        try:
            for epoch in range(1, cfg.epochs + 1):
                started = time.perf_counter()
                train_loss = self._train_epoch(train, optimizer, schedule, shuffler, epoch, reporter)
                val_loss = self._mean_loss(validation, reporter) if has_validation else train_loss
                record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss if has_validation else None,
                          "seconds": round(time.perf_counter() - started, 3), "lr": optimizer.param_groups[0]["lr"]}
                self.history_.append(record)
                if not math.isfinite(train_loss):
                    reporter.log(f"warning: the loss became {train_loss} at epoch {epoch}; stopping with the best epoch so far")
                    break
                if val_loss < best_loss:
                    best_loss, best_state, stale, self.best_epoch_ = val_loss, _cpu_copy(self.net.state_dict()), 0, epoch
                else:
                    stale += 1
                reporter.log(f"epoch {epoch}/{cfg.epochs}: train loss {train_loss:.5f}"
                             + (f", validation loss {val_loss:.5f}" if has_validation else "")
                             + (" (best)" if self.best_epoch_ == epoch else ""))
                if cfg.patience and stale >= cfg.patience:
                    reporter.log(f"no better validation loss for {cfg.patience} epochs: stopping at epoch {epoch}")
                    break
        except (KeyboardInterrupt, Cancelled):
            self.interrupted_ = True
            kept = f"keeping epoch {self.best_epoch_}" if self.best_epoch_ else "no epoch finished; keeping the weights as they are"
            reporter.log(f"training stopped on request: {kept}")
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        self.normal_error_, self.normal_error_std_ = self._normal_error_statistics(train)

    def _train_epoch(self, train, optimizer, schedule, shuffler, epoch: int, reporter: Reporter) -> float:
        cfg = self.config
        self.net.train()
        order = torch.randperm(len(train), generator=shuffler)
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        if len(batches) > 1 and len(batches[-1]) == 1:
            batches[-2] = torch.cat([batches[-2], batches.pop()])  # BatchNorm cannot train on a batch of one
        total, count = 0.0, 0
        for idx in reporter.iter(batches, f"epoch {epoch}/{cfg.epochs}",
                                 info=lambda: f"loss {total / max(count, 1):.5f}"):
            x = self._to_device(train[idx])
            loss = self._loss(self._reconstruct(x), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            count += len(idx)
        return total / max(count, 1)

    @torch.no_grad()
    def _mean_loss(self, images: torch.Tensor, reporter: Reporter) -> float:
        self.net.eval()
        total = 0.0
        for start in range(0, len(images), self.config.batch_size):
            reporter.check_cancelled()
            x = self._to_device(images[start : start + self.config.batch_size])
            total += self._loss(self._reconstruct(x), x).item() * len(x)
        return total / len(images)

    @torch.no_grad()
    def _normal_error_statistics(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel mean and std of the smoothed error maps of normal images (float64 sums, one pass)."""
        self.net.eval()
        total = torch.zeros(self.normal_error_.shape, dtype=torch.float64)  # on the CPU: MPS has no float64
        squares = torch.zeros_like(total)
        for start in range(0, len(images), self.config.batch_size):
            x = self._to_device(images[start : start + self.config.batch_size])
            maps = self._smoothed_error(self._reconstruct(x), x).cpu().double()
            total += maps.sum(dim=0)
            squares += (maps * maps).sum(dim=0)
        n = max(len(images), 1)
        mean = total / n
        std = (squares / n - mean * mean).clamp_min(0.0).sqrt()
        return mean.float().to(self.device), std.float().to(self.device)

    def _compare_with_normal(self, maps: torch.Tensor) -> torch.Tensor:
        reference = self.config.normal_reference
        if reference == "none":
            return maps
        if reference == "mean":
            return maps - self.normal_error_
        std = self.normal_error_std_
        return (maps - self.normal_error_) / (std + STD_FLOOR * std.mean() + 1e-12)

    # ---- scoring -----------------------------------------------------------------------------
    def _to_device(self, images: torch.Tensor) -> torch.Tensor:
        return to_float(images).to(self.device).contiguous(memory_format=torch.channels_last)

    def _reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> [0, 1] reconstructions (the network works in [-1, 1], as the original)."""
        return (self.net(x * 2.0 - 1.0) + 1.0) * 0.5

    def _loss(self, reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return error_map(reconstruction, x, self.config.loss, self.config.ssim_weight).mean()

    def _smoothed_error(self, reconstruction: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        errors = error_map(reconstruction.float(), x.float(), self.config.loss, self.config.ssim_weight)
        return gaussian_blur(errors.contiguous(), self.config.smoothing_sigma)

    @torch.no_grad()
    def _score_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if tuple(batch.shape[-2:]) != tuple(self.normal_error_.shape):
            h, w = batch.shape[-2:]
            raise ConfigError(f"images are {h}x{w} but this autoencoder was built for {self.normal_error_.shape[0]}x"
                              f"{self.normal_error_.shape[1]}: prepare them with its preprocessing")
        self.net.eval()
        x = batch.to(self.device).contiguous(memory_format=torch.channels_last)
        reconstruction = self._reconstruct(x)
        maps = self._compare_with_normal(self._smoothed_error(reconstruction, x))
        return maps.amax(dim=(1, 2)), maps, reconstruction.clamp(0.0, 1.0).contiguous()

    # ---- saving ------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        tensors["normal_error"] = self.normal_error_
        tensors["normal_error_std"] = self.normal_error_std_
        return tensors

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tensors = dict(tensors)
        normal_error, normal_error_std = tensors.pop("normal_error"), tensors.pop("normal_error_std")
        if tuple(normal_error.shape) != tuple(self.config.image_size):
            raise ValueError(f"normal error map is {tuple(normal_error.shape)}, config says {tuple(self.config.image_size)}")
        self.net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()}, strict=True)
        self.net.eval()
        self.normal_error_ = normal_error.float().to(self.device)
        self.normal_error_std_ = normal_error_std.float().to(self.device)


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
