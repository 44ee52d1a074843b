"""The typical-motion ceiling of ``stfeatures`` (``typical_motion_ceiling``): the part of a frame's typical (median)
motion cell distance above the highest seen on the cross-fitted normal training frames is taken off the motion score;
footage within it scores exactly as without; the ceiling is saved with the model, validated on load, and models saved
before it score as they were fitted; the live scorer and benchmarks/reencode.py's replay score as predict_clip does."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anomalens.models.base import create_detector, load_detector
from _saved_tensors import assert_refused_when_damaged_or_missing
from test_video_features import SETTINGS, clip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reencode import FrameScoreRecorder  # noqa: E402


def _motion_scores(detector, maps: torch.Tensor) -> torch.Tensor:
    return detector._frame_scores(torch.zeros(len(maps), 3, 3), maps)[1]


def test_a_whole_frame_motion_shift_above_the_ceiling_is_discounted_and_a_frame_within_it_is_not():
    detector = create_detector("stfeatures", **SETTINGS, typical_motion_ceiling=True)
    detector.motion_ceiling_ = torch.tensor([1.0])
    cells = torch.full((1, 5, 5), 0.8)
    cells[0, 2, 2] = 3.0  # one cell moving unlike normal (a stopped belt's cell); typical 0.8, within the ceiling
    noisy = cells + 5.0  # a codec reading its noise as motion everywhere: typical 5.8, 4.8 above the ceiling
    scores = _motion_scores(detector, torch.cat([cells, noisy, cells + 0.2]))
    assert scores.tolist() == pytest.approx([3.0, 3.2, 3.2])
    patch = cells.clone()
    patch[0, :2] = 9.0  # 10 of 25 cells far off (a stop of the belt across the frame): the typical cell stays 0.8
    assert _motion_scores(detector, patch).item() == pytest.approx(9.0)
    detector.motion_ceiling_ = torch.tensor([float("inf")])  # too little video for two folds: nothing discounted
    assert _motion_scores(detector, noisy).item() == pytest.approx(8.0)
    detector.motion_ceiling_ = torch.tensor([1.0])
    off = create_detector("stfeatures", **SETTINGS)  # the setting off: the saved ceiling is not applied
    off.motion_ceiling_ = torch.tensor([1.0])
    assert _motion_scores(off, noisy).item() == pytest.approx(8.0)


@pytest.fixture(scope="module")
def fitted():
    train = [clip(seed)[0] for seed in range(4)]
    return create_detector("stfeatures", **SETTINGS, typical_motion_ceiling=True).fit_clips(train, [clip(10)[0]])


def test_normal_footage_scores_as_without_it_and_the_live_scorer_discounts_as_predict_clip_does(fitted):
    ceiling = fitted.motion_ceiling_
    assert ceiling.shape == (1,) and torch.isfinite(ceiling).all() and float(ceiling) > 0
    frames = clip(21, n_frames=24)[0]
    with_ceiling = fitted.predict_clip(frames, views=False)
    fitted.motion_ceiling_ = None
    try:
        without = fitted.predict_clip(frames, views=False)
    finally:
        fitted.motion_ceiling_ = ceiling
    # within the normal range (typical motion cell at or below the ceiling in every frame): not one digit changes
    np.testing.assert_array_equal(with_ceiling.cues["motion"], without.cues["motion"])
    fitted.motion_ceiling_ = torch.zeros(1)  # every frame above it: discounted, and the live scorer agrees
    try:
        offline = fitted.predict_clip(frames, views=False)
        scorer = fitted.causal_scorer()
        live = [r for i in range(0, 24, 4) for r in scorer.push(torch.stack(frames[i:i + 4]))] + scorer.finish()
    finally:
        fitted.motion_ceiling_ = ceiling
    assert offline.cues["motion"].mean() < without.cues["motion"].mean()
    np.testing.assert_allclose([r.cues["motion"] for r in live], offline.cues["motion"], atol=1e-4)


def test_the_ceiling_is_saved_validated_and_absent_from_models_saved_before_it(fitted, tmp_path):
    fitted.save(tmp_path / "model")
    folder = tmp_path / "model"
    loaded = load_detector(folder, kind="video")
    assert loaded.config.typical_motion_ceiling is True and torch.equal(loaded.motion_ceiling_, fitted.motion_ceiling_)
    weights = load_file(str(folder / "weights.safetensors"))
    assert_refused_when_damaged_or_missing(folder, weights, "motion_typical_ceiling",
                                           [torch.tensor([float("nan")]), torch.ones(2)])
    # a model saved before the setting existed: neither the field nor the tensor; no discount
    meta = json.loads((folder / "config.json").read_text())
    del meta["config"]["typical_motion_ceiling"]
    (folder / "config.json").write_text(json.dumps(meta))
    before = load_detector(folder, kind="video")
    assert before.config.typical_motion_ceiling is False and before.motion_ceiling_ is None
    assert _motion_scores(before, torch.full((1, 4, 4), 1e3)).item() == pytest.approx(1e3)


def test_a_model_fitted_without_it_saves_no_motion_ceiling(tmp_path):
    detector = create_detector("stfeatures", **SETTINGS).fit_clips([clip(seed, n_frames=16)[0] for seed in range(3)])
    assert detector.motion_ceiling_ is None
    detector.save(tmp_path / "model")
    assert "motion_typical_ceiling" not in load_file(str(tmp_path / "model" / "weights.safetensors"))


def test_the_benchmarks_replay_reproduces_predict_clip_and_scores_a_setting_as_the_model_with_it_does(fitted):
    import dataclasses

    frames = clip(22, n_frames=24, anomaly="stop")[0]
    config, ceiling = fitted.config, fitted.motion_ceiling_
    recorder = FrameScoreRecorder(fitted)
    try:
        scores = fitted.predict_clip(frames, views=False).scores
        batches = recorder.take()
        np.testing.assert_array_equal(recorder.replay(batches, {}), scores)  # the very arithmetic of predict_clip
        fitted.config = dataclasses.replace(config, typical_motion_ceiling=False)
        off = fitted.predict_clip(frames, views=False).scores
        fitted.config = config
        np.testing.assert_array_equal(recorder.replay(batches, {"typical_motion_ceiling": False}), off)
        fitted.motion_ceiling_ = torch.zeros(1)  # every frame discounted: the replay follows the model
        low = fitted.predict_clip(frames, views=False).scores
        np.testing.assert_allclose(recorder.replay(batches, {}), low, atol=1e-5)
        assert recorder.replay(batches, {}).mean() < scores.mean()
    finally:
        fitted.config, fitted.motion_ceiling_ = config, ceiling
        del fitted._frame_scores  # back to the class's method
