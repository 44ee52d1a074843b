"""The autoencoder detector and its losses, on small synthetic images made here (64 px, 1-3 epochs)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from anomalens.errors import ConfigError
from anomalens.models.image.autoencoder import Autoencoder, AutoencoderConfig, ConvAutoencoder
from anomalens.models.base import create_detector
from anomalens.models.components.kernels import gaussian_blur
from anomalens.models.components.losses import error_map, reconstruction_loss, ssim_map
from anomalens.progress import Reporter

SIZE = 64
N_TRAIN = 8  # two batches of four per epoch


def normal_images(n: int, seed: int) -> torch.Tensor:
    """Grey parts on a darker background: a bright disc that shifts a little, a gradient, sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images = []
    for _ in range(n):
        cy, cx = SIZE / 2 + rng.uniform(-2, 2, size=2)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < (SIZE * 0.3) ** 2).astype(np.float32)
        base = 0.2 + 0.1 * xx / SIZE + 0.45 * disc
        rgb = np.stack([base, base * 0.95, base * 0.9]) + rng.normal(0, 0.02, size=(3, SIZE, SIZE))
        images.append(np.clip(rgb * 255, 0, 255).astype(np.uint8))
    return torch.from_numpy(np.stack(images))


def fitted(epochs: int = 2, seed: int = 0, **settings) -> Autoencoder:
    model = create_detector("autoencoder", image_size=(SIZE, SIZE), epochs=epochs, batch_size=4, seed=seed, **settings)
    return model.fit(normal_images(N_TRAIN, seed=1), normal_images(4, seed=2))


@pytest.fixture(scope="module")
def model() -> Autoencoder:
    return fitted(epochs=3)


def test_network_has_the_original_shape_and_size_at_256_px():
    net = ConvAutoencoder(latent_dim=256).eval()
    x = torch.zeros(2, 3, 256, 256)
    with torch.no_grad():
        assert net.encode(x).shape == (2, 256, 16, 16)
        out = net(x)
    assert out.shape == (2, 3, 256, 256)
    assert out.abs().max() <= 1.0  # tanh output, like the [-1, 1] input
    assert 1.45e6 < sum(p.numel() for p in net.parameters()) < 1.6e6


@pytest.mark.parametrize("loss", ["mse", "ssim", "combined"])
def test_training_loss_decreases(loss):
    model = fitted(epochs=3, loss=loss)
    losses = [h["train_loss"] for h in model.history_]
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert losses[-1] < losses[0]
    assert [h["epoch"] for h in model.history_] == [1, 2, 3]
    assert all(h["val_loss"] is not None and h["seconds"] > 0 for h in model.history_)


def test_best_epoch_is_the_lowest_validation_loss(model):
    val_losses = [h["val_loss"] for h in model.history_]
    assert model.best_epoch_ == int(np.argmin(val_losses)) + 1
    assert model.is_fitted and model.calibration_.validation_count == 4


def test_image_score_is_max_of_smoothed_error_minus_normal_error(model):
    images = normal_images(3, seed=5)
    pred = model.predict(images)
    x = images.float().numpy() / 255.0
    raw = ((pred.views - x) ** 2).mean(axis=1)
    sigma = model.config.smoothing_sigma
    expected = np.stack([gaussian_filter(m, sigma, mode="mirror", truncate=4.0) for m in raw])  # kernels.TRUNCATE
    expected -= model.normal_error_.cpu().numpy()
    np.testing.assert_allclose(pred.maps, expected, atol=2e-5)
    np.testing.assert_allclose(pred.scores, pred.maps.max(axis=(1, 2)), rtol=1e-6)
    assert pred.views.shape == (3, 3, SIZE, SIZE) and 0.0 <= pred.views.min() and pred.views.max() <= 1.0


@pytest.mark.parametrize("reference", ["none", "mean", "zscore"])
def test_normal_reference_compares_the_map_with_normal_statistics(model, reference, monkeypatch):
    images = normal_images(2, seed=6)
    monkeypatch.setattr(model.config, "normal_reference", "none")
    smoothed = model.predict(images).maps
    monkeypatch.setattr(model.config, "normal_reference", reference)
    maps = model.predict(images).maps
    mean, std = model.normal_error_.numpy(), model.normal_error_std_.numpy()
    expected = {"none": smoothed, "mean": smoothed - mean, "zscore": (smoothed - mean) / (std + 0.1 * std.mean())}
    np.testing.assert_allclose(maps, expected[reference], rtol=1e-4, atol=1e-6)


def test_normal_error_map_is_the_mean_over_training_images(model):
    maps = model.predict(normal_images(N_TRAIN, seed=1)).maps  # the training images of the fixture
    np.testing.assert_allclose(maps.mean(axis=0), 0.0, atol=1e-5)
    assert model.normal_error_.abs().max() > 1e-4  # it is a real statistic, not zeros
    smoothed = maps + model.normal_error_.numpy()
    np.testing.assert_allclose(smoothed.std(axis=0), model.normal_error_std_.numpy(), rtol=1e-3, atol=1e-6)


