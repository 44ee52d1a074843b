"""The drift check: typical (median) distances of a batch against the range recorded at fit time."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anomalens.metrics.drift import DRIFT_MARGIN, DriftReference, assess_drift, typical_distances
from anomalens.models.base import CONFIG_FILE, load_detector


@pytest.fixture(scope="module")
def reference() -> DriftReference:
    rng = np.random.default_rng(0)
    return DriftReference.from_maps(rng.normal(1.0, 0.1, (200, 16, 16)))


def test_typical_distance_is_the_median_of_each_map():
    maps = np.stack([np.full((4, 4), 1.0), np.arange(16.0).reshape(4, 4)])
    maps[0, 0, 0] = 100.0  # one hot cell (a defect) does not move an item's typical distance
    assert typical_distances(maps).tolist() == [1.0, 7.5]
    assert typical_distances([maps[:1], maps[1:]]).tolist() == [1.0, 7.5]  # blocks as they stream


def test_same_data_does_not_drift_and_local_defects_do_not_either(reference):
    rng = np.random.default_rng(1)
    same = rng.normal(1.0, 0.1, (50, 16, 16))
    assert not assess_drift(same, reference).drifted
    defects = same.copy()
    defects[:, 2:5, 2:5] += 10.0  # every image has a strong local defect: the scores rise, the typical distance does not
    report = assess_drift(defects, reference)
    assert not report.drifted and report.deviation == 0.0


def test_a_global_shift_drifts_in_either_direction(reference):
    rng = np.random.default_rng(2)
    width = reference.width
    up = assess_drift(rng.normal(1.0, 0.1, (30, 16, 16)) + reference.high - 1.0 + (DRIFT_MARGIN + 0.5) * width, reference)
    assert up.drifted and up.deviation > DRIFT_MARGIN and "unlike the training data" in up.message
    down = assess_drift(np.full((30, 16, 16), reference.low - (DRIFT_MARGIN + 0.5) * width), reference)
    assert down.drifted and down.deviation < -DRIFT_MARGIN
    # just outside the range but within the margin: not yet drift
    near = assess_drift(np.full((30, 16, 16), reference.high + 0.5 * DRIFT_MARGIN * width), reference)
    assert not near.drifted and 0 < near.deviation < DRIFT_MARGIN


def test_half_the_batch_shifted_is_what_the_median_needs(reference):
    shifted = np.full((10, 8, 8), 50.0)
    normal = np.full((10, 8, 8), 1.0)
    assert not assess_drift(np.concatenate([shifted[:4], normal[:6]]), reference).drifted  # 4 of 10: events
    assert assess_drift(np.concatenate([shifted[:6], normal[:4]]), reference).drifted  # 6 of 10: the data moved


def test_no_reference_or_no_items_gives_no_verdict(reference):
    assert assess_drift(np.ones((3, 4, 4)), None) is None
    assert assess_drift(np.zeros((0, 4, 4)), reference) is None
    assert DriftReference.from_dict(None) is None
    assert DriftReference.from_dict(reference.to_dict()) == reference


def test_detector_records_the_reference_and_old_models_still_load(tmp_path, tiny_model):
    from _tiny_detector import TinyConfig, TinyDetector

    generator = torch.Generator().manual_seed(0)
    train = (torch.rand(12, 3, 32, 32, generator=generator) * 40 + 100).to(torch.uint8)
    validation = (torch.rand(8, 3, 32, 32, generator=generator) * 40 + 100).to(torch.uint8)
    detector = TinyDetector(TinyConfig(image_size=(32, 32))).fit(train, validation)
    assert detector.drift_reference_ is not None and detector.drift_reference_.count == 8
    folder = detector.save(tmp_path / "model")
    meta = json.loads((folder / CONFIG_FILE).read_text())
    assert meta["drift_reference"]["count"] == 8
    assert load_detector(folder).drift_reference_ == detector.drift_reference_
    # brighter images (other lighting) drift; the scores themselves are what the detector says
    brighter = (train.float() + 80).clamp(0, 255).to(torch.uint8)
    prediction = detector.predict(brighter)
    assert assess_drift(prediction.maps, detector.drift_reference_).drifted
    assert not assess_drift(detector.predict(validation).maps, detector.drift_reference_).drifted
    # a model saved before drift was recorded: loads, scores, no verdict
    del meta["drift_reference"]
    (folder / CONFIG_FILE).write_text(json.dumps(meta))
    old = load_detector(folder)
    assert old.drift_reference_ is None
    np.testing.assert_allclose(old.predict(brighter).scores, prediction.scores)


def test_the_range_is_at_least_as_wide_as_the_validation_scores_spread():
    """One held-out clip of correlated frames gives a narrow range; the score spread keeps it from being too tight."""
    narrow = DriftReference.from_typical(np.full(10, 1.0) + np.linspace(0, 0.01, 10), min_width=0.5)
    assert narrow.width == 0.5
    assert not assess_drift(np.full(5, 1.0 + 0.01 + 0.9), narrow, typical=True).drifted
    assert assess_drift(np.full(5, 1.0 + 0.01 + 1.1), narrow, typical=True).drifted
