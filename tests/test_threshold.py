"""The threshold rule: chosen from normal validation scores only; normalised scores put it at 0.5."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from anomalens.metrics.threshold import (
    Calibration,
    above_threshold,
    calibrate,
    effective_sample_size,
    generalized_pareto_quantile,
    needed_validation_count,
)


def test_small_sets_use_the_larger_of_quantile_and_gaussian_tail():
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


# ---- the tail model, the effective sample size and the small-validation warning --------------------------


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng, n: rng.normal(0.0, 1.0, n),
        lambda rng, n: rng.exponential(1.0, n),
        lambda rng, n: rng.lognormal(0.0, 0.5, n),
        lambda rng, n: rng.standard_t(4, n),
    ],
    ids=["normal", "exponential", "lognormal", "student_t4"],
)
def test_tail_model_keeps_the_rate_on_fresh_data_near_the_target(draw):
    """Known distributions, 300 validation scores, target 1%: over 30 draws the mean rate on fresh data stays
    within [0.4%, 1.6%] (the empirical quantile of 300 scores alone would vary between about 0.3% and 2%)."""
    rng = np.random.default_rng(7)
    fresh = draw(rng, 200_000)
    rates = [float(np.mean(fresh > calibrate(draw(rng, 300), 0.01).threshold)) for _ in range(30)]
    assert 0.004 <= np.mean(rates) <= 0.016


def test_small_skewed_sets_do_not_promise_too_little():
    """30 exponential scores: the normal tail of the old rule flagged about 3.7% of fresh data at a 1% target."""
    rng = np.random.default_rng(3)
    fresh = rng.exponential(1.0, 200_000)
    rates = [float(np.mean(fresh > calibrate(rng.exponential(1.0, 30), 0.01).threshold)) for _ in range(40)]
    assert np.mean(rates) < 0.02
    assert calibrate(rng.exponential(1.0, 30), 0.01).tail_model == "generalized_pareto"


def test_generalized_pareto_recovers_an_exponential_quantile():
    rng = np.random.default_rng(0)
    q = generalized_pareto_quantile(rng.exponential(2.0, 20_000), 0.001)
    assert q == pytest.approx(2.0 * np.log(1000), rel=0.05)
    assert generalized_pareto_quantile(np.arange(10.0), 0.01) is None  # too few scores for a tail


def test_effective_sample_size_counts_correlated_frames_less():
    rng = np.random.default_rng(1)
    independent = rng.normal(size=1000)
    assert effective_sample_size(independent) == 1000
    assert effective_sample_size(independent, [500, 500]) == pytest.approx(1000, rel=0.2)
    # an AR(1) series with coefficient 0.9 is worth about n (1 - 0.9) / (1 + 0.9) independent values
    series = np.zeros(20_000)
    for t in range(1, series.size):
        series[t] = 0.9 * series[t - 1] + rng.normal()
    assert effective_sample_size(series, [series.size]) == pytest.approx(20_000 * 0.1 / 1.9, rel=0.3)


def test_small_validation_set_warns_with_the_number_needed():
    rng = np.random.default_rng(2)
    small = calibrate(rng.normal(size=40), 0.01)
    assert needed_validation_count(0.01) == 300 and small.needed_count == 300
    assert "too small" in small.warning and "300" in small.warning
    assert calibrate(rng.normal(size=2000), 0.01).warning == ""
    # 2000 strongly correlated video frames are not 2000 independent ones
    frames = np.repeat(rng.normal(size=100), 20)
    video = calibrate(frames, 0.01, series_lengths=[1000, 1000])
    assert video.effective_count < 300 and "too small" in video.warning


def test_measured_rate_and_old_calibrations_load():
    cal = calibrate(np.linspace(0, 1, 1001), 0.05)
    assert cal.measured_fpr == pytest.approx(np.mean(np.linspace(0, 1, 1001) > cal.threshold))
    summary = cal.false_alarm_summary()
    assert summary["target_fpr"] == 0.05 and summary["measured_fpr_on_validation"] == cal.measured_fpr
    old = {k: v for k, v in cal.to_dict().items() if k in
           ("threshold", "scale", "target_fpr", "validation_mean", "validation_std", "validation_max", "validation_count")}
    loaded = Calibration.from_dict(old)  # saved before the tail model existed
    assert loaded.threshold == cal.threshold and loaded.measured_fpr is None and loaded.warning == ""
    with pytest.raises(KeyError):
        Calibration.from_dict({"threshold": 1.0})


def test_leaving_one_clip_out_measures_what_a_new_clip_can_expect():
    """Known inputs: five clips of identical-looking normal scores and one clip that runs higher throughout. In
    sample the threshold covers the high clip (it is part of its data), so the in-sample rate is near the target;
    judged by the threshold of the other clips, every frame of the high clip is above it."""
    from anomalens.metrics.threshold import clip_held_out_rate

    rng = np.random.default_rng(0)
    clips = [rng.normal(0.0, 1.0, 200) for _ in range(5)] + [rng.normal(6.0, 1.0, 200)]
    scores, lengths = np.concatenate(clips), [200] * 6
    cal = calibrate(scores, 0.01, series_lengths=lengths)
    assert cal.measured_fpr <= 0.02
    rate = clip_held_out_rate(scores, lengths, 0.01)
    assert cal.clip_held_out_fpr == rate
    # the high clip's 200 frames (about 1/6 of all) are all above the others' threshold; the rest barely
    assert 1 / 6 <= rate < 1 / 6 + 0.03
    # alike clips: leaving one out changes little
    alike = np.concatenate(clips[:5])
    assert clip_held_out_rate(alike, [200] * 5, 0.01) < 0.02
    # one clip, or images (no series): nothing to leave out
    assert clip_held_out_rate(clips[0], [200], 0.01) is None
    assert calibrate(scores, 0.01).clip_held_out_fpr is None
    assert "judged by the threshold of the others" in cal.false_alarm_text()
    assert cal.false_alarm_summary()["measured_fpr_on_clips_left_out"] == rate


def test_a_lost_frame_shortens_its_clip_and_keeps_the_series_apart():
    """One NaN frame once dropped the clip structure: 2000 frames of ~100 independent values counted as 2000
    independent ones, and the "too few" warning went away; the same NaN in a shift kept a lone clip's shift."""
    from anomalens.metrics.threshold import score_shift

    rng = np.random.default_rng(2)
    frames = np.repeat(rng.normal(size=100), 20)  # two clips of 1000 frames, 20 equal frames in a row
    whole = calibrate(frames, 0.01, series_lengths=[1000, 1000])
    lost = frames.copy()
    lost[5] = np.nan
    holed = calibrate(lost, 0.01, series_lengths=[1000, 1000])
    assert holed.effective_count == pytest.approx(whole.effective_count, rel=0.02)
    assert holed.effective_count < 300  # the series kept: far fewer than 1999 independent frames
    assert holed.warning and whole.warning and holed.clip_held_out_fpr is not None
    reference = rng.normal(size=200)
    others = reference[None] + 0.4 + rng.normal(0, 0.05, (2, 200))
    others[:, 7] = np.nan
    assert score_shift(others, reference, series_lengths=[200]).shift == 0.0  # one clip measures no shift


