"""One causal scorer for any detector: image models score each frame on its own, video models through their
:meth:`~anomalens.models.video.base.VideoDetector.causal_scorer` (stfeatures: the offline scores, a few frames
later).

>>> scorer = frame_scorer(load_detector("results/bottle_run"))   # doctest: +SKIP
>>> [r.score for r in scorer.push(frames)]                        # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import torch

from anomalens.models.base import BaseDetector
from anomalens.models.video.base import CausalScorer, FrameScore, VideoDetector


class ImageScorer(CausalScorer):
    """An image model on a stream: every frame is an image, scored at once (no delay)."""

    delay_frames = 0

    def __init__(self, detector: BaseDetector) -> None:
        self.detector = detector
        self.count = 0

    def push(
        self, frames: torch.Tensor, steps: Sequence[int] | None = None, before: Sequence[torch.Tensor | None] | None = None
    ) -> list[FrameScore]:
        prediction = self.detector.predict(frames)
        out = []
        for score, raw_map in zip(prediction.scores.tolist(), prediction.maps):
            out.append(FrameScore(self.count, float(score), raw_map))
            self.count += 1
        return out

    def finish(self) -> list[FrameScore]:
        return []


def frame_scorer(detector: BaseDetector, lookahead: int | None = None) -> CausalScorer:
    """The causal scorer of ``detector``; ``lookahead`` (frames) limits a video model's look-ahead smoothing."""
    if isinstance(detector, VideoDetector):
        return detector.causal_scorer(lookahead)
    return ImageScorer(detector)
