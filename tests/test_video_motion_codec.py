"""The motion codec memory of ``stfeatures`` (``motion_codec_memory``): a second memory per motion cell, of the
motion in training clips degraded as a noisy sensor behind an MJPEG encoder, consulted only by frames whose typical
appearance cell lies above the ceiling. It lowers the flicker that such footage shows as motion where nothing moves;
footage within the normal range scores exactly as without it, the rest of the model is learned bit for bit as
without it, and the live scorer, a reloaded model and the exported bundle score as ``predict_clip`` does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anomalens.data.synthetic_video import DEFAULT_VIDEO_CATEGORY as CATEGORY
from anomalens.data.synthetic_video import make_synthetic_video_dataset
from anomalens.errors import CheckpointError
from anomalens.export import export_model
from anomalens.models.base import create_detector, load_detector
from anomalens.models.video.degrade import make_degradation
from anomalens.workflows.train import train_video_model
from _saved_tensors import assert_refused_when_damaged_or_missing, rewrite_weights
from test_video_codec import assert_live_and_reloaded_score_as_offline
from test_video_features import SETTINGS, auroc, clip

SPEC = ("noise:3+jpeg:50",)
BARE = dict(SETTINGS, codec_memory=(), above_ceiling_lowpass=0)  # the motion codec memory alone


def _motion_score(detector, appearance: torch.Tensor, motion: torch.Tensor, coded_motion: torch.Tensor | None) -> float:
    return detector._frame_scores(appearance, motion, None, coded_motion)[1].item()


def test_the_motion_codec_memory_counts_only_above_the_ceiling_and_more_the_further_above():
    detector = create_detector("stfeatures", **BARE, motion_codec_memory=SPEC)
    detector.appearance_ceiling_ = torch.tensor([1.0])
    detector.standardisation_ = torch.tensor([0.0, 2.0, 0.0, 1.0])  # the appearance cue's spread: 2.0
    appearance = torch.full((1, 5, 5), 0.8)  # typical 0.8: within the normal range
    motion = torch.full((1, 3, 3), 0.5)
    motion[0, 1, 1] = 4.0  # one cell moving unlike normal
    near = torch.zeros(1, 3, 3)  # every cell as near the codec motion memory as can be
    assert _motion_score(detector, appearance, motion, near) == pytest.approx(4.0)  # within the ceiling: unused
    # typical 2.0, half a spread above the ceiling: each cell half way to its codec distance
    assert _motion_score(detector, appearance + 1.2, motion, near) == pytest.approx(2.0)
    assert _motion_score(detector, appearance + 5.2, motion, near) == pytest.approx(0.0)  # two spreads: fully
    # a codec memory farther than the clean one changes nothing: it can only lower a cell
    assert _motion_score(detector, appearance + 5.2, motion, near + 100) == pytest.approx(4.0)


def _mjpeg_camera(frames: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """A noisy sensor behind a coarse MJPEG encoder: blocks that flicker from frame to frame where nothing moves."""
    return list(make_degradation("noise:3+jpeg:20", seed=seed)(torch.stack(frames)))


@pytest.fixture(scope="module")
def fitted():
    train = [clip(seed)[0] for seed in range(4)]
    return create_detector("stfeatures", **BARE, motion_codec_memory=SPEC).fit_clips(train, [clip(10)[0]])


def _without_it(detector, frames_list, cue: str = "motion"):
    memory, detector.codec_motion_memory_ = detector.codec_motion_memory_, None
    try:
        return [detector.predict_clip(frames, views=False).cues[cue] for frames in frames_list]
    finally:
        detector.codec_motion_memory_ = memory


def test_flicker_comes_down_normal_footage_scores_as_without_it_and_a_speed_change_stays_found(fitted):
    assert fitted.codec_motion_memory_.bank.shape == fitted.motion_memory_.bank.shape
    normal = clip(20)[0]
    flicker = _mjpeg_camera(normal, seed=5)
    speed, labels = clip(101, n_frames=60, anomaly="speed_change")
    speed = _mjpeg_camera(speed, seed=6)
    scored = [fitted.predict_clip(frames, views=False).cues["motion"] for frames in (normal, flicker, speed)]
    plain = _without_it(fitted, (normal, flicker, speed))
    assert np.array_equal(scored[0], plain[0])  # within the ceiling: not one score changes
    assert np.median(scored[1]) < 0.5 * np.median(plain[1])  # the flicker read as motion comes down (3.9 -> 1.5)
    truth = np.concatenate([np.zeros(len(flicker)), labels])
    assert auroc(np.concatenate([scored[1], scored[2]]), truth) > 0.95  # a belt running too fast is still found


def test_the_live_scorer_and_a_reloaded_model_use_it_as_predict_clip_does(fitted, tmp_path):
    frames = _mjpeg_camera(clip(21, n_frames=24)[0], seed=7)  # above the ceiling: the memory counts
    offline = fitted.predict_clip(frames, views=False)
    assert not np.array_equal(offline.cues["motion"], _without_it(fitted, [frames])[0])
    assert_live_and_reloaded_score_as_offline(fitted, frames, offline, "motion", tmp_path)


def test_the_rest_of_the_model_is_learned_bit_for_bit_as_without_it(fitted):
    """The degraded clips have their own flow and memory, built last: no other random draw moves."""
    train = [clip(seed)[0] for seed in range(4)]
    plain = create_detector("stfeatures", **BARE, motion_codec_memory=()).fit_clips(train, [clip(10)[0]])
    assert plain.codec_motion_memory_ is None
    assert torch.equal(plain.appearance_index_.bank, fitted.appearance_index_.bank)
    assert torch.equal(plain.motion_memory_.bank, fitted.motion_memory_.bank)
    assert torch.equal(plain.standardisation_, fitted.standardisation_)
    assert torch.equal(plain.appearance_ceiling_, fitted.appearance_ceiling_)
    assert np.array_equal(plain._cross_fitted[0], fitted._cross_fitted[0])  # the frames that inform the threshold
    # and the held-out clip that also does: scored as every later clip, so its few frames above the ceiling (if
    # any) may come down a little; here they move the threshold by 0.2% of the score scale
    assert abs(plain.calibration_.threshold - fitted.calibration_.threshold) < 0.01 * plain.calibration_.scale


def test_it_is_validated_on_load_and_absent_from_models_saved_before_it(fitted, tmp_path):
    folder = tmp_path / "model"
    fitted.save(folder)
    weights = load_file(str(folder / "weights.safetensors"))
    assert weights["codec_motion_memory"].shape == fitted.motion_memory_.bank.shape
    assert_refused_when_damaged_or_missing(folder, weights, "codec_motion_memory",
                                           [weights["codec_motion_memory"][:, :, :3]])  # the wrong channels
    meta = json.loads((folder / "config.json").read_text())
    del meta["config"]["motion_codec_memory"]  # saved before the setting existed
    (folder / "config.json").write_text(json.dumps(meta))
    before = load_detector(folder, kind="video")
    assert before.config.motion_codec_memory == () and before.codec_motion_memory_ is None
    meta["config"]["motion_codec_memory"] = ["noise:3+mpeg2:4"]
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="motion_codec_memory: unknown or out-of-range 'mpeg2:4'"):
        load_detector(folder)


@pytest.mark.slow
@pytest.mark.parametrize("codec_memory, still_texture_weight", [((), 0.0), (("jpeg:8",), 25.0)])
def test_it_runs_in_the_exported_motion_graph(tmp_path, codec_memory, still_texture_weight):
    """With the saved ceiling lowered so that every frame consults the codec memories, the bundle (the motion codec
    memory a further input of the motion graph, alone or after "still" and "coded") matches the checkpoint."""
    size = (64, 96)
    root = make_synthetic_video_dataset(tmp_path / "conveyor", n_train=2, n_test=1, n_frames=24, size=size)
    run = train_video_model(root, CATEGORY, "stfeatures", tmp_path / "results", image_size=size, device="cpu",
                            run_name="motion_codec", appearance_memory=512, appearance_samples=20_000,
                            codec_memory=codec_memory, motion_codec_memory=SPEC,
                            still_texture_weight=still_texture_weight).run_dir
    weights_file = run / "model" / "weights.safetensors"
    weights = load_file(str(weights_file))
    rewrite_weights(weights_file, {**weights, "appearance_typical_ceiling": weights["appearance_typical_ceiling"] * 0.5})
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle")
    meta = json.loads((bundle.folder / "bundle.json").read_text())
    assert meta["graphs"]["motion"]["inputs"][-1] == "codec_motion_memory"
    assert "codec_motion_memory" in meta["constant_inputs"]
    check = bundle.check
    assert check["frames"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < 1e-3  # as PARITY in test_export_video.py
