"""Drift: does a video or a batch of images look unlike the training data *as a whole*?

A defect raises a few cells of an anomaly map; a new camera, a codec change, other lighting or another product
raises all of them. So the statistic here is an item's *typical* distance to the normal memory: the median of
its raw anomaly map, not the maximum that the anomaly score uses. At fit time the detector records the range of
typical distances of its held-out normal items (:class:`DriftReference`, saved in the model's ``config.json``);
a batch (a video's frames, a folder of images) drifts when the median of its items' typical distances falls far
outside that range: above ``high + DRIFT_MARGIN * width`` or below ``low - DRIFT_MARGIN * width``, where ``width``
is the range's width, at least the spread (std) of the validation *scores*: a range measured on one held-out clip
of correlated frames is narrower than the variation between normal clips.

The check uses no labels and changes no score: it only says when the scores (and the threshold's false-alarm
promise) no longer describe the data, which is the moment to retrain on the new footage.

>>> ref = DriftReference.from_maps(np.random.default_rng(0).normal(1.0, 0.05, (50, 8, 8)))
>>> assess_drift(np.full((20, 8, 8), 1.0), ref).drifted
False
>>> assess_drift(np.full((20, 8, 8), 3.0), ref).drifted
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

DRIFT_MARGIN = 2.0  # how far outside the validation range (in widths of that range) counts as drift
REFERENCE_QUANTILES = (0.01, 0.99)  # the validation range, robust to one odd held-out frame


def typical_distances(maps: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    """Raw anomaly maps ``(N, ...)`` (or an iterable of ``(B, ...)`` blocks) -> each item's median ``(N,)``."""
    if isinstance(maps, np.ndarray):
        blocks: Iterable[np.ndarray] = [maps]
    else:
        blocks = maps
    medians = [np.median(np.asarray(b, dtype=np.float32).reshape(len(b), -1), axis=1) for b in blocks if len(b)]
    return np.concatenate(medians).astype(np.float64) if medians else np.zeros(0)


@dataclass(frozen=True)
class DriftReference:
    """Typical distances of held-out normal items at fit time: their median and robust range."""

    median: float
    low: float
    high: float
    count: int
    width: float  # the unit of deviation: high - low, at least the validation scores' spread

    @classmethod
    def from_typical(cls, typical: np.ndarray, min_width: float = 0.0) -> "DriftReference":
        """``min_width``: the std of the validation scores (same units as the maps)."""
        values = np.asarray(typical, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise ValueError("a drift reference needs at least one finite typical distance")
        low, high = (float(v) for v in np.quantile(values, REFERENCE_QUANTILES))
        width = max(high - low, float(min_width), 1e-6 * max(abs(float(np.median(values))), 1.0))
        return cls(median=float(np.median(values)), low=low, high=high, count=int(values.size), width=width)

    @classmethod
    def from_maps(cls, maps: np.ndarray, min_width: float = 0.0) -> "DriftReference":
        return cls.from_typical(typical_distances(maps), min_width)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "DriftReference | None":
        """``None`` for models saved before drift was recorded (they load and score as before)."""
        if not data:
            return None
        data = {"width": max(data["high"] - data["low"], 1e-12), **data}  # early files had no width
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class DriftReport:
    """The verdict for one batch; ``deviation`` is in widths of the validation range (0 inside it)."""

    drifted: bool
    typical: float
    reference_low: float
    reference_high: float
    deviation: float
    items: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def assess_drift(maps_or_typical: Any, reference: DriftReference | None, *, typical: bool = False) -> DriftReport | None:
    """Compare a batch with the fit-time reference; ``None`` when the model has no reference or the batch is empty.

    ``maps_or_typical``: a model's prediction (its ``typical_cells()``: a video model may measure them on another
    map than the one it shows), raw anomaly maps ``(N, ...)``, or (``typical=True``) typical distances ``(N,)``.
    """
    if reference is None:
        return None
    if hasattr(maps_or_typical, "typical_cells"):
        values = np.asarray(maps_or_typical.typical_cells(), dtype=np.float64)
    elif typical:
        values = np.asarray(maps_or_typical, dtype=np.float64).ravel()
    else:
        values = typical_distances(maps_or_typical)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    batch = float(np.median(values))
    width = max(reference.width, 1e-12)
    if batch > reference.high:
        deviation = (batch - reference.high) / width
    elif batch < reference.low:
        deviation = (batch - reference.low) / width
    else:
        deviation = 0.0
    drifted = abs(deviation) > DRIFT_MARGIN
    where = f"typical distance {batch:.4g}, normal range at fit time {reference.low:.4g}..{reference.high:.4g}"
    if drifted:
        direction = "above" if deviation > 0 else "below"
        message = (
            f"drift: these {values.size} item(s) look unlike the training data as a whole ({where}, "
            f"{abs(deviation):.1f} range widths {direction}); scores and the false-alarm rate may not hold: "
            "check the camera, encoding and lighting, or retrain on this footage"
        )
    else:
        message = f"no drift ({where})"
    return DriftReport(
        drifted=drifted,
        typical=batch,
        reference_low=reference.low,
        reference_high=reference.high,
        deviation=float(deviation),
        items=int(values.size),
        message=message,
    )
