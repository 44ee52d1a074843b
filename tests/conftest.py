"""Shared fixtures. Tests use small synthetic data the project generates; real data is optional."""

from __future__ import annotations

import os
from pathlib import Path

# Before torch loads: idle OpenMP threads sleep instead of spinning, which matters when the in-process UI
# server, a training thread and the test itself share two cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Feature extractors run through PyTorch in tests: an ONNX export costs about 10 s per input size, and the tests
# use many sizes. tests/test_onnx_backbone.py checks that ONNX Runtime gives the same features and scores.
os.environ.setdefault("ANOMALENS_FEATURE_RUNTIME", "torch")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ANOMALENS_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def mvtec_root() -> Path:
    """The real MVTec AD data (bottle) beside the repo; tests that need it skip where it is absent."""
    root = SHARED_DATA / "mvtec_ad"
    if not (root / "bottle" / "train" / "good").is_dir():
        pytest.skip(f"real MVTec AD data not found at {root} (set ANOMALENS_SHARED_DATA to its parent folder)")
    return root


@pytest.fixture(scope="session")
def ped2_root() -> Path:
    """The real UCSD Ped2 data beside the repo; tests that need it skip where it is absent."""
    root = SHARED_DATA / "ucsd_ped2"
    if not (root / "training" / "frames").is_dir():
        pytest.skip(f"real UCSD Ped2 data not found at {root} (set ANOMALENS_SHARED_DATA to its parent folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_image_dataset(tmp_path_factory) -> tuple[Path, str]:
    """A small MVTec-layout category (washers; 40 train, 8 good + 16 defective test images at 128 px).

    Returns ``(data_dir, category)``; generated once per session in a few seconds.
    """
    from anomalens.data.synthetic import DEFAULT_CATEGORY, make_synthetic_image_dataset

    root = make_synthetic_image_dataset(tmp_path_factory.mktemp("synthetic_images"), seed=0)
    return root, DEFAULT_CATEGORY


@pytest.fixture
def tiny_model(monkeypatch) -> str:
    """Registers the tiny test detector (tests/_tiny_detector.py) as model ``tiny`` for one test."""
    from _tiny_detector import register_tiny_detector

    return register_tiny_detector(monkeypatch)


@pytest.fixture
def tiny_folder(tmp_path, tiny_model) -> Path:
    """A fitted tiny model (32 px) saved to a folder: config.json with a drift reference, and weights."""
    from _tiny_detector import TinyConfig, TinyDetector

    generator = torch.Generator().manual_seed(0)
    train = (torch.rand(12, 3, 32, 32, generator=generator) * 40 + 100).to(torch.uint8)
    validation = (torch.rand(8, 3, 32, 32, generator=generator) * 40 + 100).to(torch.uint8)
    return TinyDetector(TinyConfig(image_size=(32, 32))).fit(train, validation).save(tmp_path / "model")


@pytest.fixture(scope="session")
def patchcore_run(synthetic_image_dataset, tmp_path_factory) -> Path:
    """A small PatchCore run (64 px, synthetic data) for the export, runtime and server tests."""
    from anomalens.workflows.train import train_image_model

    root, category = synthetic_image_dataset
    results = tmp_path_factory.mktemp("deploy_results")
    return train_image_model(root, category, "patchcore", results, image_size=64, seed=0, device="cpu",
                             run_name="patchcore").run_dir


@pytest.fixture(scope="session")
def onnx_bundle(patchcore_run, tmp_path_factory) -> Path:
    """``patchcore_run`` exported to an fp32 ONNX bundle."""
    from anomalens.export import export_model

    return export_model(patchcore_run, "onnx", "fp32", tmp_path_factory.mktemp("bundles") / "onnx_fp32").folder
