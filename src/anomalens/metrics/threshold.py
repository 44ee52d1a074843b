"""Thresholds chosen from normal data alone, and scores normalised so that 0.5 is the threshold.

What the threshold promises: about ``target_fpr`` (default 1%) of *normal* images or frames like the
validation data score above it. The rule (:func:`calibrate`), on held-out normal scores:

* **a tail model**: a generalized Pareto distribution fitted (probability-weighted moments) to the top
  ``TAIL_FRACTION`` of the scores when at least ``MIN_TAIL_POINTS`` of them exist, else a normal tail
  (``mean + z * std``); its ``1 - target_fpr`` quantile extrapolates beyond the largest validation score,
  where a small set has no data, and
* the empirical ``1 - target_fpr`` quantile, which wins when the data show a heavier tail than the model;

the threshold is the larger of the two. Frames of a video are not independent: for series (clips) the
*effective* number of scores is counted from their autocorrelation, and when it is below
:func:`needed_validation_count` (3 expected exceedances, 300 at 1%) the calibration carries a warning that the
rate is extrapolated rather than measured, with the number of normal items needed. ``measured_fpr`` is the
share of validation scores above the threshold, reported beside the target. The verdict, everywhere: a score
strictly above the threshold, or not a number, is anomalous (:func:`above_threshold`).

The pixel threshold (what a defect *region* is, :func:`pixel_threshold`) follows the same rule on the pixels of
the same normal validation maps, with a much smaller share (``pixel_target_fpr``, default 0.1% of normal
pixels), capped at the image threshold so that every flagged image shows at least one region.
Normalised score: ``sigmoid((s - threshold) / scale)`` with ``scale`` the std of the validation scores; 0.5
exactly at the threshold, monotone, the same mapping for image scores and anomaly maps, so heatmaps of
different images share one scale (a normal image stays cold).

>>> cal = calibrate(np.array([1.0, 1.1, 0.9, 1.05, 0.95]))
>>> round(float(cal.normalize(cal.threshold)), 3)
0.5
>>> round(float(cal.denormalize(0.5)), 6) == round(cal.threshold, 6)
True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import MISSING, asdict, dataclass, fields
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

DEFAULT_TARGET_FPR = 0.01
DEFAULT_PIXEL_TARGET_FPR = 0.001
MAX_CALIBRATION_PIXELS = 1 << 21  # pixels sampled from the validation maps for the pixel threshold
TAIL_FRACTION = 0.2  # the generalized Pareto model is fitted to the top fifth of the validation scores ...
MIN_TAIL_POINTS = 20  # ... or to the top 20 scores, up to the top half, for smaller sets
MIN_SCORES_FOR_TAIL = 20  # below this the tail is a normal one fitted to all scores
EXPECTED_EXCEEDANCES = 3  # a rate is measured, not extrapolated, once this many validation items exceed it


def above_threshold(scores: np.ndarray | float, threshold: float) -> np.ndarray:
    """The one decision rule, for every verdict (images, frames, events, the live watcher): a score strictly above
    ``threshold`` is anomalous, one exactly at it is not, and one that is not a number is (fail safe: a frame or image
    that could not be scored must not pass silently, and a NaN compares false with everything). A ``bool`` array of
    the shape of ``scores``; a ``numpy.bool_`` for a scalar.

    >>> above_threshold(np.array([0.5, 1.0, 1.5, np.nan]), 1.0).tolist(), bool(above_threshold(float("nan"), 1.0))
    ([False, False, True, True], True)
    """
    # not ">": NaN <= t is False, so NaN comes out above. In float64 whatever the scores' type: compared in float32
    # the threshold would be rounded to the scores' precision, and a float32 score could get one verdict here and
    # another from a caller that had widened it (the evaluation's counts, events)
    return ~(np.asarray(scores, dtype=np.float64) <= threshold)


@dataclass(frozen=True)
class Calibration:
    """Threshold and normalisation learned from validation-normal scores; saved with the model."""

    threshold: float
    scale: float
    target_fpr: float
    validation_mean: float
    validation_std: float
    validation_max: float
    validation_count: int
    # what a defect region is: map values above it (None in models saved before pixel thresholds existed)
    pixel_threshold: float | None = None
    pixel_target_fpr: float | None = None
    # added later: models saved before load with these defaults
    tail_model: str = "normal"  # "generalized_pareto" or "normal": what extrapolated the tail
    measured_fpr: float | None = None  # share of the validation scores above the threshold
    effective_count: float | None = None  # validation scores counted as independent (autocorrelation removed)
    needed_count: int | None = None  # independent normal scores needed to measure target_fpr
    warning: str = ""  # set when the validation set is too small to measure the target rate
    # video: each validation clip judged by the threshold chosen from the other clips (leave one clip out), the
    # share of all their frames above it: what a new clip can expect, where measured_fpr is in-sample
    clip_held_out_fpr: float | None = None
    # cross-fitting (training items scored by memories that did not learn them) errs high: a memory that learned
    # fewer items scores normal data higher. How far those scores stood above the final model's, measured on the
    # held-out items (unseen by both) and taken off before they joined the threshold (:func:`score_shift`), in
    # score units of the final model; and how many independent held-out items measured it (None: no folds, or a
    # model saved before this correction)
    fold_shift: float | None = None
    fold_shift_items: float | None = None

    def with_fold_shift(self, shift: float, items: float) -> "Calibration":
        """This calibration, recording the folds' measured shift taken off before the threshold (``fold_shift``)."""
        return dataclasses.replace(self, fold_shift=float(shift), fold_shift_items=round(float(items), 1))

    def normalize(self, values: np.ndarray | float) -> np.ndarray:
        """Raw scores or maps -> (0, 1), 0.5 at the threshold."""
        z = (np.asarray(values, dtype=np.float64) - self.threshold) / self.scale
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))).astype(np.float32)

    def denormalize(self, normalized: np.ndarray | float) -> np.ndarray:
        """The inverse of :meth:`normalize`: the raw score that a normalised score in (0, 1) stands for."""
        p = np.clip(np.asarray(normalized, dtype=np.float64), 1e-6, 1.0 - 1e-6)
        return self.threshold + self.scale * np.log(p / (1.0 - p))

    def is_anomalous(self, values: np.ndarray | float) -> np.ndarray:
        """Raw scores (or map values) judged by this threshold, by :func:`above_threshold`."""
        return above_threshold(values, self.threshold)

    def region_threshold(self) -> float:
        """The map value above which a pixel belongs to a defect region (the image threshold in older models)."""
        return self.threshold if self.pixel_threshold is None else self.pixel_threshold

    def defect_mask(self, maps: np.ndarray) -> np.ndarray:
        """Raw anomaly maps -> ``bool`` masks of the pixels above :meth:`region_threshold`."""
        return np.asarray(maps) > self.region_threshold()

    def with_threshold(self, threshold: float) -> "Calibration":
        data = asdict(self)
        data["threshold"] = float(threshold)
        return Calibration(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def false_alarm_summary(self) -> dict[str, Any]:
        """What the threshold promises and what was measured, for metrics.json, report.md and the UI."""
        return {
            "target_fpr": self.target_fpr,
            "measured_fpr_on_validation": self.measured_fpr,
            "validation_count": self.validation_count,
            "effective_validation_count": self.effective_count,
            "needed_validation_count": self.needed_count,
            "tail_model": self.tail_model,
            "measured_fpr_on_clips_left_out": self.clip_held_out_fpr,
            "cross_fitted_shift": self.fold_shift,
            "warning": self.warning or None,
        }

    def false_alarm_text(self) -> str:
        """One sentence: the promised rate, the rate measured on validation, and the small-set warning."""
        text = f"target false-alarm rate {self.target_fpr:.2%}"
        if self.measured_fpr is not None:
            text += f"; measured on {self.validation_count} held-out normal samples: {self.measured_fpr:.2%}"
        if self.clip_held_out_fpr is not None:
            text += f"; each clip judged by the threshold of the others: {self.clip_held_out_fpr:.2%}"
        text += f" (tail model: {self.tail_model.replace('_', ' ')})"
        if self.fold_shift:
            text += f"; cross-fitted scores lowered by {self.fold_shift:.3g} (their measured excess over the final model's)"
        if self.warning:
            text += f". Warning: {self.warning}"
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        """Fields with defaults may be missing (calibrations saved by older versions)."""
        values = {}
        for f in fields(cls):
            if f.name in data:
                values[f.name] = data[f.name]
            elif f.default is MISSING:
                raise KeyError(f.name)
        return cls(**values)


def needed_validation_count(target_fpr: float) -> int:
    """Independent normal scores needed before ``target_fpr`` is measured rather than extrapolated."""
    return int(math.ceil(EXPECTED_EXCEEDANCES / target_fpr))


# a score shift is measured on at least this many independent items, else not applied
MIN_SHIFT_ITEMS = 3


@dataclass(frozen=True)
class ScoreShift:
    """How far one scorer's scores stand above another's on the same normal items (paired)."""

    shift: float  # what to subtract from the first scorer's scores (the measured mean, shrunk by its uncertainty)
    measured: float  # the mean difference as measured
    items: float  # independent items it was measured on (autocorrelation removed for clips)
    note: str  # one line for the log: what was measured and what was applied, or why nothing


def no_shift(what: str = "cross-fitted scores") -> ScoreShift:
    """The shift of scores with no normal item to measure it on: none."""
    return ScoreShift(0.0, 0.0, 0.0, f"{what} taken as they are: no normal item to measure their shift on")


def finite_lengths(finite: np.ndarray, series_lengths: Sequence[int]) -> list[int]:
    """Each series' length counting only its ``finite`` items (in order): a NaN frame shortens its own clip, and
    the clips stay apart (dropping the series once counted every frame as independent)."""
    bounds = np.cumsum([0, *series_lengths])
    return [int(finite[a:b].sum()) for a, b in zip(bounds[:-1], bounds[1:])]


def score_shift(others: np.ndarray, reference: np.ndarray, series_lengths: Sequence[int] | None = None,
                what: str = "cross-fitted scores") -> ScoreShift:
    """The mean excess of ``others`` ``(K, N)`` (each row: the same ``N`` normal items scored another way) over
    ``reference`` ``(N,)``, to subtract from scores of that other kind before they are compared with the reference.

    Cross-fitting: held-out normal items that neither the final model nor any fold's memory learned, scored by
    each fold's memory (the memory without that fold) and by the final model. Every training item's cross-fitted
    score comes from one such memory, and a memory that learned fewer items scores normal data higher: the mean
    difference is the expected excess of a cross-fitted score over what the final model gives unseen normal data.
    Export: a quantised bundle's scores against the checkpoint's, on the same validation images.

    Paired differences vary far less than the scores, yet a few items measure them roughly: the mean is shrunk
    towards 0 by its standard error (``mean * max(0, 1 - se^2 / mean^2)``, the positive-part James-Stein factor),
    so that an uncertain shift is applied only in part; with fewer than :data:`MIN_SHIFT_ITEMS` independent items
    (frames of clips, ``series_lengths``, counted by their effective size) nothing is applied. For clips the
    standard error is at least that of the clips' own mean shifts, and one clip applies nothing: the shift varies
    from clip to clip (on UCSD Ped2's training clips, +0.77 and -0.16 standard units measured on two single clips).

    >>> shift = score_shift(np.array([[1.3, 2.6, 3.4, 4.7], [1.5, 2.6, 3.2, 4.7]]), np.array([1.0, 2.0, 3.0, 4.0]))
    >>> round(shift.measured, 3), round(shift.shift, 3)
    (0.5, 0.483)
    """
    reference = np.asarray(reference, dtype=np.float64).ravel()
    others = np.asarray(others, dtype=np.float64)
    differences = np.zeros(0)
    lengths = None
    if reference.size and others.size:
        differences = (others.reshape(-1, reference.size) - reference[None]).mean(axis=0)
        finite = np.isfinite(differences)
        if series_lengths is not None and sum(series_lengths) == differences.size:
            lengths = finite_lengths(finite, series_lengths)  # each clip keeps its own finite items
        differences = differences[finite]
    if differences.size == 0:
        return no_shift(what)
    items = effective_sample_size(differences, lengths)
    measured = float(differences.mean())
    if items < MIN_SHIFT_ITEMS:
        return ScoreShift(0.0, measured, items, f"{what} taken as they are: {items:.0f} independent item(s) cannot "
                          f"measure their shift (at least {MIN_SHIFT_ITEMS}; measured {measured:+.3g})")
    clips = [length for length in lengths or () if length]
    if lengths is not None and len(clips) < 2:
        # one clip's frames say nothing of how the shift varies from clip to clip, which is what new clips meet
        return ScoreShift(0.0, measured, items, f"{what} taken as they are: one held-out clip cannot measure their "
                          f"shift (it varies from clip to clip; measured {measured:+.3g})")
    squared_error = float(differences.var(ddof=1)) / items if differences.size > 1 else math.inf
    if len(clips) >= 2:  # and at least the spread of the clips' own shifts
        means = [float(part.mean()) for part in np.split(differences, np.cumsum(clips)[:-1])]
        squared_error = max(squared_error, float(np.var(means, ddof=1)) / len(means))
    factor = max(0.0, 1.0 - squared_error / measured**2) if measured else 0.0
    shift = measured * factor
    return ScoreShift(shift, measured, items, f"{what} lowered by {shift:.3g}: on {items:.0f} independent normal "
                      f"items they stood {measured:+.3g} above the reference scores (standard error {math.sqrt(squared_error):.2g})")


def effective_sample_size(scores: np.ndarray, series_lengths: Sequence[int] | None = None) -> float:
    """How many independent scores ``scores`` are worth.

    Independent items (images) count fully. For time series (``series_lengths``: consecutive runs of frames,
    one per clip) each series counts ``n / (1 + 2 * sum of its autocorrelations)``, summed over the initial
    positive lags (Geyer's rule), so that 200 smoothed, strongly correlated frames count as a few dozen.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if series_lengths is None:
        return float(scores.size)
    total, start = 0.0, 0
    for length in series_lengths:
        series = scores[start : start + int(length)]
        start += int(length)
        n = series.size
        if n < 3 or series.std() == 0:
            total += min(n, 1)
            continue
        centred = series - series.mean()
        variance = float(centred @ centred) / n
        tau = 1.0
        for lag in range(1, n // 2):
            rho = float(centred[:-lag] @ centred[lag:]) / (n * variance)
            if rho <= 0:
                break
            tau += 2.0 * rho
        total += n / tau
    return total


def generalized_pareto_quantile(scores: np.ndarray, tail_probability: float) -> float | None:
    """The score exceeded with probability ``tail_probability`` under a generalized Pareto tail model.

    Fitted to the exceedances over the ``1 - TAIL_FRACTION`` quantile by probability-weighted moments (Hosking
    and Wallis, 1987: stable for small samples). The shape is kept in ``[0, 0.5]``: a fitted bounded tail
    (shape < 0) is read as exponential, so that a few validation scores never promise a hard ceiling.
    Returns None when fewer than ``MIN_TAIL_POINTS`` scores lie in the tail or the target is not in it.
    """
    scores = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    fraction = min(0.5, max(TAIL_FRACTION, MIN_TAIL_POINTS / max(scores.size, 1)))
    if tail_probability >= fraction or scores.size < MIN_SCORES_FOR_TAIL:
        return None
    u = float(np.quantile(scores, 1.0 - fraction))
    excess = scores[scores > u] - u
    k = excess.size
    if k < MIN_SCORES_FOR_TAIL // 2:
        return None
    plotting = (np.arange(1, k + 1) - 0.35) / k  # ascending order statistics
    a0 = float(excess.mean())
    a1 = float(np.mean(excess * (1.0 - plotting)))
    if a0 <= 0 or a0 - 2 * a1 <= 0:
        return None
    shape = -(a0 / (a0 - 2 * a1) - 2.0)  # Hosking's k is minus the usual shape
    scale = 2.0 * a0 * a1 / (a0 - 2 * a1)
    shape = min(max(shape, 0.0), 0.5)
    if shape == 0.0:
        scale = a0  # the exponential tail's scale is the mean excess
    ratio = (k / scores.size) / tail_probability
    if shape < 1e-9:
        return u + scale * math.log(ratio)
    return u + scale / shape * (ratio**shape - 1.0)


def calibrate(
    validation_scores: np.ndarray, target_fpr: float = DEFAULT_TARGET_FPR, series_lengths: Sequence[int] | None = None,
    *, normal_maps: np.ndarray | None = None, pixel_target_fpr: float = DEFAULT_PIXEL_TARGET_FPR,
) -> Calibration:
    """Choose the threshold from scores of normal images (or frames) held out from training.

    With ``normal_maps`` (the anomaly maps of the same images) the pixel threshold is chosen too.

    ``series_lengths``: for video, the number of consecutive frames of each validation clip in
    ``validation_scores`` (their autocorrelation lowers the effective sample size); None for images.
    """
    scores = np.asarray(validation_scores, dtype=np.float64).ravel()
    finite = np.isfinite(scores)
    if not finite.any():
        raise ValueError("calibration needs at least one finite validation score")
    if not 0.0 < target_fpr < 0.5:
        raise ValueError(f"target_fpr must be in (0, 0.5), got {target_fpr}")
    if series_lengths is not None and sum(series_lengths) != scores.size:
        series_lengths = None  # the series cannot be followed: count the scores as independent
    elif series_lengths is not None and not finite.all():
        series_lengths = finite_lengths(finite, series_lengths)  # a lost frame shortens its clip, not every clip
    scores = scores[finite]
    mean, std = float(scores.mean()), float(scores.std())
    spread = std if std > 0 else max(abs(mean) * 0.05, 1e-6)
    threshold, tail_model = _threshold(scores, target_fpr)
    effective = effective_sample_size(scores, series_lengths)
    needed = needed_validation_count(target_fpr)
    warning = ""
    if effective < needed:
        what = "frames (counted as independent after their autocorrelation)" if series_lengths is not None else "scores"
        warning = (
            f"the validation set is too small for a false-alarm rate of {target_fpr:g}: {effective:.0f} independent "
            f"normal {what}, about {needed} are needed to measure it; the threshold extrapolates a {tail_model.replace('_', ' ')} "
            "tail, so the rate on new normal data may differ: add held-out normal data"
        )
    return Calibration(
        threshold=threshold,
        scale=spread,
        target_fpr=target_fpr,
        validation_mean=mean,
        validation_std=std,
        validation_max=float(scores.max()),
        validation_count=int(scores.size),
        tail_model=tail_model,
        measured_fpr=float(np.mean(above_threshold(scores, threshold))),
        effective_count=round(effective, 1),
        needed_count=needed,
        warning=warning,
        clip_held_out_fpr=None if series_lengths is None else clip_held_out_rate(scores, series_lengths, target_fpr),
        pixel_threshold=None if normal_maps is None else pixel_threshold(normal_maps, threshold, pixel_target_fpr),
        pixel_target_fpr=None if normal_maps is None else pixel_target_fpr,
    )


def _threshold(scores: np.ndarray, target_fpr: float) -> tuple[float, str]:
    """The rule: the larger of the empirical ``1 - target_fpr`` quantile and the tail model's; and the model's name."""
    quantile = float(np.quantile(scores, 1.0 - target_fpr))
    pareto = generalized_pareto_quantile(scores, target_fpr)
    if pareto is not None:
        return max(quantile, pareto), "generalized_pareto"
    std = float(scores.std())
    spread = std if std > 0 else max(abs(float(scores.mean())) * 0.05, 1e-6)
    return max(quantile, float(scores.mean()) + NormalDist().inv_cdf(1.0 - target_fpr) * spread), "normal"


def clip_held_out_rate(scores: np.ndarray, series_lengths: Sequence[int], target_fpr: float = DEFAULT_TARGET_FPR) -> float | None:
    """Leave one clip out: each series (clip) of ``scores`` is judged by the threshold the same rule chooses from
    all other series; the share of all scores above their clip's threshold. Frames of one clip resemble each other
    far more than frames of two clips do, so this (not the in-sample rate) says what a new clip can expect.
    None with fewer than two series."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    bounds = np.cumsum([0, *[int(n) for n in series_lengths]])
    if len(series_lengths) < 2 or bounds[-1] != scores.size:
        return None
    above = 0
    for start, end in zip(bounds[:-1], bounds[1:]):
        others = np.r_[scores[:start], scores[end:]]
        if end > start and others.size:
            above += int(np.sum(above_threshold(scores[start:end], _threshold(others, target_fpr)[0])))
    return above / scores.size


def pixel_threshold(normal_maps: np.ndarray, image_threshold: float, target_fpr: float = DEFAULT_PIXEL_TARGET_FPR) -> float:
    """The region threshold: the larger of the ``1 - target_fpr`` quantile of the pixels of normal validation
    maps and ``mean + z * std`` of them (a normal tail), capped at ``image_threshold`` (a flagged image, whose
    maximum exceeds it, always has a region)."""
    pixels = np.asarray(normal_maps, dtype=np.float32).ravel()
    if pixels.size > MAX_CALIBRATION_PIXELS:  # a fixed, evenly spread sample keeps memory and time bounded
        pixels = pixels[:: int(np.ceil(pixels.size / MAX_CALIBRATION_PIXELS))]
    pixels = pixels[np.isfinite(pixels)].astype(np.float64)
    if pixels.size == 0:
        return float(image_threshold)
    normal_tail = pixels.mean() + NormalDist().inv_cdf(1.0 - target_fpr) * pixels.std()
    return float(min(max(float(np.quantile(pixels, 1.0 - target_fpr)), normal_tail), float(image_threshold)))


def threshold_rule(kind: str, from_folds: bool, target_fpr: float) -> str:
    """One line for ``metrics.json``, ``events.json`` and ``report.md``: which normal data chose the threshold of an
    ``"image"`` or ``"video"`` model (``from_folds``: its ``threshold_from_folds``)."""
    if kind == "video":
        data = ("normal training clips only (held-out validation clips, and every training clip's frames scored by "
                "the memories of the fold that did not learn them)" if from_folds else "frames of held-out normal training clips only")
    else:
        data = ("normal training images only (held-out validation images" + (", and, when those are too few to measure "
                "the target rate, training images scored by memories that did not learn them" if from_folds else "") + ")")
    return f"from {data}, target false-positive rate {target_fpr:g}"


def false_alarm_line(summary: dict[str, Any] | None, at_threshold: dict[str, Any] | None = None) -> str:
    """report.md's sentence: the target rate, the rate on validation and (given a confusion at the threshold,
    as :func:`~anomalens.metrics.classification.confusion_at` returns it) the rate on the normal test items."""
    summary = summary or {}
    text = f"target false-alarm rate {summary.get('target_fpr', DEFAULT_TARGET_FPR):.2%}"
    if summary.get("measured_fpr_on_validation") is not None:
        text += f"; measured on {summary['validation_count']} validation-normal scores: {summary['measured_fpr_on_validation']:.2%}"
    if at_threshold:
        normal = at_threshold["false_positives"] + at_threshold["true_negatives"]
        if normal:
            text += f"; measured on the {normal} normal test items: {at_threshold['false_positives'] / normal:.2%}"
    if summary.get("measured_fpr_on_clips_left_out") is not None:
        text += f"; each validation clip judged by the threshold of the others: {summary['measured_fpr_on_clips_left_out']:.2%}"
    text += f" (tail model: {str(summary.get('tail_model', 'normal')).replace('_', ' ')})"
    if summary.get("cross_fitted_shift"):
        text += f"; cross-fitted scores lowered by {summary['cross_fitted_shift']:.3g} (their measured excess over the final model's)"
    text += "."
    if summary.get("warning"):
        text += f" Warning: {summary['warning']}."
    return text