# ---- the verdict: above the threshold, or NaN ------------------------------------------------------------------
def test_above_threshold_is_strict_and_counts_nan_as_above():
    nan = float("nan")
    for score, verdict in ((nan, True), (1.0, False), (1.5, True), (0.5, False), (-np.inf, False), (np.inf, True)):
        result = above_threshold(score, 1.0)
        assert result.shape == () and bool(result) is verdict  # a scalar gives a scalar verdict
        assert bool(above_threshold(np.float32(score), 1.0)) is verdict
    scores = np.array([[0.5, 1.0], [1.5, nan]])
    assert above_threshold(scores, 1.0).tolist() == [[False, False], [True, True]]  # the shape is kept
    assert above_threshold(scores.astype(np.float32), 1.0).dtype == bool
    assert above_threshold(np.zeros(0), 1.0).shape == (0,)
    assert above_threshold([nan, 2.0, 1.0], 1.0).tolist() == [True, True, False]  # a list too


def test_every_verdict_follows_above_threshold():
    """The calibration, the offline events and the live tracker judge the same scores the same way, at the
    threshold exactly as above and below it."""
    from anomalens.live.events import EventTracker
    from anomalens.metrics.events import detect_events

    nan = float("nan")
    scores = np.array([0.5, 1.0, 1.5, nan, 1.0, 0.2, nan])
    expected = [False, False, True, True, False, False, True]
    cal = calibrate(np.array([0.8, 0.9, 1.0, 1.1])).with_threshold(1.0)
    assert cal.is_anomalous(scores).tolist() == expected
    assert [bool(cal.is_anomalous(s)) for s in scores] == expected
    offline = [(e["start_frame"], e["end_frame"]) for e in detect_events(scores, 1.0, fps=10)]
    assert offline == [(2, 3), (6, 6)]
    tracker = EventTracker(1.0, 1.0, fps=10)
    live = [t.event for i, s in enumerate(scores) for t in tracker.update(i, float(s)) if t.kind == "closed"]
    live += [t.event for t in tracker.finish()]
    assert [(e["start_frame"], e["end_frame"]) for e in live] == offline
    # hysteresis: the closing level is judged by the same rule (a NaN keeps the event open, the level itself not)
    tracker = EventTracker(1.0, 0.5, fps=10)
    closed = [t.event for i, s in enumerate([2.0, 0.6, nan, 0.5, 0.0]) for t in tracker.update(i, s) if t.kind == "closed"]
    assert [(e["start_frame"], e["end_frame"]) for e in closed] == [(0, 2)]
