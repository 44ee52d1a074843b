"""The typical-appearance ceiling of ``stfeatures``: a whole-frame shift is taken off the appearance score, footage
within the normal range of typical distances is scored exactly as without it, and models saved before it existed
score as they were fitted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from anomalens.models.base import create_detector, load_detector
from anomalens.models.video.degrade import jpeg_degrade
from _saved_tensors import assert_refused_when_damaged_or_missing
from test_video_features import SETTINGS, clip


def _appearance_scores(detector, maps: torch.Tensor) -> torch.Tensor:
    return detector._frame_scores(maps, torch.zeros(len(maps), 2, 2))[0]


def test_a_whole_frame_shift_above_the_ceiling_is_discounted_and_a_frame_within_it_is_not():
    detector = create_detector("stfeatures", **SETTINGS)
    detector.appearance_ceiling_ = torch.tensor([1.0])
    cells = torch.full((1, 5, 5), 0.8)
    cells[0, 2, 2] = 3.0  # one defect cell; typical (median) cell 0.8, within the normal range (<= 1.0)
    shifted = cells + 5.0  # another codec: every cell moves; typical 5.8, 4.8 above the ceiling
    at_ceiling = cells + 0.2  # typical exactly at the top of the normal range
    scores = _appearance_scores(detector, torch.cat([cells, shifted, at_ceiling]))
    assert scores.tolist() == pytest.approx([3.0, 3.2, 3.2])  # the shifted frame scores as if its typical sat at 1.0
    assert _appearance_scores(detector, shifted + 7.5).item() == pytest.approx(3.2)  # whatever the shift's size
    detector.appearance_ceiling_ = None  # as a model saved before the ceiling: no discount at all
    assert _appearance_scores(detector, torch.cat([cells, shifted])).tolist() == pytest.approx([3.0, 8.0])
    detector.appearance_ceiling_ = torch.tensor([float("inf")])  # too little video for folds: nothing discounted
    assert _appearance_scores(detector, shifted).item() == pytest.approx(8.0)


@pytest.fixture(scope="module")
def fitted():
    train = [clip(seed)[0] for seed in range(4)]
    return create_detector("stfeatures", **SETTINGS).fit_clips(train, [clip(10)[0]])


def test_normal_footage_scores_exactly_as_without_the_ceiling_and_compressed_footage_lower(fitted):
    assert fitted.appearance_ceiling_.shape == (1,) and torch.isfinite(fitted.appearance_ceiling_).all()
    ceiling = fitted.appearance_ceiling_
    normal = clip(20)[0]
    compressed = list(jpeg_degrade(torch.stack(normal), 5))  # blocking everywhere: a whole-frame shift
    with_ceiling = [fitted.predict_clip(frames, views=False).cues["appearance"] for frames in (normal, compressed)]
    fitted.appearance_ceiling_ = None
    try:
        without = [fitted.predict_clip(frames, views=False).cues["appearance"] for frames in (normal, compressed)]
    finally:
        fitted.appearance_ceiling_ = ceiling
    assert np.array_equal(with_ceiling[0], without[0])
    assert np.median(without[1]) - np.median(with_ceiling[1]) > 1.0  # standard units taken off


def test_the_live_scorer_discounts_as_predict_clip_does(fitted):
    ceiling = fitted.appearance_ceiling_
    fitted.appearance_ceiling_ = ceiling * 0.5  # low enough that every frame is discounted
    try:
        frames = clip(21, n_frames=24)[0]
        offline = fitted.predict_clip(frames, views=False)
        scorer = fitted.causal_scorer()
        live = [r for i in range(0, 24, 4) for r in scorer.push(torch.stack(frames[i:i + 4]))] + scorer.finish()
    finally:
        fitted.appearance_ceiling_ = ceiling
    np.testing.assert_allclose([r.cues["appearance"] for r in live], offline.cues["appearance"], atol=1e-4)


def test_the_ceiling_is_saved_validated_and_absent_from_models_saved_before_it(fitted, tmp_path):
    fitted.save(tmp_path / "model")
    folder = tmp_path / "model"
    loaded = load_detector(folder, kind="video")
    assert torch.equal(loaded.appearance_ceiling_, fitted.appearance_ceiling_)
    weights = load_file(str(folder / "weights.safetensors"))

    assert_refused_when_damaged_or_missing(folder, weights, "appearance_typical_ceiling",
                                           [torch.tensor([float("nan")]), torch.ones(2)])

    # a model saved before the setting existed: neither the field nor the tensor; it scores with no discount
    meta = json.loads((folder / "config.json").read_text())
    del meta["config"]["typical_appearance_ceiling"]
    (folder / "config.json").write_text(json.dumps(meta))
    before = load_detector(folder, kind="video")
    assert before.config.typical_appearance_ceiling is False and before.appearance_ceiling_ is None
    shifted = torch.full((1, 4, 4), 9.0)
    assert _appearance_scores(before, shifted).item() == pytest.approx(9.0)
