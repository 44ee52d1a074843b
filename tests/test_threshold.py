"""The threshold rule: chosen from normal validation scores only; normalised scores put it at 0.5."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from anomalens.metrics.threshold import Calibration, calibrate


def test_threshold_is_the_larger_of_quantile_and_gaussian_tail():
    scores = np.array([1.0, 1.1, 0.9, 1.05, 0.95])
    cal = calibrate(scores, target_fpr=0.01)
    z = NormalDist().inv_cdf(0.99)
    assert cal.threshold == pytest.approx(max(np.quantile(scores, 0.99), scores.mean() + z * scores.std()))
    assert cal.threshold > scores.max()  # a small set leaves headroom above its maximum
    assert cal.validation_count == 5 and cal.validation_max == 1.1


def test_quantile_wins_for_a_heavy_tail():
    scores = np.r_[np.zeros(990), np.full(10, 100.0)]  # 1% of normal images far out
    cal = calibrate(scores, target_fpr=0.005)
    assert cal.threshold == pytest.approx(np.quantile(scores, 0.995))


def test_false_positive_rate_on_fresh_normal_data_is_near_the_target():
    rng = np.random.default_rng(0)
    cal = calibrate(rng.normal(5.0, 1.0, 2000), target_fpr=0.05)
    fresh = rng.normal(5.0, 1.0, 20000)
    assert np.mean(cal.is_anomalous(fresh)) == pytest.approx(0.05, abs=0.015)


def test_normalize_maps_threshold_to_one_half_and_is_monotone():
    cal = calibrate(np.array([0.2, 0.3, 0.25, 0.35, 0.28]))
    assert float(cal.normalize(cal.threshold)) == pytest.approx(0.5)
    values = np.linspace(-10, 10, 101)
    normalized = cal.normalize(values)
    assert np.all(np.diff(normalized) >= 0)
    assert normalized.min() >= 0 and normalized.max() <= 1
    assert cal.normalize(np.zeros((3, 4))).shape == (3, 4)  # maps keep their shape


def test_constant_scores_still_give_a_usable_scale():
    cal = calibrate(np.full(10, 2.0))
    assert cal.scale > 0 and cal.threshold >= 2.0
    assert float(cal.normalize(2.0)) <= 0.5


def test_invalid_input_is_rejected():
    with pytest.raises(ValueError, match="finite"):
        calibrate(np.array([np.nan]))
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate(np.array([1.0, 2.0]), target_fpr=0.0)


def test_round_trip_and_override():
    cal = calibrate(np.array([1.0, 2.0, 3.0]))
    assert Calibration.from_dict(cal.to_dict()) == cal
    moved = cal.with_threshold(10.0)
    assert moved.threshold == 10.0 and moved.scale == cal.scale
