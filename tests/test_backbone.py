"""The shipped ImageNet weights load into our EfficientNet-Lite and see what a real photo shows."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from anomalens.errors import ConfigError
from anomalens.models.components.backbone import load_backbone, normalize_input
from anomalens.models.components.features import PatchFeatureExtractor

# ImageNet class indices 281..285: tabby, tiger cat, Persian, Siamese, Egyptian cat
DOMESTIC_CATS = range(281, 286)


def _chelsea(size: int = 224) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).float()[None] / 255.0
    return F.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_pretrained_backbone_classifies_a_cat(variant):
    net = load_backbone(variant)
    probabilities = net(normalize_input(_chelsea())).softmax(dim=1)[0]
    assert int(probabilities.argmax()) in DOMESTIC_CATS
    assert float(probabilities[list(DOMESTIC_CATS)].sum()) > 0.8


def test_untrained_backbone_does_not_know_cats():
    # The same photo through random weights: the class test above really depends on the loaded weights
    torch.manual_seed(0)
    probabilities = load_backbone("lite0", pretrained=False)(normalize_input(_chelsea())).softmax(dim=1)[0]
    assert float(probabilities[list(DOMESTIC_CATS)].sum()) < 0.5


def test_backbone_is_frozen_and_stays_in_eval_mode():
    net = load_backbone("lite0")
    assert not any(p.requires_grad for p in net.parameters())
    extractor = PatchFeatureExtractor("lite0")
    extractor.train()
    assert not extractor.backbone.training


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="lite9"):
        load_backbone("lite9")


def test_patch_features_shape_stride_and_projection():
    extractor = PatchFeatureExtractor("lite0", stages=(2, 4))
    assert extractor.stride == 8 and extractor.out_channels == 40 + 112
    features = extractor(torch.rand(2, 3, 96, 160))
    assert features.shape == (2, 152, 12, 20)
    assert extractor.grid_size(100, 170) == tuple(extractor(torch.rand(1, 3, 100, 170)).shape[-2:])
    projected = PatchFeatureExtractor("lite0", projection_dim=32, seed=3)
    again = PatchFeatureExtractor("lite0", projection_dim=32, seed=3)
    x = torch.rand(1, 3, 64, 64)
    assert projected(x).shape == (1, 32, 8, 8)
    assert torch.equal(projected(x), again(x))


def test_patch_features_are_local():
    # A change in one corner leaves the features of the far corner untouched (receptive field is bounded)
    extractor = PatchFeatureExtractor("lite0")
    torch.manual_seed(0)
    x = torch.rand(1, 3, 256, 256)
    y = x.clone()
    y[:, :, :32, :32] = 1.0
    fx, fy = extractor(x), extractor(y)
    assert not torch.allclose(fx[..., :4, :4], fy[..., :4, :4])
    assert torch.allclose(fx[..., -4:, -4:], fy[..., -4:, -4:], atol=1e-3)
