"""What other cameras and recorders do to the same scene, replayed on training frames (augmentation).

A normal scene stored by another codec, at another bitrate or resolution looks different to a feature memory:
compression smears fine texture and adds blocks, a lower resolution blurs. ``stfeatures`` therefore also learns
from copies of its training frames passed through such a chain (see ``training_degradations``), so that these
differences are part of "normal". Each degradation streams: one object per clip, fed batches in order, so that
a video codec keeps its state from frame to frame as a real encoder does.

Specs are short strings: ``h264:35`` (libx264 at CRF 35, in memory), ``mpeg4:12`` (MPEG-4 Part 2 at quantiser
12, in memory), ``jpeg:20`` (JPEG quality 20, 4:2:0, as an
MJPEG camera), ``scale:0.5`` (down to half size and back up, bilinear), ``noise:3`` (Gaussian sensor noise of
standard deviation 3 grey levels, seeded per clip). ``+`` chains them: ``noise:3+jpeg:50`` is a noisy sensor behind an
MJPEG encoder, whose blocks then flicker from frame to frame where the scene stands still.

>>> degrade = make_degradation("jpeg:20")
>>> degrade(torch.zeros(2, 3, 64, 64, dtype=torch.uint8)).shape
torch.Size([2, 3, 64, 64])
"""

from __future__ import annotations

import io
from fractions import Fraction
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from anomalens.errors import ConfigError

Degradation = Callable[[torch.Tensor], torch.Tensor]  # uint8 (B, 3, H, W) -> uint8 (B, 3, H, W)


def jpeg_degrade(frames: torch.Tensor, quality: int) -> torch.Tensor:
    """``uint8`` frames ``(B, 3, H, W)`` -> the same frames after a JPEG round trip at ``quality`` (4:2:0)."""
    out = []
    for frame in frames.permute(0, 2, 3, 1).numpy():
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=int(quality))
        out.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def rescale_degrade(frames: torch.Tensor, factor: float) -> torch.Tensor:
    """Down to ``factor`` of the size and back (what a lower-resolution camera, upscaled, delivers)."""
    h, w = frames.shape[-2:]
    small = F.interpolate(frames.float(), size=(max(8, round(h * factor)), max(8, round(w * factor))), mode="area")
    back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    return back.round().clamp(0, 255).to(torch.uint8)


class SensorNoise:
    """Adds Gaussian noise of ``sigma`` grey levels, drawn by a generator of its own (seeded per clip), so that the
    same clip is degraded the same way in every training run and no other random draw moves."""

    def __init__(self, sigma: float, seed: int) -> None:
        self.sigma, self.generator = sigma, np.random.default_rng(seed)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        noise = self.generator.normal(0.0, self.sigma, size=tuple(frames.shape)).astype(np.float32)
        return torch.from_numpy((frames.numpy().astype(np.float32) + noise).round().clip(0, 255).astype(np.uint8))


class StreamReencode:
    """Streams frames through a video encoder (PyAV; no B-frames, one packet per frame) and its decoder, and back:
    ``libx264`` at constant quality (``h264:CRF``) or MPEG-4 Part 2 at a fixed quantiser (``mpeg4:Q``, as many
    older DVRs and IP cameras write it)."""

    def __init__(self, encoder: str, decoder: str, options: dict[str, str]) -> None:
        self.encoder_name, self.decoder_name, self.options = encoder, decoder, options
        self._encoder = None
        self._decoder = None
        self._count = 0

    def _open(self, height: int, width: int) -> None:
        import av

        self._encoder = av.CodecContext.create(self.encoder_name, "w")
        self._encoder.width, self._encoder.height = width + width % 2, height + height % 2
        self._encoder.pix_fmt = "yuv420p"
        self._encoder.time_base = Fraction(1, 25)
        self._encoder.options = dict(self.options)
        self._decoder = av.CodecContext.create(self.decoder_name, "r")

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        import av

        h, w = frames.shape[-2:]
        if self._encoder is None:
            self._open(h, w)
        out = []
        for frame in frames.permute(0, 2, 3, 1).numpy():
            padded = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            video_frame = av.VideoFrame.from_ndarray(padded, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU601", dst_color_range="MPEG"
            )
            video_frame.pts = self._count
            self._count += 1
            decoded = []
            for packet in self._encoder.encode(video_frame):
                decoded += self._decoder.decode(packet)
            if not decoded:  # no B-frames should give one frame per frame; keep the input if not
                out.append(frame)
                continue
            rgb = decoded[-1].reformat(format="rgb24", src_colorspace="ITU601", src_color_range="MPEG").to_ndarray()
            out.append(rgb[:h, :w])
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def make_degradation(spec: str, setting: str = "training_degradations", seed: int = 0) -> Degradation:
    """A fresh (per clip) degradation from its spec: ``h264:CRF``, ``mpeg4:QUANTISER``, ``jpeg:QUALITY``,
    ``scale:FACTOR`` or ``noise:SIGMA``, or several joined by ``+`` (applied left to right). ``setting`` names the
    configuration field the spec came from, in errors; ``seed`` seeds the noise."""
    steps = [_one_degradation(part, spec, setting, seed) for part in spec.split("+")]
    if len(steps) == 1:
        return steps[0]

    def chain(frames: torch.Tensor) -> torch.Tensor:
        for step in steps:
            frames = step(frames)
        return frames

    return chain


def _one_degradation(part: str, spec: str, setting: str, seed: int) -> Degradation:
    kind, _, value = part.partition(":")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{setting}: {part!r} needs a number after the colon") from None
    # The thread counts are fixed: both encoders write other frames with another count, and FFmpeg's own choice
    # follows the CPUs the process may use, so a model trained on another machine (or under taskset) differed.
    # 2 and 3 are what FFmpeg chose on the two-core machines every published figure was measured on, so those
    # models and figures stay bit-identical.
    if kind == "h264" and 0 <= number <= 51:
        return StreamReencode("libx264", "h264", {"crf": str(int(number)), "preset": "veryfast", "tune": "zerolatency",
                                                  "threads": "2"})
    if kind == "mpeg4" and 2 <= number <= 31:  # a fixed quantiser: qmin = qmax (2 best ... 31 worst)
        return StreamReencode("mpeg4", "mpeg4", {"qmin": str(int(number)), "qmax": str(int(number)), "threads": "3"})
    if kind == "jpeg" and 1 <= number <= 100:
        return lambda frames: jpeg_degrade(frames, int(number))
    if kind == "scale" and 0.1 <= number < 1:
        return lambda frames: rescale_degrade(frames, number)
    if kind == "noise" and 0 < number <= 64:
        return SensorNoise(number, seed)
    where = "" if part == spec else f" in {spec!r}"
    raise ConfigError(
        f"{setting}: unknown or out-of-range {part!r}{where}; use h264:0-51, mpeg4:2-31, jpeg:1-100, "
        "scale:0.1-0.99 or noise:0-64, joined by + to chain them"
    )
