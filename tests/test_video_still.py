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
