"""Each video cue's cells measured against their own normal range (``appearance_by_place``, ``motion_by_place``;
opt-in, see docs/video_experiments.md "Each cell against its own normal range").

The motion memory is per cell, but a cell's distances to it are not on one scale: a busy path's normal walkers
vary far more than a quiet lawn's. Standardised per cell, a frame's highest motion cell is the one most unusual
*for its place*, not the busiest place again.
"""

from __future__ import annotations

import json

import pytest
import torch

from anomalens.errors import CheckpointError, ConfigError
from anomalens.models.base import create_detector, load_detector
from anomalens.models.video.stfeatures import by_place, place_range

from test_video_features import SETTINGS, clip


def test_place_range_centres_each_cell_and_floors_its_spread_at_the_mean_cell_s():
    # three cells over four normal frames: one that never moves, one that varies by 1, one by 5
    maps = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 10.0], [0.0, 0.0, 0.0], [0.0, 2.0, 10.0]])[:, None, :]
    assert place_range(maps, "off", 1.5) is None
    centre = place_range(maps, "centre", 1.5)
    assert torch.allclose(centre, torch.tensor([[[0.0, 1.0, 5.0]], [[1.0, 1.0, 1.0]]]))
    placed = place_range(maps, "standardise", 1.5)
    # spreads 0, 1, 5: mean 2, floor 3; the still cell and the quiet one are measured in 3s, the busy one in 5s
    assert torch.allclose(placed, torch.tensor([[[0.0, 1.0, 5.0]], [[3.0, 3.0, 5.0]]]), atol=1e-5)
    frame = torch.tensor([[[3.0, 4.0, 10.0]]])
    assert torch.allclose(by_place(frame, placed), torch.ones(1, 1, 3), atol=1e-5)
    assert torch.allclose(by_place(frame.flatten(1), placed), torch.ones(1, 3), atol=1e-5)  # flattened cells too
    assert by_place(frame, None) is frame


def test_a_quiet_place_s_unusual_motion_outscores_a_busy_place_s_usual_motion():
    """Known maps: raw, the busy cell's ordinary 9 outscores the quiet cell's 4, four times its normal spread;
    per place the order turns."""
    detector = create_detector("stfeatures", **SETTINGS)
    hm, wm = detector.motion_grid
    normal = torch.zeros(64, hm, wm)
    normal[:, 0, 0] = torch.arange(64) % 2 * 10.0  # busy: 0 or 10, mean 5, spread 5
    normal[:, 1, 1] = torch.arange(64) % 2 * 2.0  # quiet: 0 or 2, mean 1, spread 1
    busy_usual, quiet_unusual = torch.zeros(2, hm, wm), torch.zeros(2, hm, wm)
    busy_usual[:, 0, 0] = 9.0
    quiet_unusual[:, 1, 1] = 4.0
    appearance = torch.zeros(2, *detector.grid)
    raw = [detector._frame_scores(appearance, m)[1][0] for m in (busy_usual, quiet_unusual)]
    assert raw[0] > raw[1]
    detector.motion_place_ = place_range(normal, "standardise", 0.1)
    placed = [detector._frame_scores(appearance, m)[1][0] for m in (busy_usual, quiet_unusual)]
    assert placed[1] > placed[0]
    assert float(placed[0]) == pytest.approx((9 - 5) / 5, abs=1e-4)
    assert float(placed[1]) == pytest.approx((4 - 1) / 1, abs=1e-4)


@pytest.fixture(scope="module")
def fitted_both():
    train = [clip(seed)[0] for seed in range(4)]
    return create_detector("stfeatures", **SETTINGS, appearance_by_place="centre",
                           motion_by_place="standardise").fit_clips(train, [clip(10)[0]])


def test_the_ranges_are_learned_saved_and_read_back(fitted_both, tmp_path):
    d = fitted_both
    assert d.appearance_place_.shape == (2, *d.grid) and bool((d.appearance_place_[1] == 1).all())
    assert d.motion_place_.shape == (2, *d.motion_grid) and float(d.motion_place_[1].min()) > 0
    frames = clip(20, n_frames=12, anomaly="foreign_object")[0]
    expected = d.predict_clip(frames, views=False)
    d.save(tmp_path / "model")
    meta = json.loads(next((tmp_path / "model").rglob("config.json")).read_text())
    assert meta["format_version"] >= 2  # the settings came with format 2: anomalens 0.1.0 refuses it as newer
    assert meta["config"]["motion_by_place"] == "standardise" and meta["config"]["appearance_by_place"] == "centre"
    loaded = load_detector(tmp_path / "model")
    assert torch.equal(loaded.motion_place_, d.motion_place_) and torch.equal(loaded.appearance_place_, d.appearance_place_)
    again = loaded.predict_clip(frames, views=False)
    assert (again.scores == expected.scores).all() and (again.maps == expected.maps).all()


def test_a_damaged_range_or_an_unknown_rule_is_refused(fitted_both, tmp_path):
    from safetensors.torch import load_file

    from _saved_tensors import rewrite_weights

    with pytest.raises(ConfigError, match="motion_by_place median is not one of off, centre, standardise"):
        create_detector("stfeatures", **SETTINGS, motion_by_place="median")
    with pytest.raises(ConfigError, match="place_spread_floor"):
        create_detector("stfeatures", **SETTINGS, place_spread_floor=0)
    fitted_both.save(tmp_path / "model")
    weights = next((tmp_path / "model").rglob("weights.safetensors"))
    tensors = load_file(weights)
    for name, damaged in (("motion_place", tensors["motion_place"][:, :-1]),  # a row of cells short
                          ("appearance_place", tensors["appearance_place"] * torch.tensor([1.0, 0.0])[:, None, None])):
        rewrite_weights(weights, {**tensors, name: damaged})
        with pytest.raises(CheckpointError, match=f"{name} of shape"):
            load_detector(tmp_path / "model")
