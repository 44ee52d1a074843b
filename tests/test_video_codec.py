"""The codec memory of ``stfeatures`` (``codec_memory``): a second appearance memory of re-encoded training patches,
consulted only by frames whose typical cell lies above the ceiling, and the low-pass over the cells of those same
frames (``above_ceiling_lowpass``); footage within the normal range scores exactly as without them, and the live
scorer, a reloaded model and the exported bundle score as ``predict_clip`` does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anomalens.data.synthetic_video import DEFAULT_VIDEO_CATEGORY as CATEGORY
from anomalens.data.synthetic_video import make_synthetic_video_dataset
from anomalens.errors import CheckpointError, ConfigError
from anomalens.export import export_model
from anomalens.models.base import create_detector, load_detector
from anomalens.models.video.degrade import jpeg_degrade
from anomalens.workflows.train import train_video_model
from _saved_tensors import assert_refused_when_damaged_or_missing, rewrite_weights
from test_video_features import SETTINGS, auroc, clip

CODEC = ("jpeg:8",)


def _appearance_scores(detector, maps: torch.Tensor, coded: torch.Tensor) -> torch.Tensor:
    return detector._frame_scores(maps, torch.zeros(len(maps), 2, 2), coded)[0]


def test_the_codec_memory_counts_only_above_the_ceiling_and_more_the_further_above():
    detector = create_detector("stfeatures", **SETTINGS, codec_memory=CODEC, above_ceiling_lowpass=0)
    detector.appearance_ceiling_ = torch.tensor([1.0])
    detector.standardisation_ = torch.tensor([0.0, 2.0, 0.0, 1.0])  # the appearance cue's spread: 2.0
    cells = torch.full((1, 5, 5), 0.8)
    cells[0, 2, 2] = 3.0  # one bright cell; typical 0.8, within the normal range
    coded = torch.zeros(1, 5, 5)  # everything near the codec memory
    assert _appearance_scores(detector, cells, coded).item() == pytest.approx(3.0)  # within the ceiling: unused
    # typical 2.0: 1.0 above the ceiling, half the spread: each cell goes half way to its codec distance, then the
    # excess is taken off as the ceiling alone does
    assert _appearance_scores(detector, cells + 1.2, coded).item() == pytest.approx(4.2 / 2 - 1.0)
    # two spreads above: fully the codec distances (here 0), less the excess
    assert _appearance_scores(detector, cells + 5.2, coded).item() == pytest.approx(0.0 - 5.0)
    # a codec memory farther than the clean one changes nothing: it can only lower a cell
    assert _appearance_scores(detector, cells + 5.2, coded + 100).item() == pytest.approx(8.2 - 5.0)
    assert _appearance_scores(detector, cells + 5.2, None).item() == pytest.approx(8.2 - 5.0)  # none: the ceiling alone


def test_the_lowpass_above_the_ceiling_lowers_a_lone_cell_more_than_a_patch_and_only_above_the_ceiling():
    detector = create_detector("stfeatures", **SETTINGS, codec_memory=CODEC, above_ceiling_lowpass=3)
    detector.appearance_ceiling_ = torch.tensor([1.0])
    detector.standardisation_ = torch.tensor([0.0, 2.0, 0.0, 1.0])  # the appearance cue's spread: 2.0
    lone = torch.full((1, 7, 7), 0.8)
    lone[0, 3, 3] = 9.8  # one cell 9 above the rest, as a codec's stray block
    patch = torch.full((1, 7, 7), 0.8)
    patch[0, 2:5, 2:5] = 9.8  # a 3 x 3 patch as high, as a defect
    far = torch.full((1, 7, 7), 1e6)  # a codec memory farther than the clean one: it changes nothing
    # within the ceiling (typical 0.8): not one digit changes
    assert _appearance_scores(detector, lone, far).item() == lone.max().item()
    # two spreads above the ceiling (typical 4.8, excess 3.8, weight 1): the lone cell becomes its 3 x 3 mean,
    # the patch's centre keeps its height; both less the excess, as the ceiling alone
    assert _appearance_scores(detector, lone + 4.0, far).item() == pytest.approx(4.8 + 9.0 / 9 - 3.8)
    assert _appearance_scores(detector, patch + 4.0, far).item() == pytest.approx(13.8 - 3.8)
    # one spread above (weight 0.5 at excess 1.0): half way to the mean
    assert _appearance_scores(detector, lone + 1.2, far).item() == pytest.approx(2.0 + 0.5 * 9.0 + 0.5 * 1.0 - 1.0)
    off = create_detector("stfeatures", **SETTINGS, codec_memory=CODEC, above_ceiling_lowpass=0)
    off.appearance_ceiling_, off.standardisation_ = detector.appearance_ceiling_, detector.standardisation_
    assert _appearance_scores(off, lone + 4.0, far).item() == pytest.approx(13.8 - 3.8)
    with pytest.raises(ConfigError, match="above_ceiling_lowpass must be 0, 1 or an odd"):
        create_detector("stfeatures", **SETTINGS, above_ceiling_lowpass=4)


@pytest.fixture(scope="module")
def fitted():
    train = [clip(seed)[0] for seed in range(4)]
    # the low-pass above the ceiling scaled to this 12 x 16 grid (the default's 5 cells suit the default's 30 x 45)
    return create_detector("stfeatures", **SETTINGS, codec_memory=CODEC, above_ceiling_lowpass=3).fit_clips(
        train, [clip(10)[0]])


def _without_codec_memory(detector, frames_list):
    codec = detector.codec_index_
    detector.codec_index_ = None
    try:
        return [detector.predict_clip(frames, views=False).cues["appearance"] for frames in frames_list]
    finally:
        detector.codec_index_ = codec


def test_normal_footage_scores_as_without_it_and_compressed_footage_lower_while_a_defect_stays_found(fitted):
    assert fitted.codec_index_ is not None and fitted.codec_index_.bank.shape == fitted.appearance_index_.bank.shape
    normal = clip(20)[0]
    compressed = list(jpeg_degrade(torch.stack(normal), 8))  # as the memory's copies: heavy blocking everywhere
    defect, labels = clip(101, n_frames=60, anomaly="colour_change")
    compressed_defect = list(jpeg_degrade(torch.stack(defect), 8))
    scored = [fitted.predict_clip(frames, views=False).cues["appearance"] for frames in (normal, compressed, compressed_defect)]
    plain = _without_codec_memory(fitted, (normal, compressed, compressed_defect))
    assert np.array_equal(scored[0], plain[0])  # within the ceiling: not one score changes
    assert np.median(scored[1]) < np.median(plain[1])  # the compressed normal frames come down
    # the wrong colour, compressed alike, is told from the compressed normal frames better than by the ceiling alone
    truth = np.concatenate([np.zeros(len(scored[1])), labels])
    with_memory, ceiling_alone = (auroc(np.concatenate([s[1], s[2]]), truth) for s in (scored, plain))
    assert with_memory > 0.95 and with_memory > ceiling_alone


def test_the_live_scorer_and_a_reloaded_model_use_it_as_predict_clip_does(fitted, tmp_path):
    frames = list(jpeg_degrade(torch.stack(clip(21, n_frames=24)[0]), 8))  # above the ceiling: the memory counts
    assert fitted.config.above_ceiling_lowpass > 1  # and the low-pass above the ceiling
    offline = fitted.predict_clip(frames, views=False)
    assert not np.array_equal(offline.cues["appearance"], _without_codec_memory(fitted, [frames])[0])
    assert_live_and_reloaded_score_as_offline(fitted, frames, offline, "appearance", tmp_path)


def assert_live_and_reloaded_score_as_offline(fitted, frames, offline, cue: str, tmp_path) -> None:
    """The live scorer (four frames at a time) and the model saved and loaded give ``cue`` as ``offline`` did."""
    scorer = fitted.causal_scorer()
    live = [r for i in range(0, len(frames), 4) for r in scorer.push(torch.stack(frames[i:i + 4]))] + scorer.finish()
    np.testing.assert_allclose([r.cues[cue] for r in live], offline.cues[cue], atol=1e-4)
    fitted.save(tmp_path / "model")
    reloaded = load_detector(tmp_path / "model", kind="video").predict_clip(frames, views=False)
    np.testing.assert_allclose(reloaded.cues[cue], offline.cues[cue], atol=1e-5)


def test_the_codec_memory_and_lowpass_are_validated_on_load_and_absent_from_models_saved_before_them(fitted, tmp_path):
    folder = tmp_path / "model"
    fitted.save(folder)
    weights = load_file(str(folder / "weights.safetensors"))
    assert weights["codec_appearance_memory"].shape == fitted.codec_index_.bank.shape
    assert_refused_when_damaged_or_missing(folder, weights, "codec_appearance_memory",
                                           [weights["codec_appearance_memory"][:, :5]])  # the wrong width
    meta = json.loads((folder / "config.json").read_text())
    # saved before the settings existed: no codec memory (none needed) and no low-pass above the ceiling
    del meta["config"]["codec_memory"], meta["config"]["above_ceiling_lowpass"]
    (folder / "config.json").write_text(json.dumps(meta))
    before = load_detector(folder, kind="video")
    assert before.config.codec_memory == () and before.codec_index_ is None and before.config.above_ceiling_lowpass == 0
    meta["config"]["above_ceiling_lowpass"] = 4
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="above_ceiling_lowpass must be"):
        load_detector(folder)
    del meta["config"]["above_ceiling_lowpass"]
    meta["config"]["codec_memory"] = ["mpeg2:4"]
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="codec_memory: unknown or out-of-range 'mpeg2:4'"):  # names its field
        load_detector(folder)
    with pytest.raises(ConfigError, match="codec_memory: 'h264:x' needs a number"):
        create_detector("stfeatures", **SETTINGS, codec_memory=("h264:x",))


@pytest.mark.slow
@pytest.mark.parametrize("still_texture_weight", [25.0, 0.0])  # with and without the motion graph's "still" input
def test_the_codec_memory_runs_in_the_exported_graphs(tmp_path, still_texture_weight):
    """With the saved ceiling at 0, so that every frame consults the codec memory, the bundle (a second memory
    input to the appearance graph, its distances passed to the motion graph) matches the checkpoint."""
    size = (64, 96)
    root = make_synthetic_video_dataset(tmp_path / "conveyor", n_train=2, n_test=1, n_frames=24, size=size)
    run = train_video_model(root, CATEGORY, "stfeatures", tmp_path / "results", image_size=size, device="cpu",
                            run_name="codec", appearance_memory=512, appearance_samples=20_000, codec_memory=CODEC,
                            still_texture_weight=still_texture_weight).run_dir
    weights_file = run / "model" / "weights.safetensors"
    weights = load_file(str(weights_file))
    # at 0, not a fraction of the fitted one: two short clips make no two folds, and their ceiling is infinite
    rewrite_weights(weights_file, {**weights, "appearance_typical_ceiling": torch.zeros(1)})
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle")
    meta = json.loads((bundle.folder / "bundle.json").read_text())
    assert "codec_memory" in meta["graphs"]["appearance"]["inputs"] and "coded" in meta["graphs"]["motion"]["inputs"]
    check = bundle.check
    assert check["frames"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < 1e-3  # as PARITY in test_export_video.py


def test_the_clean_memories_threshold_and_ceiling_are_those_of_a_model_without_it(fitted):
    """The copies have their own sample: what a model without the codec memory learns is learned bit for bit."""
    train = [clip(seed)[0] for seed in range(4)]
    plain = create_detector("stfeatures", **{**SETTINGS, "codec_memory": (), "above_ceiling_lowpass": 3}).fit_clips(
        train, [clip(10)[0]])
    assert plain.codec_index_ is None
    assert torch.equal(plain.appearance_index_.bank, fitted.appearance_index_.bank)
    assert torch.equal(plain.motion_memory_.bank, fitted.motion_memory_.bank)
    assert torch.equal(plain.standardisation_, fitted.standardisation_)
    assert torch.equal(plain.appearance_ceiling_, fitted.appearance_ceiling_)
    assert plain.calibration_.threshold == fitted.calibration_.threshold
