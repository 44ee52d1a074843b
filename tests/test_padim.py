"""PaDiM on small synthetic textures: Gaussian statistics, Mahalanobis maps, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _textures import add_spot, woven_textures
from anomalens.errors import ConfigError
from anomalens.models import create_detector
from anomalens.models.image.padim import GaussianStatistics, Padim, PadimConfig, ledoit_wolf_covariance
from anomalens.progress import SILENT


def test_ledoit_wolf_matches_scikit_learn():
    covariance = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))
    expected, _ = covariance.ledoit_wolf(samples)
    centred = torch.from_numpy(samples - samples.mean(axis=0))[None]
    np.testing.assert_allclose(ledoit_wolf_covariance(centred)[0].numpy(), expected, atol=1e-10)


@pytest.fixture(scope="module")
def fitted() -> Padim:
    return Padim(PadimConfig(image_size=(64, 64))).fit(woven_textures(12, seed=0), woven_textures(4, seed=1))


def test_bright_spot_scores_higher_and_the_map_peaks_on_it(fitted):
    normal = woven_textures(3, seed=2)
    defective = add_spot(normal, top=20, left=36, side=6)
    prediction = fitted.predict(torch.cat([normal, defective]))
    assert prediction.maps.shape == (6, 64, 64)
    assert prediction.scores[3:].min() > prediction.scores[:3].max()
    for anomaly_map in prediction.maps[3:]:
        row, col = np.unravel_index(anomaly_map.argmax(), anomaly_map.shape)
        assert abs(row - 23) <= 10 and abs(col - 39) <= 10  # within about one 8 px patch cell
    assert np.allclose(prediction.scores, prediction.maps.reshape(6, -1).max(axis=1))


def test_non_square_images_and_wrong_size_input():
    detector = create_detector("padim", image_size=(64, 96))
    detector.fit(woven_textures(8, size=(64, 96)), woven_textures(2, size=(64, 96), seed=1))
    prediction = detector.predict(add_spot(woven_textures(1, size=(64, 96), seed=2), top=30, left=70, side=6))
    assert prediction.maps.shape == (1, 64, 96)
    row, col = np.unravel_index(prediction.maps[0].argmax(), prediction.maps[0].shape)
    assert abs(row - 33) <= 10 and abs(col - 73) <= 10
    with pytest.raises(ConfigError, match="positions"):
        detector.predict(woven_textures(1, size=(64, 64)))


def test_sizes_whose_covariances_do_not_fit_are_refused():
    with pytest.raises(ConfigError, match="GiB"):
        create_detector("padim", image_size=(2048, 2048))


def test_spd_inverse_inverts():
    from anomalens.models.image.padim import spd_inverse

    x = torch.randn(3, 20, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    matrices = x.transpose(1, 2) @ x + 0.1 * torch.eye(6, dtype=torch.float64)
    identity = torch.eye(6, dtype=torch.float64).expand(3, -1, -1)
    assert torch.allclose(spd_inverse(matrices) @ matrices, identity, atol=1e-10)


def test_running_statistics_equal_the_all_at_once_estimate():
    """Sums folded in batch by batch give the same mean and shrunk covariance as all samples at once, even with a
    mean far from zero (where naive sums of squares would cancel the variance out)."""
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(3, 6, 6, dtype=torch.float64, generator=generator)
    samples = torch.randn(3, 50, 6, dtype=torch.float64, generator=generator) @ mixing + 1000.0
    statistics = GaussianStatistics()
    for start, stop in [(0, 1), (1, 17), (17, 50)]:
        statistics.add(samples[:, start:stop])
    assert statistics.count == 50
    torch.testing.assert_close(statistics.mean(), samples.mean(dim=1), rtol=0, atol=1e-9)
    expected = ledoit_wolf_covariance(samples - samples.mean(dim=1, keepdim=True))
    torch.testing.assert_close(statistics.shrunk_covariance(0, 3), expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(statistics.shrunk_covariance(1, 2), expected[1:2], rtol=1e-9, atol=1e-9)


def test_streamed_fit_equals_the_in_memory_fit(fitted):
    """fit_batches (images decoded batch by batch, never all in memory) learns the same Gaussians as fit."""
    train, validation = woven_textures(12, seed=0), woven_textures(4, seed=1)
    streamed = Padim(PadimConfig(image_size=(64, 64)))
    streamed.fit_batches(lambda: (train[i : i + 5] for i in range(0, 12, 5)), validation, reporter=SILENT)
    torch.testing.assert_close(streamed.mean_, fitted.mean_, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(streamed.precision_, fitted.precision_, rtol=1e-4, atol=1e-3)
    assert streamed.history_[-1]["training_images"] == 12
    test = woven_textures(3, seed=2)
    np.testing.assert_allclose(streamed.predict(test).scores, fitted.predict(test).scores, rtol=1e-4)


def test_a_saved_model_must_say_where_its_image_score_is_taken(fitted, tmp_path):
    """Training saves the region it chose ("image" or "part"); a file saying "auto" is refused by name, not guessed."""
    import json

    from anomalens.errors import CheckpointError
    from anomalens.models.base import load_detector

    fitted.save(tmp_path / "model")
    config_file = tmp_path / "model" / "config.json"
    meta = json.loads(config_file.read_text())
    assert meta["config"]["score_region"] in ("image", "part")
    meta["config"]["score_region"] = "auto"
    config_file.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="score_region"):
        load_detector(tmp_path / "model")
