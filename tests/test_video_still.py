"""Still texture as a motion channel of ``stfeatures`` (``still_texture_weight``): textured and not moving (a
stopped belt) counts, flat or moving does not; the live scorer and a saved model keep it (the exported bundle:
tests/test_export_video.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalens.errors import ConfigError
from anomalens.models.base import create_detector, load_detector
from anomalens.data.flow import still_texture
from anomalens.models.video.motion import orientation_histograms
from test_video_features import SETTINGS, clip


def test_still_texture_counts_texture_that_does_not_move():
    grey = np.full((32, 64), 100, np.uint8)
    grey[:, 32:] = np.where((np.arange(32) // 2) % 2 == 0, 40, 160)[None, :]  # stripes on the right half
    still = np.zeros((2, 32, 64), np.float32)
    moving = np.zeros((2, 32, 64), np.float32)
    moving[0] = 5.0  # 5 px per frame to the right
    at_rest = still_texture(grey, still, 10.0)
    assert at_rest[4:-4, 4:24].max() < 1e-3  # flat: no texture, whatever it does
    assert at_rest[4:-4, 36:-4].mean() > 5.0  # striped and still: most of the weight
    assert still_texture(grey, moving, 10.0)[4:-4, 36:-4].max() < 1e-3  # striped and moving: exp(-10)
    descriptors = orientation_histograms(torch.from_numpy(moving[None]), 8, 8, torch.from_numpy(at_rest[None]))
    assert descriptors.shape == (1, 9, 4, 8)
    # the extra channel is the still map's window mean, pooled as the bins are: a flow pointing right (bin 4 of 8)
    # whose speed is the still map gives the same numbers in that bin
    as_flow = torch.from_numpy(np.stack([at_rest, np.zeros_like(at_rest)])[None])
    assert torch.allclose(descriptors[:, 8], orientation_histograms(as_flow, 8, 8)[:, 4])


@pytest.fixture(scope="module")
def still_model():
    train = [clip(seed, n_frames=24)[0] for seed in range(4)]
    return create_detector("stfeatures", **SETTINGS, still_texture_weight=10.0).fit_clips(train, [clip(10, n_frames=24)[0]])


def test_a_stopped_belt_stands_out_more_with_still_texture_and_live_scores_match(still_model, tmp_path):
    frames, labels = clip(30, n_frames=30, anomaly="stop")
    offline = still_model.predict_clip(frames, views=False)
    scorer = still_model.causal_scorer()
    live = [r for i in range(0, 30, 4) for r in scorer.push(torch.stack(frames[i:i + 4]))] + scorer.finish()
    np.testing.assert_allclose([r.score for r in live], offline.scores, atol=1e-4)
    assert still_model.motion_memory_.bank.shape[2] == 9  # 8 orientation bins and still texture

    still_model.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model", kind="video")
    assert loaded.config.still_texture_weight == 10.0
    np.testing.assert_allclose(loaded.predict_clip(frames, views=False).scores, offline.scores, atol=1e-5)
    with pytest.raises(ConfigError, match="still_texture_weight"):
        create_detector("stfeatures", **SETTINGS, still_texture_weight=-1.0)


def test_still_texture_counts_only_where_training_frames_move():
    from anomalens.models.video.stfeatures import moving_share_gate

    histograms = torch.zeros(10, 8, 2, 3)  # 10 training frames, a 2x3 motion grid
    histograms[:, 4, 0, 0] = 2.0  # moves 2 px per frame in every frame: a belt
    histograms[:7, 2, 0, 1] = 1.0  # moves in 7 of 10 frames: halfway between "unreliable" (0.5) and "reliable" (0.9)
    histograms[:3, 0, 0, 2] = 3.0  # moves in 3 of 10: someone passing now and then
    histograms[:, 1, 1, 0] = 0.3  # always a little motion, below the moving speed: codec noise
    gate = moving_share_gate(histograms)
    expected = torch.tensor([[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(gate, expected)


@pytest.fixture(scope="module")
def gated_model():
    train = [clip(seed, n_frames=24)[0] for seed in range(4)]
    return create_detector("stfeatures", **SETTINGS, still_texture_weight=10.0, still_texture_where_moving=True).fit_clips(
        train, [clip(10, n_frames=24)[0]])


def test_gated_still_texture_is_learned_saved_and_scored_alike_live(gated_model, tmp_path):
    import json

    from anomalens.errors import CheckpointError

    gate = gated_model.still_gate_
    assert gate.shape == gated_model.motion_grid and 0.0 <= float(gate.min()) and float(gate.max()) <= 1.0
    assert float(gate.max()) == 1.0 and float(gate.min()) == 0.0  # the belt moves in every frame, the housing never
    frames, _ = clip(30, n_frames=30, anomaly="stop")
    offline = gated_model.predict_clip(frames, views=False)
    scorer = gated_model.causal_scorer()
    live = [r for i in range(0, 30, 4) for r in scorer.push(torch.stack(frames[i:i + 4]))] + scorer.finish()
    np.testing.assert_allclose([r.score for r in live], offline.scores, atol=1e-4)
    # a still, striped frame: its still texture counts fully on the belt and not at all on the housing above it
    height, width = gated_model.flow_size
    stripes = np.where((np.arange(width) // 2) % 2 == 0, 40, 160).astype(np.uint8)
    descriptors = gated_model.motion_descriptors([np.zeros((2, height, width), np.float32)],
                                                 [np.broadcast_to(stripes, (height, width)).copy()])
    still = descriptors[0, 8]
    assert float(still[gate == 0].abs().max()) == 0.0 and float(still[gate == 1].min()) > 2.0  # edge windows are part padding

    gated_model.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model", kind="video")
    assert loaded.config.still_texture_where_moving is True
    torch.testing.assert_close(loaded.still_gate_, gate)
    np.testing.assert_allclose(loaded.predict_clip(frames, views=False).scores, offline.scores, atol=1e-5)

    # a model saved before the setting existed (no field in its config) loads without a gate, as it scored then
    config_path = tmp_path / "model" / "config.json"
    meta = json.loads(config_path.read_text())
    del meta["config"]["still_texture_where_moving"]
    config_path.write_text(json.dumps(meta))
    old = load_detector(tmp_path / "model", kind="video")
    assert old.config.still_texture_where_moving is False and old.still_gate_ is None
    # and a gated model whose saved gate is missing is refused, not scored without it
    meta["config"]["still_texture_where_moving"] = True
    config_path.write_text(json.dumps(meta))
    from _saved_tensors import rewrite_weights
    from safetensors.torch import load_file

    weights = tmp_path / "model" / "weights.safetensors"
    tensors = load_file(weights)
    tensors["still_texture_gate"] = tensors["still_texture_gate"] * 2.0  # out of [0, 1]
    rewrite_weights(weights, tensors)
    with pytest.raises(CheckpointError, match="still_texture_gate"):
        load_detector(tmp_path / "model", kind="video")


def test_a_gate_that_is_zero_everywhere_skips_the_still_texture_map_and_scores_the_same(gated_model, monkeypatch):
    """On footage where no cell moves in nearly every training frame (UCSD Ped2) the gate zeroes the channel in
    every cell: scoring skips computing the map (0.5-1 ms per frame) and gives the scores of computing it."""
    import copy

    from anomalens.models.video import stfeatures

    zeroed = copy.deepcopy(gated_model)
    zeroed.still_gate_ = torch.zeros_like(gated_model.still_gate_)
    assert zeroed.still_texture_gated_off and not gated_model.still_texture_gated_off
    frames, _ = clip(31, n_frames=20, anomaly="stop")
    with monkeypatch.context() as patch:  # the reference: the map computed, then zeroed by the gate
        patch.setattr(type(zeroed), "still_texture_gated_off", property(lambda self: False))
        computed = zeroed.predict_clip(frames, views=False).scores

    def never(*args, **kwargs):
        raise AssertionError("still_texture computed although the gate is zero everywhere")

    monkeypatch.setattr(stfeatures, "still_texture", never)
    np.testing.assert_allclose(zeroed.predict_clip(frames, views=False).scores, computed, atol=1e-6)
    with pytest.raises(AssertionError, match="gate is zero"):
        gated_model.predict_clip(frames, views=False)  # a gate with a moving cell still computes it
