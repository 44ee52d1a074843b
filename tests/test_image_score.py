"""The part score averages the capped map over ``score_window`` pixels square (models/image/feature_detector.py)."""

from __future__ import annotations

import pytest
import torch

from anomalens.errors import ConfigError
from anomalens.models.image.feature_detector import window_cells
from anomalens.models.image.patchcore import PatchCore, PatchCoreConfig


def _pin_on_mat() -> torch.Tensor:
    """A dark pin (rows 8..120, columns 24..40) on a bright background, 128 x 64 px, in [0, 1]."""
    batch = torch.full((2, 3, 128, 64), 0.8)
    batch[:, :, 8:120, 24:40] = 0.2
    return batch


def _scores(window: int, maps: torch.Tensor) -> list[float]:
    config = PatchCoreConfig(image_size=(128, 64), score_region="part", score_window=window)
    return PatchCore(config).scores_and_maps(maps, _pin_on_mat())[0].tolist()


def test_a_long_faint_line_outscores_a_short_bright_spot_on_the_part():
    maps = torch.ones(2, 128, 64)
    maps[0, 20:100, 28:36] = 2.0  # image 0: a long faint scratch along the pin, 8 px wide once blurred
    maps[1, 60:64, 28:32] = 6.0  # image 1: one bright 4 px block (a speck, the outline catching the light)
    by_pixel, by_window = _scores(1, maps), _scores(20, maps)
    assert by_pixel == [2.0, 6.0]  # the highest pixel: the speck wins
    assert by_window[0] == pytest.approx(1.0 + 2 / 5)  # 20 px = 5 blocks square, 2 of 5 columns on the line
    assert by_window[1] == pytest.approx(1.0 + 5 / 25)  # the speck: one block of 25
    assert by_window[0] > by_window[1]


def test_the_window_score_never_exceeds_the_capped_maps_highest_pixel():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 128, 64, generator=generator) * 3
    maps[:, 4, 4] = 50.0  # the background's peak is capped, inside and outside the window alike
    config = PatchCoreConfig(image_size=(128, 64), score_region="part", score_window=12)
    scores, capped = PatchCore(config).scores_and_maps(maps, _pin_on_mat())
    assert capped[:, 4, 4].max() < 3.0
    assert torch.all(scores <= capped.flatten(1).amax(dim=1))
    # the whole map keeps its highest pixel whatever the window: there, squares favour broad background texture
    whole = PatchCore(PatchCoreConfig(image_size=(128, 64), score_region="image", score_window=12))
    assert whole.scores_and_maps(maps, _pin_on_mat())[0].tolist() == [50.0, 50.0]


def test_window_sizes_round_to_an_odd_number_of_blocks_and_old_models_take_the_highest_pixel():
    assert [window_cells(w) for w in (1, 2, 4, 8, 12, 20, 24)] == [1, 1, 1, 3, 3, 5, 7]
    assert PatchCoreConfig().score_window == 20
    saved_before = PatchCoreConfig.from_dict({**PatchCoreConfig.SAVED_BEFORE, "image_size": [64, 64]})
    assert saved_before.score_window == 1  # models saved before the window scored their highest pixel
    with pytest.raises(ConfigError, match="score_window"):
        PatchCore(PatchCoreConfig(score_window=0))
