"""The original system's video model: a per-frame conv encoder, a ConvLSTM over time, a conv decoder.

Trained to reconstruct windows of ``sequence_length`` normal frames; a frame's anomaly map is its own squared
reconstruction error (averaged over the windows that cover it), and its score is the maximum of that map after
local smoothing (a mean over the whole frame would hide small anomalies). The best epoch is chosen by the
reconstruction loss on held-out normal clips, never on test videos.

>>> detector = create_detector("convlstm", image_size=(128, 128), epochs=4)   # doctest: +SKIP
>>> detector.fit_clips(train_clips, validation_clips)                         # doctest: +SKIP
>>> detector.predict_clip(clip).scores.shape                                  # one score per frame  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomalens.data.preprocessing import to_float
from anomalens.errors import Cancelled, ConfigError
from anomalens.models.base import DetectorConfig
from anomalens.models.video.base import Clip, ClipPrediction, FrameBuffer, VideoDetector, clip_name
from anomalens.progress import Reporter
from anomalens.runtime import seed_everything

MAP_POOL = 4  # anomaly maps are kept at 1/4 of the input resolution


@dataclass
class ConvLSTMConfig(DetectorConfig):
    """The original system's settings, with its defaults."""

    sequence_length: int = 16  # frames per training window
    stride: int = 4  # frames between the starts of two windows
    epochs: int = 50  # passes over the training windows
    batch_size: int = 4  # windows per batch
    lr: float = 1e-4  # learning rate (Adam)
    latent_dim: int = 128  # channels of the encoder's output
    lstm_hidden_dim: int = 128  # channels of the ConvLSTM's state
    lstm_layers: int = 2  # stacked ConvLSTM layers


# ---- the network ---------------------------------------------------------------------------------


class ConvLSTMCell(nn.Module):
    """One ConvLSTM layer (Shi et al., 2015): the LSTM gates are 3x3 convolutions over (input, hidden)."""

    def __init__(self, in_channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(in_channels + hidden, 4 * hidden, 3, padding=1)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(8, cout), nn.LeakyReLU(0.2, inplace=True))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(8, cout), nn.LeakyReLU(0.2, inplace=True))


