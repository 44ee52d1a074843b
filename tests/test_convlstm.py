"""The original's ConvLSTM autoencoder: one score per frame, honest best epoch, save/load, errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from anomalens.data.preprocessing import Preprocessing
from anomalens.data.synthetic_video import synthetic_clip
from anomalens.data.video_io import open_clip
from anomalens.errors import ConfigError
from anomalens.models.base import create_detector
from anomalens.models.video.convlstm import ConvLSTMAutoencoder, window_starts
from anomalens.progress import Reporter

SIZE = (48, 64)
SETTINGS = dict(image_size=SIZE, epochs=1, sequence_length=8, stride=4, batch_size=2, lstm_hidden_dim=32, latent_dim=32)


def clip(seed: int, n_frames: int = 24, anomaly: str | None = None) -> list[torch.Tensor]:
    frames, _ = synthetic_clip(seed, n_frames=n_frames, size=SIZE, anomaly=anomaly)
    prep = Preprocessing(image_size=SIZE)
    return [prep.prepare_array(f) for f in frames]


@pytest.fixture(scope="module")
def fitted():
    detector = create_detector("convlstm", **SETTINGS)
    return detector.fit_clips([clip(0), clip(1, 20)], [clip(2, 16)])


def test_default_architecture_matches_the_original_size():
    n_params = sum(p.numel() for p in ConvLSTMAutoencoder(128, 128, 2).parameters())
    assert 2.5e6 < n_params < 3.0e6  # the original: about 2.7M


def test_window_starts_cover_every_frame_once_flush_with_the_end():
    assert window_starts(18, 16, 4) == [0, 2]
    assert window_starts(24, 8, 4) == [0, 4, 8, 12, 16]
    assert window_starts(21, 8, 4) == [0, 4, 8, 12, 13]


@pytest.mark.parametrize("n_frames", [8, 21, 24])
def test_one_score_per_frame(fitted, n_frames):
    result = fitted.predict_clip(clip(5, n_frames))
    assert result.scores.shape == (n_frames,)
    assert np.isfinite(result.scores).all()
    assert result.maps.shape == (n_frames, SIZE[0] // 4, SIZE[1] // 4) and result.maps.dtype == np.float16
    assert result.views.shape == (n_frames, 3, *SIZE) and result.views.dtype == np.uint8
    # the frame score is the maximum of its own (smoothed) error map
    np.testing.assert_allclose(result.scores, result.maps.astype(np.float32).reshape(n_frames, -1).max(1), rtol=2e-3)


def test_fit_records_validation_loss_and_threshold(fitted):
    assert len(fitted.history_) == 1 and fitted.history_[0]["validation_loss"] > 0
    assert fitted.is_fitted and not fitted.interrupted_


def test_same_seed_same_model():
    a = create_detector("convlstm", **SETTINGS).fit_clips([clip(0, 16)], [clip(2, 16)])
    b = create_detector("convlstm", **SETTINGS).fit_clips([clip(0, 16)], [clip(2, 16)])
    frames = clip(3, 12)
    np.testing.assert_array_equal(a.predict_clip(frames).scores, b.predict_clip(frames).scores)


def test_sequence_longer_than_a_clip_names_the_clip(tmp_path):
    folder = tmp_path / "short_clip"
    folder.mkdir()
    frames, _ = synthetic_clip(0, n_frames=8, size=SIZE)
    from PIL import Image

    for i, frame in enumerate(frames[:5]):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    short = open_clip(folder, Preprocessing(image_size=SIZE))
    detector = create_detector("convlstm", **SETTINGS)
    with pytest.raises(ConfigError, match="short_clip.*fewer than sequence_length 8"):
        detector.fit_clips([short])
    with pytest.raises(ConfigError, match="short_clip"):
        detector.predict_clip(short)


def test_invalid_settings_are_config_errors():
    with pytest.raises(ConfigError, match="stride"):
        create_detector("convlstm", image_size=SIZE, sequence_length=4, stride=8)
    with pytest.raises(ConfigError, match="divisible by 16"):
        create_detector("convlstm", image_size=(40, 64))


def test_cancel_keeps_the_best_epoch_and_still_calibrates():
    stop = threading.Event()

    def on_progress(stage: str, done: int, total, info: str) -> None:
        if stage.startswith("epoch 2/") and done >= 1:
            stop.set()

    detector = create_detector("convlstm", **{**SETTINGS, "epochs": 3})
    detector.fit_clips([clip(0, 16)], [clip(2, 16)], reporter=Reporter(on_progress, stop, show_tqdm=False))
    assert detector.interrupted_
    assert [h["epoch"] for h in detector.history_] == [1]
    assert detector.is_fitted
    assert detector.predict_clip(clip(3, 12)).scores.shape == (12,)
