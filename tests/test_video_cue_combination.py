"""How ``stfeatures`` adds its two cues into a frame score (``cue_combination``): the sum of the standardised cue
scores, or the sum of their Gaussian tail surprises ("tail"), the same in batch scoring, the live scorer and on
reload; models saved before the setting add them up as they did."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from anomalens.errors import CheckpointError, ConfigError
from anomalens.models.base import create_detector, load_detector
from anomalens.metrics.smoothing import smooth_scores
from anomalens.models.components.kernels import series_kernel
from anomalens.progress import SILENT
from anomalens.models.video.stfeatures import cue_surprise
from test_video_features import SETTINGS, auroc, clip


def test_tail_surprise_is_minus_the_log_of_the_normal_tail():
    z = torch.tensor([-8.0, -3.0, 0.0, 1.0, 3.0, 40.0])
    # -log P(Z > z): 1 - Phi(-3) = 0.99865, 0.5, 0.158655, 1.3499e-3; far above, z^2/2 + log z + log sqrt(2 pi)
    # less log(1 - 1/z^2 + 3/z^4) (Mills' ratio), which float32's P(Z > 40) = 0 could not give
    far = 800.0 + math.log(40.0) + 0.5 * math.log(2 * math.pi) - math.log(1 - 1 / 1600 + 3 / 1600**2)
    expected = [6.2e-16, -math.log(0.9986501), math.log(2.0), -math.log(0.1586553), -math.log(1.3498980e-3), far]
    np.testing.assert_allclose(cue_surprise(z).numpy(), expected, rtol=1e-5, atol=1e-6)
    dense = cue_surprise(torch.linspace(-100.0, 100.0, 20_001))
    assert torch.isfinite(dense).all() and (dense.diff() >= 0).all() and dense[-1].item() == pytest.approx(5005.5, abs=0.1)


def _standardised(combination: str):
    detector = create_detector("stfeatures", **SETTINGS, cue_combination=combination)
    detector.standardisation_ = torch.tensor([0.0, 1.0, 0.0, 1.0])  # raw scores are the standardised ones
    return detector


def test_one_clear_cue_outweighs_two_mildly_high_ones_only_when_adding_tails():
    # (appearance, motion) in standard units: a cart (one cue far out, the other below its mean) and a normal frame
    # with an odd look in one place and odd motion in another (both mildly high): the same sum
    appearance, motion = torch.tensor([4.0, 1.5]), torch.tensor([-1.0, 1.5])
    summed = _standardised("sum")._combined(appearance, motion)
    assert summed[0].item() == pytest.approx(summed[1].item())
    tail = _standardised("tail")._combined(appearance, motion)
    assert tail[0] > 1.5 * tail[1]
    # a cue far below its normal mean cancels nothing: the other cue's surprise stands almost alone
    low = _standardised("tail")._combined(torch.tensor([4.0]), torch.tensor([-5.0]))
    assert low.item() == pytest.approx(cue_surprise(torch.tensor([4.0])).item(), abs=1e-5)
    # both: each cue counts its standardised score plus its surprise, so a cue below its mean still counts against
    both = _standardised("sum+tail")._combined(appearance, motion)
    assert both[0] > 1.5 * both[1]
    surprise = cue_surprise(torch.tensor([4.0, -5.0]))
    low = _standardised("sum+tail")._combined(torch.tensor([4.0]), torch.tensor([-5.0]))
    assert low.item() == pytest.approx(4.0 - 5.0 + surprise.sum().item(), abs=1e-5)


def test_an_unknown_combination_is_refused():
    with pytest.raises(ConfigError, match="cue_combination"):
        create_detector("stfeatures", cue_combination="product")


@pytest.fixture(scope="module")
def tail_model():
    train = [clip(seed)[0] for seed in range(4)]
    return create_detector("stfeatures", **SETTINGS, cue_combination="tail").fit_clips(train, [clip(10)[0]])


def test_tail_scores_find_anomalies_and_live_scores_equal_batch_scores(tail_model):
    frames, labels = clip(202, anomaly="foreign_object")
    result = tail_model.predict_clip(frames, views=False)
    np.testing.assert_allclose(result.cues["appearance"] + result.cues["motion"], result.scores, atol=1e-5)
    assert min(result.cues["appearance"].min(), result.cues["motion"].min()) >= 0.0  # surprises, never negative
    assert auroc(result.scores, labels) > 0.9
    assert tail_model.calibration_ is not None and math.isfinite(tail_model.calibration_.threshold)
    scorer = tail_model.causal_scorer()
    live = [r for i in range(0, len(frames), 4) for r in scorer.push(torch.stack(frames[i:i + 4]))] + scorer.finish()
    np.testing.assert_allclose([r.score for r in live], result.scores, atol=1e-4)


def test_the_combination_is_saved_and_older_models_add_the_cues_up(tail_model, tmp_path):
    folder = tmp_path / "model"
    tail_model.save(folder)
    frames = clip(203, n_frames=16)[0]
    expected = tail_model.predict_clip(frames, views=False).scores
    loaded = load_detector(folder, kind="video")
    assert loaded.config.cue_combination == "tail"
    assert np.array_equal(loaded.predict_clip(frames, views=False).scores, expected)

    meta = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**meta, "config": {**meta["config"], "cue_combination": "max"}}))
    with pytest.raises(CheckpointError, match="cue_combination"):
        load_detector(folder, kind="video")
    del meta["config"]["cue_combination"]  # saved before the setting existed: the standardised cues add up
    (folder / "config.json").write_text(json.dumps(meta))
    before = load_detector(folder, kind="video")
    assert before.config.cue_combination == "sum"
    result = before.predict_clip(frames, views=False)
    a_mean, a_std, m_mean, m_std = before.standardisation_.tolist()
    raw = before._score_stream(frames, SILENT)
    standardised = ((raw.appearance - a_mean) / a_std, (raw.motion - m_mean) / m_std)
    np.testing.assert_allclose(result.cues["appearance"] + result.cues["motion"], result.scores, atol=1e-5)
    assert np.abs(result.scores - expected).max() > 0.1  # the combination is what changed
    c = before.config
    kernel = series_kernel(c.temporal_sigma)
    smoothed = sum(smooth_scores(cue.numpy(), kernel, c.temporal_median, c.temporal_cap, before.spill_limit(name))
                   for name, cue in zip(("appearance", "motion"), standardised))
    np.testing.assert_allclose(result.scores, smoothed, atol=1e-5)

