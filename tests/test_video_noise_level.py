"""Noise-level matching (models/components/noise_level.py, ``match_noise_level`` of ``stfeatures``): frames noisier
than the training footage's limit are low-passed down to it, frames at or below it pass bit for bit, a model
trained on smooth footage no longer flags the same scene with a camera's grain, and models saved before it score
as they were fitted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anomalens.models.base import create_detector, load_detector
from anomalens.progress import Reporter
from anomalens.models.components.kernels import gaussian_blur
from anomalens.models.components.noise_level import LADDER_SIGMAS, match_noise_level, noise_level, noise_limit
from _saved_tensors import assert_refused_when_damaged_or_missing
from test_video_features import SETTINGS, clip


def _textured(seed: int, n: int = 4, size: int = 48) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_the_noise_level_reads_white_noise_and_ignores_planes_and_ramps():
    generator = torch.Generator().manual_seed(0)
    grey = 0.5 + torch.randn(1, 1, 256, 256, generator=generator) * (4 / 255)  # noise of 4 grey levels
    assert noise_level(grey.expand(1, 3, 256, 256)).item() == pytest.approx(4.0, rel=0.03)
    y, x = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    shading = (0.2 + 0.01 * x + 0.005 * y).expand(2, 3, 32, 32)  # smooth shading: no noise at all
    assert noise_level(shading).abs().max().item() < 1e-4
    # the limit: the highest level plus its distance from the median
    assert noise_limit(torch.tensor([1.0, 2.0, 2.0, 3.0, 4.0])).tolist() == pytest.approx([6.0])


@pytest.mark.parametrize("sigma", [0.5, 0.75, 1.0, 1.5, 2.0])
def test_the_blur_by_shifts_is_the_gaussian_blur(sigma):
    from anomalens.models.components.kernels import gaussian_blur_by_shifts

    for size in ((48, 40), (5, 6)):  # reflecting borders, and a frame smaller than the kernel (replicated)
        images = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(7))
        assert torch.allclose(gaussian_blur_by_shifts(images, sigma), gaussian_blur(images, sigma), atol=1e-6)


def test_frames_above_the_limit_come_down_to_it_and_frames_at_or_below_pass_bit_for_bit():
    grainy = _textured(0)
    limit = noise_level(gaussian_blur(grainy, 0.9)).max().reshape(1)
    smooth = gaussian_blur(_textured(1), 2.5)  # well below the limit
    assert noise_level(smooth).max() < limit < noise_level(grainy).min()
    batch = torch.cat([grainy[:2], smooth[:2]])
    matched, which = match_noise_level(batch, limit)
    assert which.tolist() == [True, True, False, False]
    levels = noise_level(matched[:2])
    assert ((levels <= limit * 1.0001) & (levels >= limit * 0.9)).all()  # at, or a little below, the limit
    assert torch.equal(matched[2:], smooth[:2])
    # blurring keeps each frame's mean grey
    np.testing.assert_allclose(matched[:2].mean(dim=(1, 2, 3)).numpy(), grainy[:2].mean(dim=(1, 2, 3)).numpy(), atol=2e-3)
    # nothing above the limit (or no limit: a model saved before it) returns the very frames
    assert match_noise_level(smooth, limit)[0] is smooth and match_noise_level(grainy, None)[0] is grainy
    assert match_noise_level(grainy, torch.tensor([float("inf")]))[0] is grainy


def test_a_graph_without_the_shortcut_computes_the_same_frames():
    frames = torch.cat([_textured(2, 3), gaussian_blur(_textured(3, 2), 3.0)])
    limit = (noise_level(frames[:3]).min() * 0.9).reshape(1)  # the three unblurred frames above it, the rest below
    graph, graph_which = match_noise_level(frames, limit, shortcut=False)
    library, library_which = match_noise_level(frames, limit)
    assert torch.allclose(graph, library, atol=1e-6) and torch.equal(graph_which, library_which)
    assert graph_which.tolist() == [True, True, True, False, False]
    below = gaussian_blur(_textured(4, 2), 3.0)
    assert torch.equal(match_noise_level(below, limit, shortcut=False)[0], below)


def test_a_limit_below_the_widest_blur_gets_the_widest_blur():
    frames = _textured(5, 2)
    widest = gaussian_blur(frames, LADDER_SIGMAS[-1])
    assert torch.allclose(match_noise_level(frames, torch.zeros(1))[0], widest, atol=1e-6)
    assert torch.allclose(match_noise_level(frames, torch.zeros(1), shortcut=False)[0], widest, atol=1e-6)


def _smooth(frames: list[torch.Tensor]) -> list[torch.Tensor]:
    """A soft camera (or a codec that flattens grain): every frame blurred, sigma 1.5 px."""
    return [gaussian_blur(f[None].float() / 255, 1.5)[0].mul(255).round().to(torch.uint8) for f in frames]


@pytest.fixture(scope="module")
def smooth_model():
    """Trained on smooth footage: the synthetic conveyor's grain is new to it."""
    train = [_smooth(clip(seed)[0]) for seed in range(4)]
    return create_detector("stfeatures", **SETTINGS).fit_clips(train, [])


