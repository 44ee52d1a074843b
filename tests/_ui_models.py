"""Tiny synthetic datasets and models shared by the UI tests (built once per test session, in a few seconds).

Trained through the UI's own handlers, so building them already exercises the Train view's code path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anomalens.ui import handlers as h

TINY_IMAGE_SETTINGS = {"epochs": 2, "batch_size": 8, "latent_dim": 32}
TINY_VIDEO_SETTINGS = {"sequence_length": 4, "stride": 4, "epochs": 1, "batch_size": 4, "latent_dim": 16, "lstm_hidden_dim": 16, "lstm_layers": 1}


@dataclass
class UIWorkspace:
    settings: h.UISettings
    data_root: Path
    image_category: Path
    video_category: Path
    image_run: Path
    video_run: Path


_CACHE: dict[str, UIWorkspace] = {}


def ui_workspace(tmp_path_factory) -> UIWorkspace:
    if "workspace" in _CACHE:
        return _CACHE["workspace"]
    from anomalens.data.synthetic import make_synthetic_image_dataset
    from anomalens.data.synthetic_video import make_synthetic_video_dataset

    data = tmp_path_factory.mktemp("ui_data")
    make_synthetic_image_dataset(data / "images", "widget", n_train=16, n_test_good=3, n_test_per_defect=2, image_size=64, seed=1)
    make_synthetic_video_dataset(data / "video", "conveyor", n_train=2, n_test=2, n_frames=24, size=(64, 96), seed=1)
    settings = h.UISettings(results_dir=tmp_path_factory.mktemp("ui_results"), data_roots=[data], device="cpu",
                            image_examples=sorted((data / "images" / "widget" / "test").glob("*/000.png"))[:3],
                            video_examples=sorted((data / "video" / "conveyor" / "test").glob("*/*.mp4")))
    image = h.choose_dataset(settings, "images/widget", None, "setup", "image")
    image_run = h.train_model(settings, image, "autoencoder", image_size=64, advanced=TINY_IMAGE_SETTINGS).run_dir
    video = h.choose_dataset(settings, "video/conveyor", None, "setup", "video")
    video_run = h.train_model(settings, video, "convlstm", image_size=64, advanced=TINY_VIDEO_SETTINGS).run_dir
    assert image_run is not None and video_run is not None
    workspace = UIWorkspace(settings, data, data / "images" / "widget", data / "video" / "conveyor", image_run, video_run)
    _CACHE["workspace"] = workspace
    return workspace
