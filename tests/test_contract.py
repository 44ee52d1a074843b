"""The detector contract (models/base.py) and atomic writes (runtime.py), with a tiny known detector."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

import anomalens

from _saved_tensors import refresh_weights_checksum
from anomalens.errors import CheckpointError, ConfigError
from anomalens.models import base
from anomalens.models.base import Detector, DetectorConfig, create_detector, load_detector
from anomalens.runtime import atomic_dir, write_json_atomic


@dataclass
class MeanImageConfig(DetectorConfig):
    batch_size: int = 4


class MeanImage(Detector):
    """Anomaly map = squared distance to the mean training image: simple enough to know every output."""

    name = "mean-image-test"
    config_class = MeanImageConfig

    def _fit(self, train, validation, reporter):
        self.mean_ = train.float().div(255).mean(0)

    def _score_batch(self, batch):
        maps = (batch - self.mean_.to(batch.device)).pow(2).mean(1)
        return maps.flatten(1).max(1).values, maps, None

    def state_tensors(self):
        return {"mean": self.mean_}

    def load_state_tensors(self, tensors):
        self.mean_ = tensors["mean"]


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(base.MODEL_REGISTRY, MeanImage.name, f"{__name__}:MeanImage")


def _images(n: int, value: int, size: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(value)
    noise = torch.randint(-3, 4, (n, 3, size, size), generator=gen)
    return (value + noise).clamp(0, 255).to(torch.uint8)


def test_fit_calibrates_on_validation_and_flags_outliers():
    detector = create_detector(MeanImage.name, image_size=[32, 32]).fit(_images(8, 100), _images(4, 101))
    assert detector.calibration_ is not None and detector.calibration_.validation_count == 4
    bright = _images(2, 100)
    bright[:, :, 10:14, 10:14] = 255
    prediction = detector.predict(torch.cat([_images(2, 100), bright]))
    assert prediction.labels.tolist() == [False, False, True, True]
    assert prediction.normalized_scores[2] > 0.5 > prediction.normalized_scores[0]
    # the map peaks where the defect is
    peak = np.unravel_index(prediction.maps[2].argmax(), prediction.maps[2].shape)
    assert 10 <= peak[0] < 14 and 10 <= peak[1] < 14


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    detector = create_detector(MeanImage.name, image_size=[32, 32], seed=3).fit(_images(6, 90), _images(3, 91))
    detector.save(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["model"] == MeanImage.name and saved["config"]["seed"] == 3
    loaded = anomalens.load_detector(tmp_path)  # the public loader takes a run folder holding model/ too
    images = _images(3, 120)
    np.testing.assert_array_equal(loaded.predict(images).scores, detector.predict(images).scores)
    assert loaded.calibration_ == detector.calibration_


def test_load_refuses_other_kind_version_and_corrupt_weights(tmp_path):
    folder = create_detector(MeanImage.name, image_size=[32, 32]).fit(_images(4, 50), _images(2, 50)).save(tmp_path / "m")
    with pytest.raises(CheckpointError, match="a video model is needed"):
        load_detector(folder, kind="video")
    meta = json.loads((folder / "config.json").read_text())
    meta["format_version"] = 999
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version: 999 is not a model format version"):
        load_detector(folder)
    meta["format_version"] = base.FORMAT_VERSION
    (folder / "config.json").write_text(json.dumps(meta))
    (folder / "weights.safetensors").write_bytes(b"not a safetensors file")
    refresh_weights_checksum(folder / "weights.safetensors")  # the safetensors check answers, not the checksum
    with pytest.raises(CheckpointError, match="corrupt weights file"):
        load_detector(folder)
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_detector(tmp_path / "missing")


def test_unknown_setting_is_a_config_error():
    with pytest.raises(ConfigError, match="latent_dim"):
        create_detector(MeanImage.name, latent_dim=3)


def test_atomic_writes_keep_the_old_content_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"a": 1})
    folder = tmp_path / "model"
    with atomic_dir(folder) as tmp:
        (tmp / "x").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(folder) as tmp:
            (tmp / "x").write_text("new")
            raise RuntimeError("interrupted mid-save")
    assert (folder / "x").read_text() == "old"
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.json"]  # no temp files left


def test_two_writers_of_one_folder_each_swap_it_in_whole(tmp_path):
    """Two threads replacing the same folder (two evaluations of one model in the UI): every swap succeeds, the
    folder always holds one writer's complete set, and nothing is left beside it."""
    import threading

    folder = tmp_path / "evaluation"
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            for i in range(150):
                with atomic_dir(folder) as tmp:
                    for part in ("a", "b", "c"):
                        (tmp / part).write_text(f"{name}{i}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(name,)) for name in "xy"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    contents = {p.name: p.read_text() for p in folder.iterdir()}
    assert sorted(contents) == ["a", "b", "c"] and len(set(contents.values())) == 1  # one writer's whole set
    assert [p.name for p in tmp_path.iterdir()] == ["evaluation"]  # no folder moved aside is left
