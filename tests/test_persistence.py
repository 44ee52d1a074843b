"""Every registered model survives save/load bit for bit: one parametrised round trip over the model registry.

What is checked: the same class, config, calibration and learned tensors come back, the reloaded model scores
new data identically, ``image_size`` is stored once in ``config.json``, and a file from an earlier version that
repeats it under ``preprocessing`` still loads.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _textures import add_spot, woven_textures
from anomalens.data.preprocessing import Preprocessing
from anomalens.data.synthetic_video import synthetic_clip
from anomalens.models.base import MODEL_REGISTRY, create_detector, load_detector

VIDEO_SIZE = (48, 64)
# The smallest settings that still train each model; a new model in the registry needs an entry here.
TINY_SETTINGS = {
    "patchcore": dict(image_size=(64, 64), coreset_ratio=0.25),
    "padim": dict(image_size=(64, 64)),
    "autoencoder": dict(image_size=(64, 64), epochs=1, batch_size=4, latent_dim=16),
    "convlstm": dict(image_size=VIDEO_SIZE, epochs=1, sequence_length=4, stride=4, batch_size=2, lstm_hidden_dim=16,
                     latent_dim=16, lstm_layers=1),
    "stfeatures": dict(image_size=VIDEO_SIZE, appearance_memory=64, motion_memory=16, batch_size=4, flow_preset="ultrafast"),
}


def _clip(seed: int, n_frames: int, anomaly: str | None = None) -> list[torch.Tensor]:
    frames, _ = synthetic_clip(seed, n_frames=n_frames, size=VIDEO_SIZE, anomaly=anomaly)
    prep = Preprocessing(image_size=VIDEO_SIZE)
    return [prep.prepare_array(f) for f in frames]


def _fit_and_predict(detector):
    """(fitted detector, a function that scores the same new data with any detector of this kind)."""
    if detector.kind == "image":
        detector.fit(woven_textures(8, seed=0), woven_textures(3, seed=1))
        probe = add_spot(woven_textures(2, seed=5), top=10, left=40, side=5)
        return lambda d: d.predict(probe)
    detector.fit_clips([_clip(0, 16), _clip(1, 12)], [_clip(2, 12)])
    probe = _clip(3, 12, anomaly="stop")
    return lambda d: d.predict_clip(probe)


def test_every_registered_model_has_tiny_settings():
    assert set(TINY_SETTINGS) == set(MODEL_REGISTRY)


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_save_load_round_trip_gives_identical_output(name, tmp_path):
    detector = create_detector(name, device="cpu", **TINY_SETTINGS[name])
    predict = _fit_and_predict(detector)
    folder = detector.save(tmp_path / "model")

    saved = json.loads((folder / "config.json").read_text())
    assert saved["model"] == name and saved["kind"] == detector.kind
    assert json.dumps(saved).count('"image_size"') == 1  # stored once, in the config

    loaded = load_detector(folder, kind=detector.kind)
    assert type(loaded) is type(detector) and loaded.config == detector.config
    assert loaded.calibration_ == detector.calibration_ and loaded.interrupted_ == detector.interrupted_
    before, after = detector.state_tensors(), loaded.state_tensors()
    assert set(before) == set(after) and all(torch.equal(before[k].cpu(), after[k].cpu()) for k in before)
    expected, got = predict(detector), predict(loaded)
    np.testing.assert_array_equal(got.scores, expected.scores)
    np.testing.assert_array_equal(got.maps, expected.maps)
    if expected.views is not None:
        np.testing.assert_array_equal(got.views, expected.views)

    # a config.json of an earlier version repeated the image size under "preprocessing": it still loads
    saved["preprocessing"] = {"image_size": saved["config"]["image_size"]}
    (folder / "config.json").write_text(json.dumps(saved))
    assert load_detector(folder).config == detector.config