class ConvLSTMAutoencoder(nn.Module):
    """Frames ``(B, T, 3, H, W)`` in [0, 1] -> reconstructions of the same shape (H, W divisible by 16)."""

    def __init__(self, latent_dim: int = 128, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.encoder = nn.Sequential(_down(3, 32), _down(32, 64), _down(64, 64), _down(64, latent_dim))
        self.cells = nn.ModuleList(ConvLSTMCell(latent_dim if i == 0 else hidden, hidden) for i in range(layers))
        self.decoder = nn.Sequential(
            _up(hidden, 64), _up(64, 64), _up(64, 32), nn.ConvTranspose2d(32, 3, 4, stride=2, padding=1), nn.Sigmoid()
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        b, t = frames.shape[:2]
        codes = self.encoder(frames.flatten(0, 1))
        codes = codes.view(b, t, *codes.shape[1:])
        states = [
            (codes.new_zeros(b, cell.hidden, *codes.shape[-2:]), codes.new_zeros(b, cell.hidden, *codes.shape[-2:]))
            for cell in self.cells
        ]
        outputs = []
        for step in range(t):
            x = codes[:, step]
            for index, cell in enumerate(self.cells):
                states[index] = cell(x, states[index])
                x = states[index][0]
            outputs.append(x)
        decoded = self.decoder(torch.stack(outputs, dim=1).flatten(0, 1))
        return decoded.view(b, t, *decoded.shape[1:])


# ---- the detector --------------------------------------------------------------------------------


def window_starts(length: int, sequence_length: int, stride: int) -> list[int]:
    """Starts of the windows that score a clip: every ``stride`` frames, plus one flush with the end."""
    starts = list(range(0, length - sequence_length + 1, stride))
    if starts and starts[-1] + sequence_length < length:
        starts.append(length - sequence_length)
    return starts


class ConvLSTMDetector(VideoDetector):
    """ConvLSTM autoencoder over frame windows; per-frame score from the frame's own reconstruction error."""

    name = "convlstm"
    config_class = ConvLSTMConfig
    config: ConvLSTMConfig

    def __init__(self, config: ConvLSTMConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        c = self.config
        if c.sequence_length < 1 or c.stride < 1:
            raise ConfigError(f"sequence_length and stride must be >= 1 (got {c.sequence_length}, {c.stride})")
        if c.stride > c.sequence_length:
            raise ConfigError(f"stride {c.stride} is longer than sequence_length {c.sequence_length}: frames would go unscored")
        if any(side % 16 for side in c.image_size):
            raise ConfigError(f"convlstm needs an image size divisible by 16, got {c.image_size[0]}x{c.image_size[1]}")
        self.net = ConvLSTMAutoencoder(c.latent_dim, c.lstm_hidden_dim, c.lstm_layers).to(self.device)

    # ---- training -------------------------------------------------------------------------------
    def _frames(self, clip: Clip) -> torch.Tensor:
        frames = list(clip)
        if len(frames) < self.config.sequence_length:
            raise ConfigError(
                f"the clip has {len(frames)} frames, fewer than sequence_length {self.config.sequence_length}",
                clip_name(clip),
            )
        return torch.stack(frames)

    def _windows(self, clips: list[torch.Tensor], stride: int) -> list[tuple[int, int]]:
        return [(i, s) for i, frames in enumerate(clips) for s in window_starts(len(frames), self.config.sequence_length, stride)]

    def _batch(self, clips: list[torch.Tensor], windows: list[tuple[int, int]]) -> torch.Tensor:
        length = self.config.sequence_length
        return to_float(torch.stack([clips[i][s : s + length] for i, s in windows])).to(self.device)

    @torch.no_grad()
    def _mean_loss(self, clips: list[torch.Tensor], windows: list[tuple[int, int]]) -> float:
        self.net.eval()
        total, count = 0.0, 0
        for start in range(0, len(windows), self.config.batch_size):
            batch = self._batch(clips, windows[start : start + self.config.batch_size])
            total += F.mse_loss(self.net(batch), batch, reduction="sum").item()
            count += batch.numel()
        return total / max(count, 1)

    def _fit_clips(self, train: Sequence[Clip], validation: Sequence[Clip], reporter: Reporter) -> None:
        c = self.config
        seed_everything(c.seed)
        self.net = ConvLSTMAutoencoder(c.latent_dim, c.lstm_hidden_dim, c.lstm_layers).to(self.device)
        train_frames = [self._frames(clip) for clip in reporter.iter(list(train), "decode training clips")]
        validation_frames = [self._frames(clip) for clip in validation]
        train_windows = self._windows(train_frames, c.stride)
        validation_windows = self._windows(validation_frames, c.stride)
        if not validation_windows:
            reporter.log("warning: no validation clips; the best epoch is chosen by training loss")
        optimizer = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        generator = torch.Generator().manual_seed(c.seed)
        best_loss, best_state = math.inf, None
        self.history_ = []
        try:
            for epoch in range(1, c.epochs + 1):
                self.net.train()
                order = torch.randperm(len(train_windows), generator=generator).tolist()
                batches = [order[i : i + c.batch_size] for i in range(0, len(order), c.batch_size)]
                running = _RunningMean()
                for batch_ids in reporter.iter(batches, f"epoch {epoch}/{c.epochs}", info=running.text):
                    batch = self._batch(train_frames, [train_windows[i] for i in batch_ids])
                    loss = F.mse_loss(self.net(batch), batch)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    running.add(loss.item())
                selection_loss = (
                    self._mean_loss(validation_frames, validation_windows) if validation_windows else running.value
                )
                self.history_.append({"epoch": epoch, "train_loss": running.value, "validation_loss": selection_loss})
                reporter.log(f"epoch {epoch}: train loss {running.value:.5f}, validation loss {selection_loss:.5f}")
                if selection_loss < best_loss:
                    best_loss, best_state = selection_loss, copy.deepcopy(self.net.state_dict())
        except (Cancelled, KeyboardInterrupt):
            if best_state is None:
                raise
            self.interrupted_ = True
            reporter.log(f"interrupted: keeping the best epoch so far (validation loss {best_loss:.5f})")
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()

    # ---- scoring --------------------------------------------------------------------------------
    @property
    def map_places_events(self) -> bool:
        return True  # a frame's score is the highest cell of its (smoothed) error map

    @torch.no_grad()
    def _predict_clip(self, clip: Clip, reporter: Reporter, views: bool = True) -> ClipPrediction:
        del views  # the reconstructions are a by-product of scoring: always returned
        self.net.eval()
        length, stride = self.config.sequence_length, self.config.stride
        scores: list[float] = []
        maps, views = FrameBuffer(dtype=np.float16), FrameBuffer(dtype=np.uint8)  # bounded memory on long videos
        # Stream: keep the last `length` frames; a window runs when it starts on the stride grid.
        # Per-frame error sums are finished once no later window can cover the frame.
        buffer: deque[torch.Tensor] = deque(maxlen=length)
        pending: dict[int, list] = {}  # frame index -> [error map sum, reconstruction sum, count]
        done = 0  # frames before `done` are finished
        last_start = -1
        total = 0
        for index, frame in enumerate(clip):
            if index % 32 == 0:
                reporter.check_cancelled()
            buffer.append(frame)
            total = index + 1
            start = index - length + 1
            if start >= 0 and start % stride == 0:
                self._run_window(list(buffer), start, pending, done)
                last_start = start
                self._flush(pending, start + stride, scores, maps, views)
                done = start + stride
        if total < length:
            raise ConfigError(f"the clip has {total} frames, fewer than sequence_length {length}", clip_name(clip))
        if last_start + length < total:  # frames after the last full-stride window
            self._run_window(list(buffer), total - length, pending, done)
        self._flush(pending, total, scores, maps, views)
        return ClipPrediction(
            scores=np.asarray(scores, dtype=np.float32),
            maps=maps.array(),
            views=views.array(),
        )

    def _run_window(self, frames: list[torch.Tensor], start: int, pending: dict[int, list], done: int) -> None:
        batch = to_float(torch.stack(frames)).unsqueeze(0).to(self.device)
        recon, error = self.window_errors(batch)
        for offset in range(max(0, done - start), len(frames)):  # finished frames keep their score
            entry = pending.setdefault(start + offset, [0.0, 0.0, 0])
            entry[0] = entry[0] + error[offset, 0].cpu()
            entry[1] = entry[1] + recon[offset].cpu()
            entry[2] += 1

    def window_errors(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One window ``(1, T, 3, H, W)`` in [0, 1] -> its reconstruction ``(T, 3, H, W)`` and squared error maps
        ``(T, 1, H/4, W/4)`` (also traced into exported bundles, :mod:`anomalens.export.video`)."""
        recon = self.net(batch)[0]
        error = (recon - batch[0]).pow(2).mean(dim=1, keepdim=True)
        return recon, F.avg_pool2d(error, MAP_POOL)

    def _flush(self, pending: dict[int, list], before: int, scores: list, maps: FrameBuffer, views: FrameBuffer) -> None:
        for index in sorted(i for i in pending if i < before):
            error_sum, recon_sum, count = pending.pop(index)
            error_map = error_sum / count
            # score = max of the locally smoothed map, so that small anomalies count as much as large ones
            smooth = F.avg_pool2d(error_map[None, None], 3, stride=1, padding=1, count_include_pad=False)[0, 0]
            scores.append(float(smooth.max()))
            maps.append(smooth.numpy()[None])
            views.append((recon_sum / count).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()[None])

    # ---- persistence ----------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"net.{k}": v for k, v in self.net.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        state = {k[len("net.") :]: v for k, v in tensors.items() if k.startswith("net.")}
        self.net.load_state_dict(state, strict=True)
        self.net.to(self.device).eval()


class _RunningMean:
    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    @property
    def value(self) -> float:
        return self.total / max(self.count, 1)

    def text(self) -> str:
        return f"loss {self.value:.5f}" if self.count else ""