def test_the_limit_comes_from_the_training_frames_noise_levels(smooth_model):
    levels = torch.cat([noise_level(torch.stack(_smooth(clip(seed)[0])).float() / 255) for seed in range(4)])
    assert smooth_model.noise_limit_.shape == (1,)
    assert smooth_model.noise_limit_.item() == pytest.approx(noise_limit(levels).item(), rel=1e-5)


def test_a_grainier_camera_is_matched_down_and_footage_like_the_training_data_scores_exactly_as_without(smooth_model):
    detector = smooth_model
    smooth_normal = _smooth(clip(0)[0])  # a training clip: every frame within the limit
    grainy_normal = clip(20)[0]  # the same scene through a camera with grain
    with_matching = [detector.predict_clip(frames, views=False).cues["appearance"] for frames in (smooth_normal, grainy_normal)]
    detector.config.match_noise_level = False
    try:
        without = [detector.predict_clip(frames, views=False).cues["appearance"] for frames in (smooth_normal, grainy_normal)]
    finally:
        detector.config.match_noise_level = True
    assert np.array_equal(with_matching[0], without[0])
    # unmatched, the grainy camera's frames stand far above the smooth training clip's; matched, they come down
    assert np.median(without[1]) - np.median(without[0]) > 2.0
    assert np.median(without[1]) - np.median(with_matching[1]) > 0.5  # (their sharper edges stay: not grain)


def test_a_failed_fit_leaves_nothing_recording_and_held_out_clips_stay_out_of_the_limit():
    detector = create_detector("stfeatures", **SETTINGS)
    wrong_size = [torch.zeros(3, 8, 8, dtype=torch.uint8)] * 4
    with pytest.raises(Exception, match="expected the model's"):
        detector.fit_clips([clip(0)[0], wrong_size], [])
    assert detector._noise_seen is None and detector.noise_limit_ is None
    # held-out clips, however noisy, do not move the limit: it is the training frames' own
    train = [_smooth(clip(seed)[0]) for seed in range(4)]
    held_out = [clip(30)[0]]  # grainy
    fitted = create_detector("stfeatures", **SETTINGS).fit_clips(train, held_out)
    levels = torch.cat([noise_level(torch.stack(frames).float() / 255) for frames in train])
    assert fitted.noise_limit_.item() == pytest.approx(noise_limit(levels).item(), rel=1e-5)


def test_scoring_says_how_many_frames_were_low_passed(smooth_model):
    lines: list[str] = []
    reporter = Reporter(callback=lambda message, *_: lines.append(message), show_tqdm=False)
    smooth_model.predict_clip(clip(22, n_frames=12)[0], reporter, views=False)  # grainy: all 12 matched
    assert [line for line in lines if "low-passed" in line] == [
        "12 of 12 frames had finer noise or grain than the training frames and were low-passed to their level before "
        "scoring (match_noise_level)"]
    lines.clear()
    smooth_model.predict_clip(_smooth(clip(0, n_frames=12)[0]), reporter, views=False)  # like the training data
    assert not [line for line in lines if "low-passed" in line]


def test_the_live_scorer_matches_as_predict_clip_does(smooth_model):
    frames = clip(21, n_frames=24)[0]  # grainy: every frame is matched
    offline = smooth_model.predict_clip(frames, views=False)
    scorer = smooth_model.causal_scorer()
    live = [r for i in range(0, 24, 4) for r in scorer.push(torch.stack(frames[i:i + 4]))] + scorer.finish()
    np.testing.assert_allclose([r.cues["appearance"] for r in live], offline.cues["appearance"], atol=1e-4)


def test_the_limit_is_saved_validated_and_absent_from_models_saved_before_it(smooth_model, tmp_path):
    folder = tmp_path / "model"
    smooth_model.save(folder)
    loaded = load_detector(folder, kind="video")
    assert torch.equal(loaded.noise_limit_, smooth_model.noise_limit_)
    weights = load_file(str(folder / "weights.safetensors"))
    assert_refused_when_damaged_or_missing(folder, weights, "noise_limit",
                                           [torch.tensor([float("nan")]), torch.ones(2), torch.tensor([-1.0])])

    # a model of format 2 (anomalens 0.2.0): neither the field nor the tensor (left out above); nothing is matched
    meta = json.loads((folder / "config.json").read_text())
    del meta["config"]["match_noise_level"]
    meta["format_version"] = 2
    (folder / "config.json").write_text(json.dumps(meta))
    before = load_detector(folder, kind="video")
    assert before.config.match_noise_level is False and before.noise_limit_ is None
    grainy = torch.rand(2, 3, 16, 16)
    assert torch.equal(before.backbone_input(grainy), grainy)
