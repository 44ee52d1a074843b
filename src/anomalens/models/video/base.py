"""The video side of the detector contract: fit on normal clips, score a clip frame by frame.

A clip is anything that yields preprocessed frames, ``uint8`` tensors ``(3, H, W)``, in order, once
(a decoded video file streamed front to back, or a folder of frames). Detectors never seek.

>>> detector = create_detector("stfeatures")                         # doctest: +SKIP
>>> detector.fit_clips(train_clips, validation_clips)                # doctest: +SKIP
>>> result = detector.predict_clip(clip)                              # doctest: +SKIP
>>> result.scores.shape == (clip_length,)                             # doctest: +SKIP
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from anomalens.errors import ConfigError
# re-exported: the video models take it from here; it lives with the torch-free runtime, which keeps maps the same way
from anomalens.inference.frame_buffer import FrameBuffer  # noqa: F401
from anomalens.models.base import BaseDetector, HeldOutScores, Prediction
from anomalens.progress import SILENT, Reporter

# A clip: a re-iterable source of frames; each iteration decodes front to back once.
Clip = Iterable[torch.Tensor]


@dataclass
class ClipPrediction(Prediction):
    """Per-frame results for a clip of T frames (the fields and calibrated views of :class:`Prediction`).

    ``scores``: raw frame scores ``(T,)`` (after any temporal smoothing); ``maps``: raw anomaly maps
    ``(T, h, w)`` float16 at the model's map resolution (upsample to draw them), on the score's scale;
    ``views``: what the model saw or rebuilt per frame, ``uint8`` ``(T, 3, h, w)``, or None;
    ``cues``: for models that add several cues, each cue's per-frame share of the score ``(T,)`` (the shares
    add up to ``scores``), so that a user sees *why* a moment was flagged; empty otherwise.
    """

    cues: dict[str, np.ndarray] = field(default_factory=dict)
    # each frame's typical cell for the drift warning, where the model measures it on another map than ``maps``
    # (stfeatures: the summed cue maps); None: the median of ``maps``
    typical: np.ndarray | None = None

    def typical_cells(self) -> np.ndarray:
        return super().typical_cells() if self.typical is None else np.asarray(self.typical, dtype=np.float64)


@dataclass
class FrameScore:
    """One frame's result from a :class:`CausalScorer`: its index in the pushed sequence, raw score, raw map
    ``(h, w)`` on the score's scale and, for models with several cues, each cue's share of the score."""

    index: int
    score: float
    map: np.ndarray
    cues: dict[str, float] = field(default_factory=dict)


class CausalScorer(ABC):
    """Scores a stream as its frames arrive (a camera, a live stream), never looking further ahead than
    ``delay_frames``: each frame's score comes out once that many later frames have been pushed.

    >>> scorer = detector.causal_scorer()                      # doctest: +SKIP
    >>> for batch in batches: results = scorer.push(batch)     # doctest: +SKIP
    >>> results += scorer.finish()                             # the last frames, at the end of the stream  # doctest: +SKIP
    """

    delay_frames: int = 0

    @abstractmethod
    def push(
        self, frames: torch.Tensor, steps: Sequence[int] | None = None, before: Sequence[torch.Tensor | None] | None = None
    ) -> list[FrameScore]:
        """Add preprocessed frames ``(B, 3, H, W)`` ``uint8``, in order; returns the frames now scored.

        ``steps``: per frame, how many source frames it is after the one pushed before it (1, the default, when
        none was dropped in between; 0 when the source broke off before it and came back, e.g. a reconnected stream:
        motion then starts afresh, as at the first frame, instead of spanning the break). ``before``: per frame, the source frame just before it when that one was
        not pushed (dropped), else None; motion is then measured between the two, as at full rate (without it,
        motion across the gap is divided by the step)."""

    def features(
        self, frames: torch.Tensor, steps: Sequence[int] | None = None, before: Sequence[torch.Tensor | None] | None = None
    ) -> Any:
        """:meth:`push` in two halves, for a caller that runs them in two threads: ``features`` (the work that
        needs only the frames: backbone, motion) for the next batch while ``score`` (memories, smoothing) runs
        for this one. Each half in order, on one thread each; ``score(features(...))`` equals ``push(...)``."""
        return frames, steps, before

    def score(self, features: Any) -> list[FrameScore]:
        """The second half of :meth:`push`, on what :meth:`features` returned."""
        return self.push(*features)

    @abstractmethod
    def finish(self) -> list[FrameScore]:
        """The end of the stream: score what is still waiting for later frames."""

    def set_rate(self, fps: float | None) -> None:
        """The stream's frame rate once it is known (None: unknown), before the frames it concerns are pushed: a model
        that measures motion per second of its training footage (stfeatures) rescales the stream's motion by it."""