def test_a_defect_scores_higher_and_is_localised(model):
    normal = normal_images(4, seed=7)
    defective = normal.clone()
    defective[:, :, 10:18, 40:48] = 255  # a white spot the model never saw
    pred = model.predict(torch.cat([normal, defective]))
    assert pred.scores[4:].min() > pred.scores[:4].max()
    for m in pred.maps[4:]:
        y, x = np.unravel_index(np.argmax(m), m.shape)
        assert 6 <= y <= 22 and 36 <= x <= 52


def test_same_seed_same_model_other_seed_other_model():
    images = normal_images(2, seed=11)
    first, second, other = fitted(epochs=1, seed=3), fitted(epochs=1, seed=3), fitted(epochs=1, seed=4)
    assert first.history_[0]["train_loss"] == second.history_[0]["train_loss"]
    np.testing.assert_array_equal(first.predict(images).scores, second.predict(images).scores)
    assert not np.allclose(first.predict(images).scores, other.predict(images).scores)


@pytest.mark.parametrize("how", ["ctrl-c", "cancel"])
def test_interruption_keeps_the_best_epoch_so_far(how):
    cancel = threading.Event()

    def stop_in_epoch_3(stage: str, done: int, total, info: str) -> None:
        if stage.startswith("epoch 3/") and done == 2:  # after two optimiser steps of epoch 3
            if how == "ctrl-c":
                raise KeyboardInterrupt
            cancel.set()

    model = create_detector("autoencoder", image_size=(SIZE, SIZE), epochs=5, batch_size=4, lr=3e-3)
    validation = normal_images(4, seed=2)
    model.fit(normal_images(N_TRAIN, seed=1), validation, Reporter(stop_in_epoch_3, cancel, show_tqdm=False))
    assert model.interrupted_ and model.is_fitted
    assert len(model.history_) == 2
    best = model.history_[model.best_epoch_ - 1]["val_loss"]
    assert best == min(h["val_loss"] for h in model.history_)
    # the weights in use are those of the best epoch, not the half-trained epoch 3
    assert model._mean_loss(validation, Reporter(show_tqdm=False)) == pytest.approx(best, rel=1e-5)


def test_cancel_before_training_raises_nothing_and_marks_interrupted():
    cancel = threading.Event()
    cancel.set()
    model = create_detector("autoencoder", image_size=(SIZE, SIZE), epochs=2, batch_size=4)
    model.fit(normal_images(8, seed=1), normal_images(2, seed=2), Reporter(cancel_event=cancel, show_tqdm=False))
    assert model.interrupted_ and model.history_ == [] and model.best_epoch_ is None


@pytest.mark.parametrize("size", [(250, 256), (256, 100), (40, 40)])
def test_image_size_not_divisible_by_16_is_a_config_error(size):
    with pytest.raises(ConfigError, match=str(size[0] if size[0] % 16 else size[1])):
        create_detector("autoencoder", image_size=size)
    with pytest.raises(ConfigError, match="divisible by 16"):
        AutoencoderConfig(image_size=size)


def test_bad_settings_and_wrong_image_size_at_predict(model):
    with pytest.raises(ConfigError, match="loss l1"):
        create_detector("autoencoder", loss="l1")
    with pytest.raises(ConfigError, match="ssim_weight"):
        create_detector("autoencoder", ssim_weight=1.5)
    with pytest.raises(ConfigError, match="96x96"):
        model.predict(torch.zeros(1, 3, 96, 96, dtype=torch.uint8))


def test_losses_on_known_inputs():
    a = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    b = (a + 0.1).clamp(0, 1)
    assert torch.allclose(ssim_map(a, a), torch.ones_like(a), atol=1e-5)
    assert reconstruction_loss(a, a, "combined").abs() < 1e-6
    np.testing.assert_allclose(error_map(b, a, "mse").numpy(), ((b - a) ** 2).mean(1).numpy(), rtol=1e-6)
    combined = error_map(b, a, "combined", ssim_weight=0.25)
    expected = 0.75 * error_map(b, a, "mse") + 0.25 * error_map(b, a, "ssim")
    assert torch.allclose(combined, expected, atol=1e-6)
    noisier = (a + 0.3 * torch.randn_like(a)).clamp(0, 1)
    assert reconstruction_loss(noisier, a, "ssim") > reconstruction_loss(b, a, "ssim") >= 0


def test_gaussian_blur_matches_scipy_and_keeps_the_mean_of_a_constant():
    x = torch.rand(2, 40, 50, generator=torch.Generator().manual_seed(1))
    expected = np.stack([gaussian_filter(m, 3.0, mode="mirror", truncate=4.0) for m in x.numpy()])
    np.testing.assert_allclose(gaussian_blur(x, 3.0).numpy(), expected, atol=1e-6)
    constant = torch.full((1, 3, 20, 20), 0.7)
    assert torch.allclose(gaussian_blur(constant, 4.0), constant, atol=1e-6)
    assert gaussian_blur(x, 0.0) is x
