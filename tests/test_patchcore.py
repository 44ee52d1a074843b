"""PatchCore, its coreset and tiling, on small synthetic data (the search module: test_search.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _textures import add_spot, woven_textures
from anomalens.errors import ConfigError
from anomalens.models import create_detector, load_detector
from anomalens.models.image.patchcore import PatchCore, PatchCoreConfig
from anomalens.models.components.sampler import greedy_coreset
from anomalens.models.components.tiling import TileGrid, tile_starts
from anomalens.progress import SILENT


# ---- coreset ---------------------------------------------------------------------------------------------
def _clusters(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    return torch.cat([c + 0.1 * torch.randn(50, 2, generator=generator) for c in centres])


def test_coreset_takes_one_point_from_each_far_cluster():
    points = _clusters()
    keep = greedy_coreset(points, n_keep=4, seed=0, projection_dim=None)
    assert sorted((keep // 50).tolist()) == [0, 1, 2, 3]


def test_coreset_covers_better_than_random_and_is_seeded():
    points = torch.rand(2000, 2, generator=torch.Generator().manual_seed(1))
    keep = greedy_coreset(points, ratio=0.05, seed=3, projection_dim=None)
    assert len(keep) == 100 and len(set(keep.tolist())) == 100
    assert torch.equal(keep, greedy_coreset(points, ratio=0.05, seed=3, projection_dim=None))
    random_keep = torch.randperm(2000, generator=torch.Generator().manual_seed(0))[:100]

    def radius(subset):
        return torch.cdist(points, points[subset]).min(dim=1).values.max()

    assert radius(keep) < 0.7 * radius(random_keep)


def test_coreset_in_chunks_respects_the_ratio():
    points = torch.randn(5000, 8, generator=torch.Generator().manual_seed(2))
    keep = greedy_coreset(points, ratio=0.1, seed=0, chunk_size=1024)
    assert len(keep) == 500 and len(torch.unique(keep)) == 500
    assert int(keep.min()) >= 0 and int(keep.max()) < 5000


# ---- tiling --------------------------------------------------------------------------------------------------
def test_tiles_cover_the_image_and_stitch_back():
    assert tile_starts(100, 40, 10) == [0, 30, 60]
    grid = TileGrid.for_image(100, 70, tile=40, overlap=10)
    image = torch.arange(100 * 70, dtype=torch.float32).reshape(1, 1, 100, 70)
    tiles = grid.cut(image)
    assert tiles.shape == (grid.count, 1, 40, 40)
    assert torch.equal(grid.stitch(tiles[:, 0]), image[:, 0])  # averaging identical overlaps is exact
    with pytest.raises(ConfigError):
        TileGrid.for_image(100, 70, tile=80, overlap=10)


# ---- PatchCore on synthetic textures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted() -> PatchCore:
    detector = PatchCore(PatchCoreConfig(image_size=(64, 64), coreset_ratio=0.25))
    return detector.fit(woven_textures(10, seed=0), woven_textures(4, seed=1))


def test_bright_spot_scores_higher_and_the_map_peaks_on_it(fitted):
    normal = woven_textures(4, seed=2)
    defective = add_spot(normal, top=36, left=12, side=6)
    prediction = fitted.predict(torch.cat([normal, defective]))
    assert prediction.maps.shape == (8, 64, 64)
    assert prediction.scores[4:].min() > prediction.scores[:4].max()
    for anomaly_map in prediction.maps[4:]:
        row, col = np.unravel_index(anomaly_map.argmax(), anomaly_map.shape)
        assert abs(row - 39) <= 10 and abs(col - 15) <= 10  # within about one 8 px patch cell
    assert np.allclose(prediction.scores, prediction.maps.reshape(8, -1).max(axis=1))
    assert prediction.labels[4:].all()


def test_reweighting_gives_weights_between_zero_and_one(fitted):
    features = fitted.features(woven_textures(2, seed=6).float() / 255)
    queries = features.permute(0, 2, 3, 1).reshape(2, -1, features.shape[1])
    distances, indices = fitted.index_.search(queries.reshape(-1, queries.shape[2]))
    weights = fitted._reweighting(queries, distances[:, 0].reshape(2, -1), indices[:, 0].reshape(2, -1))
    assert ((weights > 0) & (weights <= 1)).all()


def test_non_square_images_work():
    detector = create_detector("patchcore", image_size=(64, 96), coreset_ratio=0.5, num_neighbours=1)
    detector.fit(woven_textures(6, size=(64, 96)), woven_textures(2, size=(64, 96), seed=1))
    prediction = detector.predict(add_spot(woven_textures(2, size=(64, 96), seed=2), top=20, left=70, side=6))
    assert prediction.maps.shape == (2, 64, 96)
    for anomaly_map in prediction.maps:
        row, col = np.unravel_index(anomaly_map.argmax(), anomaly_map.shape)
        assert abs(row - 23) <= 10 and abs(col - 73) <= 10


def test_tiling_stitches_full_size_maps_and_catches_a_small_defect():
    # 192 px images scored on four overlapping 128 px tiles at native resolution; the defect is 5 px wide
    detector = create_detector("patchcore", image_size=(192, 192), tile=128, tile_overlap=64, coreset_ratio=0.25)
    assert detector.grid_.count == 4
    detector.fit(woven_textures(5, size=(192, 192)), woven_textures(2, size=(192, 192), seed=1))
    normal = woven_textures(2, size=(192, 192), seed=3)
    defective = add_spot(normal, top=150, left=40, side=5)
    prediction = detector.predict(torch.cat([normal, defective]))
    assert prediction.maps.shape == (4, 192, 192)
    assert prediction.scores[2:].min() > prediction.scores[:2].max()
    for anomaly_map in prediction.maps[2:]:
        row, col = np.unravel_index(anomaly_map.argmax(), anomaly_map.shape)
        assert abs(row - 152) <= 6 and abs(col - 42) <= 6


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match=r"coreset_ratio must be in \(0, 1\]"):
        create_detector("patchcore", coreset_ratio=0.0)
    with pytest.raises(ConfigError, match="tile"):
        create_detector("patchcore", image_size=(64, 64), tile=128)
    with pytest.raises(ConfigError):
        create_detector("patchcore", backbone="resnet18")


def test_bank_built_in_passes_keeps_the_ratio_and_reports_progress(monkeypatch):
    # A training set larger than the buffer is thinned pass by pass, so memory stays bounded
    import anomalens.models.image.patchcore as patchcore_module
    from anomalens.progress import Reporter

    monkeypatch.setattr(patchcore_module, "MAX_BUFFERED_PATCHES", 100)
    stages = []
    reporter = Reporter(callback=lambda stage, done, total, info: stages.append(stage), show_tqdm=False)
    detector = PatchCore(PatchCoreConfig(image_size=(64, 64), coreset_ratio=0.2, batch_size=2))
    detector.fit(woven_textures(6), woven_textures(2, seed=1), reporter=reporter)
    # three passes keep 26 each; 78 is one more than ceil(0.2 * 384), so a last coreset trims the kept rows to 77
    assert detector.history_[-1] == {"training_patches": 6 * 64, "memory_bank": 77}
    assert {"extract features", "coreset"} <= set(stages)


def test_same_seed_gives_the_same_memory_bank(fitted):
    again = PatchCore(PatchCoreConfig(image_size=(64, 64), coreset_ratio=0.25))
    again.fit(woven_textures(10, seed=0), woven_textures(4, seed=1))
    assert torch.equal(again.memory_bank_, fitted.memory_bank_)


def test_a_bank_that_does_not_fit_the_backbone_is_a_checkpoint_error(fitted, tmp_path):
    from _saved_tensors import rewrite_weights

    from anomalens.errors import CheckpointError

    folder = fitted.save(tmp_path / "model")
    rewrite_weights(folder / "weights.safetensors", {"memory_bank": torch.zeros(5, 7)})  # reaches the shape check
    with pytest.raises(CheckpointError, match="memory bank of shape"):
        load_detector(folder)


def test_streamed_fit_reads_batches_lazily_and_builds_the_same_model(monkeypatch):
    # workflows/train.py decodes training images batch by batch during the fit: the bank, threshold and scores
    # must equal those of the fit on one tensor, and no more than one batch may be waiting beyond the features
    # already turned into rows (memory flat in the number of images); small passes force several coresets
    import anomalens.models.image.patchcore as patchcore_module

    monkeypatch.setattr(patchcore_module, "MAX_BUFFERED_PATCHES", 100)
    train, validation = woven_textures(10, seed=0), woven_textures(4, seed=1)
    in_memory = PatchCore(PatchCoreConfig(image_size=(64, 64), coreset_ratio=0.25, batch_size=2)).fit(train, validation)
    handed_out = []

    def batches():
        for start in range(0, len(train), 2):
            handed_out.append(start)
            yield train[start : start + 2]

    streamed = PatchCore(PatchCoreConfig(image_size=(64, 64), coreset_ratio=0.25, batch_size=2))
    rows_seen = []
    original = streamed.bank_from_rows

    def watch(row_batches, reporter, first_pass=0):
        def counted():
            for rows in row_batches:
                rows_seen.append(len(rows))
                assert len(handed_out) == len(rows_seen)  # each batch decoded only when its rows are wanted
                yield rows
        return original(counted(), reporter, first_pass)

    monkeypatch.setattr(streamed, "bank_from_rows", watch)
    streamed.fit_batches(batches, validation, reporter=SILENT)
    assert sum(rows_seen) == 10 * 64 and len(handed_out) == 5
    assert torch.equal(streamed.memory_bank_, in_memory.memory_bank_)
    assert streamed.calibration_.threshold == in_memory.calibration_.threshold
    probe = woven_textures(2, seed=3)
    np.testing.assert_array_equal(streamed.predict(probe).scores, in_memory.predict(probe).scores)


def test_part_score_ignores_the_background_but_not_a_missing_part():
    batch = torch.full((2, 3, 64, 64), 0.8)
    batch[0, :, 10:50, 28:36] = 0.2  # image 0: a dark pin on a bright background; image 1: no part at all
    maps = torch.zeros(2, 64, 64)
    maps[:, 2, 2] = 9.0  # the highest score on the background (dust, the image border)
    maps[:, 30, 31] = 5.0  # a lower one on the pin
    whole, same = PatchCore(PatchCoreConfig(image_size=(64, 64), score_region="image")).scores_and_maps(maps, batch)
    # the highest pixel (score_window 1): the single-pixel peaks here stand for whole defects
    part = PatchCoreConfig(image_size=(64, 64), score_region="part", score_window=1)
    on_part, focused = PatchCore(part).scores_and_maps(maps, batch)
    assert whole.tolist() == [9.0, 9.0] and torch.equal(same, maps)
    assert on_part.tolist() == [5.0, 9.0]  # no part found: the whole map counts
    assert focused[0, 2, 2] == 0 and focused[0, 30, 31] == 5.0 and focused[0, 8, 31] == maps[0, 8, 31]  # margin kept
    assert torch.equal(focused[1], maps[1])


def test_part_score_keeps_the_typical_level_of_the_map():
    batch = torch.full((1, 3, 64, 64), 0.8)
    batch[0, :, 10:50, 28:36] = 0.2
    maps = 2.0 + torch.rand(1, 64, 64, generator=torch.Generator().manual_seed(0))  # everywhere 2..3, like drift
    maps[0, 2, 2] = 9.0
    scores, capped = PatchCore(PatchCoreConfig(image_size=(64, 64), score_region="part", score_window=1)).scores_and_maps(maps, batch)
    assert capped[0, 2, 2] < 3.0 and scores[0] < 3.0  # the background's peak no longer counts
    assert abs(capped.median() - maps.median()) < 0.05  # but the map's median (what drift compares) stays
    with pytest.raises(ConfigError, match="score_region"):
        PatchCore(PatchCoreConfig(score_region="foreground"))
