"""Smoothing stfeatures' frame scores in time: a running median of each cue's series, the Gaussian of the part of
each value up to a spill limit (the part above through a running median of 3), and a cap a given number of standard
units above each frame's own (median) value (``temporal_median``, ``temporal_cap`` opt-in; ``temporal_spill``, by
default the highest value of each cue on the normal frames that standardise it). A one-frame spike of a normal
series goes instead of being spread over its neighbours; the normal frames next to an anomaly are not lifted by its
score (by at most the cap, or the spill) while the anomaly keeps its height; the live scorer smooths one frame at a
time as ``predict_clip`` does; a reloaded model smooths as it was trained to, and models saved before the settings
with the Gaussian alone, as they did."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anomalens.errors import CheckpointError, ConfigError
from anomalens.metrics.smoothing import running_median, smooth_scores, smooth_series
from anomalens.models.base import create_detector, load_detector
from anomalens.models.components.kernels import DelayedMedian, DelayedSmoothing, gaussian_smooth_1d, series_kernel
from anomalens.progress import SILENT
from _saved_tensors import assert_refused_when_damaged_or_missing
from test_video_codec import assert_live_and_reloaded_score_as_offline
from test_video_features import SETTINGS, clip

KERNEL = series_kernel(2.0)  # the default temporal_sigma's taps, radius 8


def test_a_one_frame_spike_goes_and_a_step_stays_where_it_is():
    flat = np.zeros(40, np.float32)
    spike = flat.copy()
    spike[20] = 10.0
    assert smooth_series(spike, KERNEL)[14:27].min() > 0.01  # the Gaussian alone spreads it over 13 frames
    assert np.array_equal(smooth_scores(spike, KERNEL, median_width=3), flat)
    two = flat.copy()
    two[20:22] = 10.0
    assert smooth_scores(two, KERNEL, median_width=3).max() > 2.0  # two frames outlast a median of three
    step = flat.copy()
    step[20:] = 10.0
    assert np.array_equal(running_median(step, 3), step) and np.array_equal(running_median(step, 5), step)


def test_the_cap_keeps_an_anomalys_score_off_its_normal_neighbours_and_its_own_height():
    series = np.full(60, -1.0, np.float32)
    series[30:45] = 8.0
    plain = smooth_scores(series, KERNEL)
    capped = smooth_scores(series, KERNEL, median_width=3, cap=0.0)
    assert plain[26:30].min() > -0.9 and plain[45:49].min() > -0.9  # lifted by the anomaly beside them
    assert np.array_equal(capped[:30], series[:30]) and np.array_equal(capped[45:], series[45:])
    assert capped[36:39].min() == pytest.approx(8.0, abs=0.01)  # the middle of the anomaly keeps its height
    assert np.all(capped <= series + 1e-6)
    loose = smooth_scores(series, KERNEL, median_width=3, cap=1.5)  # lifted by at most 1.5 units
    assert np.all(loose <= series + 1.5 + 1e-6) and loose[29] == pytest.approx(0.5) and loose[20] == plain[20]


def test_the_spill_keeps_an_anomalys_height_and_lends_its_neighbours_at_most_the_limit():
    series = np.full(60, -1.0, np.float32)
    series[30:45] = 8.0
    plain = smooth_scores(series, KERNEL)
    spilled = smooth_scores(series, KERNEL, spill=2.0)
    # the Gaussian of the values up to 2 (at most 3 above the flat -1, half of it one frame away), nothing above
    np.testing.assert_allclose(spilled[:30], smooth_series(np.minimum(series, 2.0), KERNEL)[:30], atol=1e-6)
    assert plain[29] > 2.5 and spilled[29] < -1.0 + 0.5 * 3.0 and np.all(spilled[:30] <= plain[:30] + 1e-6)
    # the anomaly keeps its height: as high as the Gaussian's everywhere, 8 in its middle
    assert np.all(spilled[30:45] >= plain[30:45] - 1e-5) and spilled[37] == pytest.approx(8.0, abs=0.01)
    spike = np.zeros(40, np.float32)
    spike[20] = 10.0  # a one-frame spike above the limit: only the limit is smoothed, the rest goes
    assert smooth_scores(spike, KERNEL, spill=2.0).max() == pytest.approx(smooth_series(np.minimum(spike, 2.0), KERNEL).max())
    assert np.array_equal(smooth_scores(series, KERNEL, spill=100.0), plain)  # a limit above everything: the Gaussian


def test_an_even_median_is_refused():
    with pytest.raises(ValueError, match="odd"):
        running_median(np.zeros(5), 2)
    with pytest.raises(ValueError, match="odd"):
        DelayedMedian(4)
    with pytest.raises(ConfigError, match="temporal_median must be an odd number"):
        create_detector("stfeatures", **SETTINGS, temporal_median=4)


@pytest.mark.parametrize("width,cap,spill", [(1, None, None), (3, None, None), (3, 0.0, None), (5, 0.7, None),
                                             (1, None, 0.5), (3, 0.7, 1.0)])
@pytest.mark.parametrize("sigma", [2.0, 0.0])
def test_one_value_at_a_time_equals_the_offline_smoothing(width, cap, spill, sigma):
    for n in (1, 2, 3, 6, 11, 40):
        values = 3 * np.random.default_rng(n).normal(size=n).astype(np.float32)
        smoother = DelayedSmoothing(sigma, width, cap, spill=spill)
        # the spill's median of 3 needs one frame ahead even without a Gaussian
        assert smoother.delay == width // 2 + max(round(4 * sigma), 0 if spill is None else 1)
        out = [y for v in values for y in smoother.push(v)]
        assert len(out) == max(0, n - smoother.delay)  # each value comes `delay` values later
        out += smoother.finish()
        np.testing.assert_allclose(out, smooth_scores(values, series_kernel(sigma), width, cap, spill), atol=1e-5)


def test_a_shorter_lookahead_goes_to_the_median_first():
    one = DelayedSmoothing(2.0, 3, 0.0, lookahead=1)
    assert (one.median.delay, one.gaussian.delay, one.delay) == (1, 0, 1)
    causal = DelayedSmoothing(2.0, 3, 0.0, lookahead=0)
    assert causal.delay == 0 and causal.push(1.0) == [1.0]
    # the median of each frame and the two before it: a one-frame spike goes at once, a lasting step shows
    causal = DelayedSmoothing(2.0, 3, 0.0, lookahead=0)
    out = [y for v in [0.0] * 10 + [9.0] + [0.0] * 5 + [9.0] * 3 for y in causal.push(v)]
    assert max(out[:16]) == 0.0 and 0.0 < out[-1] < 9.0


@pytest.fixture(scope="module")
def fitted():
    train = [clip(seed)[0] for seed in range(4)]
    return create_detector("stfeatures", **SETTINGS, temporal_median=3, temporal_cap=0.5).fit_clips(
        train, [clip(10)[0], clip(11)[0]])


def test_each_cue_is_smoothed_so_live_reloaded_and_before_the_settings(fitted, tmp_path):
    frames, _ = clip(21, anomaly="stop")
    result = fitted.predict_clip(frames, views=False)
    raw = fitted._score_stream(frames, SILENT)
    cues = dict(zip(("appearance", "motion"), (c.numpy() for c in fitted._cue_values(raw.appearance, raw.motion))))
    limits = fitted.spill_limits_.tolist()  # learned: each cue's highest value on the cross-fitted normal frames
    assert all(1.0 < limit < 20.0 for limit in limits) and [fitted.spill_limit(n) for n in cues] == pytest.approx(limits)
    for name, cue in cues.items():
        np.testing.assert_allclose(result.cues[name], smooth_scores(cue, KERNEL, 3, cap=0.5, spill=fitted.spill_limit(name)),
                                   atol=1e-5)
    np.testing.assert_allclose(result.scores, result.cues["appearance"] + result.cues["motion"], atol=1e-5)
    assert fitted.causal_scorer().delay_frames == 9  # the median's one frame and the Gaussian's eight
    for cue in ("appearance", "motion"):  # four frames at a time, and saved and loaded
        assert_live_and_reloaded_score_as_offline(fitted, frames, result, cue, tmp_path / cue)

    folder = tmp_path / "model"
    fitted.save(folder)
    meta = json.loads((folder / "config.json").read_text())
    assert (meta["config"]["temporal_median"], meta["config"]["temporal_cap"], meta["config"]["temporal_spill"]) == (3, 0.5, "normal")
    weights = load_file(str(folder / "weights.safetensors"))
    assert weights["spill_limits"].tolist() == pytest.approx(limits)
    del meta["config"]["temporal_median"], meta["config"]["temporal_cap"], meta["config"]["temporal_spill"]
    (folder / "config.json").write_text(json.dumps(meta))
    before = load_detector(folder, kind="video")
    assert (before.config.temporal_median, before.config.temporal_cap, before.config.temporal_spill) == (1, None, "off")
    old = before.predict_clip(frames, views=False)
    for name, cue in cues.items():
        np.testing.assert_allclose(old.cues[name], gaussian_smooth_1d(cue, 2.0), atol=1e-5)
    assert np.abs(old.scores - result.scores).max() > 0.01  # the smoothing is what changed

    for field, value in (("temporal_median", 2), ("temporal_cap", -1.0), ("temporal_spill", "sometimes"),
                         ("temporal_spill", -2.0)):
        (folder / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], field: value}}))
        with pytest.raises(CheckpointError, match=field):
            load_detector(folder, kind="video")
    # the learned limits are required when the model spreads "normal", and checked
    (folder / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], "temporal_spill": "normal"}}))
    assert_refused_when_damaged_or_missing(folder, weights, "spill_limits",
                                           [weights["spill_limits"][:1], torch.tensor([1.0, float("nan")])])


def test_the_learned_spill_lowers_the_normal_frames_next_to_an_anomaly_and_not_the_anomaly(fitted):
    frames, labels = clip(22, anomaly="stop")
    trained = fitted.config
    scores = {}
    try:
        for spill in ("normal", "off"):  # the Gaussian alone around it, without the fixture's median and cap
            fitted.config = dataclasses.replace(trained, temporal_median=1, temporal_cap=None, temporal_spill=spill)
            scores[spill] = fitted.predict_clip(frames, views=False).scores
    finally:
        fitted.config = trained
    spilled, plain = scores["normal"], scores["off"]
    inside = np.flatnonzero(labels == 1)
    beside = np.r_[inside[0] - 2 : inside[0], inside[-1] + 1 : inside[-1] + 3]
    assert np.all(spilled[beside] <= plain[beside] + 1e-5) and (plain[beside] - spilled[beside]).max() > 0.1
    assert np.median(spilled[inside]) >= np.median(plain[inside]) - 1e-3
    with pytest.raises(ConfigError, match="temporal_spill"):
        create_detector("stfeatures", **SETTINGS, temporal_spill="sometimes")


def cut_gaussian(values: np.ndarray, sigma: float, lookahead: int) -> np.ndarray:
    """The live Gaussian, written out: each frame the kernel's taps from ``radius`` frames back to ``lookahead``
    ahead that exist (none before the first frame, none after the last), renormalised to sum 1."""
    kernel, n = series_kernel(sigma), len(values)
    radius = len(kernel) // 2
    out = []
    for t in range(n):
        js = np.arange(max(0, t - radius), min(n - 1, t + lookahead) + 1)
        taps = kernel[js - t + radius]
        out.append(float(np.dot(taps, values[js]) / taps.sum()))
    return np.asarray(out)


def test_the_live_lookahead_with_the_spill_smooths_up_to_the_limit_and_medians_the_rest():
    """The watch's default (LIVE_LOOKAHEAD 3 frames, temporal_spill "normal", median 1): the part of each value up to
    the limit through the Gaussian cut 3 frames ahead, the part above through the full running median of 3 (it needs
    one frame ahead, which the 3 leave), the two added, each 3 frames after its own."""
    from anomalens.live.settings import LIVE_LOOKAHEAD

    assert LIVE_LOOKAHEAD == 3
    limit = 2.0
    rng = np.random.default_rng(7)
    spike, run2, run3 = (np.zeros(40, np.float32) for _ in range(3))
    spike[20], run2[20:22], run3[[0, 1, 2, 30, 31, 32]] = 10.0, 9.0, 7.0
    noisy = (3 * rng.normal(size=40)).astype(np.float32)
    series = [spike, run2, run3, noisy] + [noisy[:n] for n in (1, 2, 3, 4, 5, 9)]
    for values in series:
        smoother = DelayedSmoothing(2.0, lookahead=LIVE_LOOKAHEAD, spill=limit)
        assert (smoother.median.delay, smoother.gaussian.delay, smoother.excess.delay, smoother.delay) == (0, 3, 1, 3)
        out = [y for v in values for y in smoother.push(v)]
        assert len(out) == max(0, len(values) - 3)
        out += smoother.finish()
        below, above = np.minimum(values, limit), np.maximum(values - limit, 0)
        expected = cut_gaussian(below, 2.0, 3) + running_median(above, 3)
        np.testing.assert_allclose(out, expected, atol=1e-5)
        if len(values) > 3:  # not what the full look-ahead gives: the kernel is really cut
            assert np.abs(np.asarray(out) - smooth_scores(values, KERNEL, spill=limit)).max() > 1e-3
    # known values: a one-frame spike lends its neighbours at most the limit and keeps no more than it itself
    out = DelayedSmoothing(2.0, lookahead=3, spill=limit)
    got = np.asarray([y for v in spike for y in out.push(v)] + out.finish())
    assert got.max() <= limit and got[20] == pytest.approx(limit * KERNEL[8] / KERNEL[:12].sum(), abs=1e-6)
    # seen 3 frames ahead, left 8 frames behind (the kernel's radius), nothing beyond
    assert np.all(got[:17] == 0.0) and np.all(got[17:29] > 0.0) and np.all(got[29:] == 0.0)
    # a run of two above the limit keeps its height above it: 7 = 9 - limit through the median of 3, on each frame
    out = DelayedSmoothing(2.0, lookahead=3, spill=limit)
    got = np.asarray([y for v in run2 for y in out.push(v)] + out.finish())
    np.testing.assert_allclose(got[20:22] - cut_gaussian(np.minimum(run2, limit), 2.0, 3)[20:22], 7.0, atol=1e-5)
    assert np.all(got[[19, 22]] < limit)