def clip_name(clip: Clip) -> str:
    """A readable name for error messages: the clip's path or name if it has one."""
    for attribute in ("path", "name"):
        value = getattr(clip, attribute, None)
        if value is not None:
            return str(value)
    return "clip"


class VideoDetector(BaseDetector):
    """The video contract: ``fit_clips`` on normal clips, ``predict_clip`` scores every frame of one clip."""

    kind = "video"

    @abstractmethod
    def _fit_clips(self, train: Sequence[Clip], validation: Sequence[Clip], reporter: Reporter) -> None:
        """Learn normal appearance and motion from ``train``; may use ``validation`` for model selection."""

    @abstractmethod
    def _predict_clip(self, clip: Clip, reporter: Reporter, views: bool = True) -> ClipPrediction:
        """Score every frame of one clip (calibration is attached by :meth:`predict_clip`); ``views`` False: the
        prediction's ``views`` may be None."""

    def fit_clips(self, train: Sequence[Clip], validation: Sequence[Clip] = (), reporter: Reporter = SILENT) -> "VideoDetector":
        """Fit on normal clips; the threshold comes from frame scores of ``validation`` clips (normal, held out)."""
        held_out = list(validation)
        given = bool(held_out)  # validation may be an iterator, consumed here
        if not held_out:
            reporter.log("warning: no validation clips; the threshold is set on training clips and may be low")
            held_out = list(train)

        def held_out_scores(r: Reporter) -> HeldOutScores:
            extra = self._cross_validated_scores()
            if extra is not None and len(extra[0]) and not given:
                # no held-out clips: the training clips scored by the memories that learned them run low and would
                # count twice beside the same clips scored fairly
                r.log(f"threshold: {len(extra[0])} cross-validated frames of {len(extra[1])} training clips "
                      "(no held-out clips); no drift reference: the training clips' maps, from the memories that "
                      "learned them, run low (hold a clip out to have one)")
                return HeldOutScores(extra[0], None, list(extra[1]))
            scores, typical = [], []
            for clip in held_out:
                prediction = self._predict_clip(clip, r, views=False)
                scores.append(prediction.scores)
                typical.append(prediction.typical_cells())
            lengths = [len(s) for s in scores]
            if extra is not None and len(extra[0]):
                # normal frames of every training clip scored by memories built without it (see the method)
                r.log(f"threshold: {sum(lengths)} frames of {len(held_out)} held-out clip(s) and {len(extra[0])} "
                      f"cross-validated frames of {len(extra[1])} training clips")
                scores.append(extra[0])
                lengths += extra[1]  # a series per training clip: its frames in time order
            # clip by clip: the threshold counts correlated frames by their effective number
            return HeldOutScores(np.concatenate(scores), np.concatenate(typical), lengths)

        self._learn_then_calibrate(lambda r: self._fit_clips(train, validation, r), held_out_scores, reporter)
        return self

    def _cross_validated_scores(self) -> tuple[np.ndarray, list[int]] | None:
        """Frame scores of training clips by a model that did not learn them (cross-validation folds), on the
        scale of :meth:`predict_clip`, clip after clip, and the number of scores of each clip, to join the held-out
        clips in choosing the threshold; None if the model has none. A few held-out clips show a few scenes: on UCSD Ped2 the 2 held-out clips put the threshold
        where 18% of the frames of 4 further normal training clips scored above it (one clip alone averaged
        far above the rest); every training clip seen this way brings that variation into the threshold."""
        return None

    @torch.no_grad()
    def predict_clip(self, clip: Clip, reporter: Reporter = SILENT, views: bool = True) -> ClipPrediction:
        """Score every frame of ``clip``. ``views``: also what the model saw per frame (the middle panel of
        ``analyze-video``'s side-by-side video); False, as evaluation passes, skips drawing them (the views may
        then be None)."""
        result = self._predict_clip(clip, reporter, views=views)
        result.calibration = self.calibration_
        return result

    @property
    def map_places_events(self) -> bool:
        """Whether each frame's map has its highest cell at the frame's score, where the evidence is, so that the
        regions above the threshold say where an event is (``peak_regions``); models say so themselves."""
        return False

    def causal_scorer(self, lookahead: int | None = None, fps: float | None = None) -> CausalScorer:
        """A scorer for live streams (see :class:`CausalScorer`) that looks at most ``lookahead`` frames ahead
        (None: the model's own choice), for a stream at ``fps`` frames per second (None: unknown, or set later with
        :meth:`CausalScorer.set_rate`); models without one cannot watch a stream."""
        raise ConfigError(f"{self.name} has no causal scoring path for live streams; use stfeatures")
