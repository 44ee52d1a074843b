"""The patch-feature extractor through ONNX Runtime gives PyTorch's features, and is exported once into a cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _textures import add_spot, woven_textures
from anomalens.errors import ConfigError
from anomalens.models.components import onnx_backbone
from anomalens.models.components.features import PatchFeatureExtractor
from anomalens.models.image.patchcore import PatchCore, PatchCoreConfig

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnxscript", reason="onnxscript (needed by the ONNX exporter) is not installed")


@pytest.fixture
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(onnx_backbone.CACHE_ENVIRONMENT, str(tmp_path))
    monkeypatch.setattr(onnx_backbone, "_runtime", "onnx")
    return tmp_path / "onnx"


def test_onnx_and_torch_give_the_same_features_and_the_export_is_cached(onnx_cache):
    extractor = PatchFeatureExtractor("lite0", stages=(2, 4), projection_dim=64)
    images = torch.rand(3, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    expected = extractor.torch_forward(images)
    features = extractor(images)  # exports into the cache, then runs ONNX Runtime
    assert isinstance(extractor._runners[(96, 128)], onnx_backbone.OnnxFeatureRunner)
    assert features.shape == expected.shape == (3, 64, 12, 16)
    scale = float(expected.abs().max())
    assert float((features - expected).abs().max()) <= 1e-4 * scale
    # one file per weights, settings and size, reused by a new extractor; other batch sizes run on the same export
    exported = list(onnx_cache.iterdir())
    assert len(exported) == 1 and exported[0].suffix == ".onnx"  # one self-contained file, no leftovers
    again = PatchFeatureExtractor("lite0", stages=(2, 4), projection_dim=64)
    mtime = exported[0].stat().st_mtime_ns
    one = again(images[:1])
    assert exported[0].stat().st_mtime_ns == mtime
    assert float((one - expected[:1]).abs().max()) <= 1e-4 * scale


def test_patchcore_scores_agree_between_runtimes(onnx_cache, monkeypatch):
    train, validation = woven_textures(6, seed=0), woven_textures(2, seed=1)
    images = add_spot(woven_textures(2, seed=2), top=20, left=20, side=6)
    scores = {}
    for runtime in ("torch", "onnx"):
        monkeypatch.setattr(onnx_backbone, "_runtime", runtime)
        detector = PatchCore(PatchCoreConfig(image_size=(64, 64), coreset_ratio=0.5, memory_bank_size=150))
        scores[runtime] = detector.fit(train, validation).predict(images).scores
    np.testing.assert_allclose(scores["onnx"], scores["torch"], rtol=1e-3)


def test_unknown_runtime_is_a_config_error():
    with pytest.raises(ConfigError, match="feature-runtime"):
        onnx_backbone.set_feature_runtime("tensorrt")


def test_openvino_gives_onnx_runtimes_features_at_fp32(onnx_cache, monkeypatch):
    """``--feature-runtime openvino`` runs the same cached export, compiled at f32 (this CPU's default, bf16,
    moved these features by 0.5): within 1e-4 of the features' scale of ONNX Runtime's and PyTorch's."""
    pytest.importorskip("openvino", reason="OpenVINO (an optional extra) is not installed")
    images = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    extractor = PatchFeatureExtractor("lite0", stages=(2, 3))
    expected = extractor(images)  # ONNX Runtime (the fixture's runtime)
    monkeypatch.setattr(onnx_backbone, "_runtime", "openvino")
    extractor.reset_runtime()
    features = extractor(images)
    runner = extractor._runners[(96, 128)]
    assert runner.engine == "openvino" and len(list(onnx_cache.iterdir())) == 1  # the same exported file
    scale = float(expected.abs().max())
    assert features.shape == expected.shape == (2, 120, 12, 16)
    assert float((features - expected).abs().max()) <= 1e-4 * scale
    assert float((features - extractor.torch_forward(images)).abs().max()) <= 1e-4 * scale
