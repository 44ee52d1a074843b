"""Cross-fitting of the image feature models: training images scored by memories that did not learn them join the
held-out images for the threshold and the score region (models/image/cross_fit.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from _textures import add_spot, woven_textures
from anomalens.errors import CheckpointError
from anomalens.models import create_detector, load_detector
from anomalens.models.image import cross_fit
from anomalens.models.image.cross_fit import TrainingFolds
from anomalens.models.image.feature_detector import MIN_REGION_IMAGES
from anomalens.progress import SILENT, Reporter


def _logged() -> tuple[Reporter, list[str]]:
    lines: list[str] = []
    return Reporter(show_tqdm=False, callback=lambda message, *_: lines.append(message)), lines


def _dealt_and_learned(model: str, train: torch.Tensor, **settings) -> tuple[object, TrainingFolds]:
    """A model that learned ``train`` while dealing it to folds (the first half of a fit, stopped before the
    threshold)."""
    detector = create_detector(model, image_size=tuple(train.shape[-2:]), **settings)
    detector._deal_to_folds(0, SILENT)
    folds = detector._training_folds
    detector._fit(train, None, SILENT)
    detector._training_folds = None
    return detector, folds


def test_each_training_image_is_scored_by_a_memory_that_did_not_learn_it():
    """With every patch kept and exact search, the model's own memory scores each training image near 0 (its
    patches are in it); the memory of the other folds does not hold them, and the one image with a bright spot
    (found nowhere else) scores far above the rest."""
    train = add_spot(woven_textures(12, seed=3), top=20, left=20, side=10)[:1]
    train = torch.cat([train, woven_textures(11, seed=4)])
    detector, folds = _dealt_and_learned("patchcore", train, coreset_ratio=1.0, exact_search=True, num_neighbours=1,
                                         score_region="image")
    own = detector.predict(train).scores
    assert own.max() < 1e-3
    cross = detector.cross_fitted_scores(folds, ("image",))["image"]
    numbers = torch.cat([folds.sampled_numbers(f) for f in range(folds.folds)])
    assert sorted(numbers.tolist()) == list(range(12))  # every image once, by the memory of the other folds
    by_image = dict(zip(numbers.tolist(), cross.tolist()))
    assert min(by_image.values()) > 0.1
    assert by_image[0] > 2 * max(v for i, v in by_image.items() if i != 0)


def test_padim_folds_add_up_to_the_gaussians_of_the_other_folds():
    """PaDiM's memory without a fold is the Gaussians of the other folds' images, exactly as a model fitted on
    them alone (two folds: the images of the other parity)."""
    train = woven_textures(10, seed=5)
    detector, folds = _dealt_and_learned("padim", train, score_region="image")
    alone = create_detector("padim", image_size=(64, 64), score_region="image", threshold_from_folds=False)
    alone.fit(train[1::2], train[:1])  # fold 1: the odd images
    with folds.memories.without(0) as ready:
        assert ready
        assert torch.allclose(detector.mean_, alone.mean_, atol=1e-4)
        assert torch.allclose(detector.precision_, alone.precision_, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(detector.mean_, alone.mean_, atol=1e-4)  # restored afterwards


def test_the_sample_is_bounded_and_only_the_first_images_are_dealt(monkeypatch):
    monkeypatch.setattr(cross_fit, "SAMPLE_IMAGES", 8)
    monkeypatch.setattr(cross_fit, "FOLD_IMAGES", 20)
    folds = TrainingFolds(image_bytes=3 * 16 * 16, seed=0, folds=4)
    assert folds.capacity == 8
    assert TrainingFolds(image_bytes=cross_fit.SAMPLE_BYTES // 3, seed=0).capacity == 3  # large images: fewer
    seen = []

    class Memories:
        def add(self, features, fold_of_images):
            seen.extend(fold_of_images.tolist())

    folds.memories = Memories()
    images = torch.randint(0, 255, (30, 3, 16, 16), dtype=torch.uint8)
    for start in range(0, 30, 7):
        batch = images[start : start + 7]
        folds.add(batch, torch.zeros(len(batch), 2, 1, 1))
    assert seen == [i % 4 for i in range(20)]  # the first 20 of 30, dealt in turn
    numbers = torch.cat([folds.sampled_numbers(f) for f in range(4)])
    assert len(numbers) == 8 and len(set(numbers.tolist())) == 8 and int(numbers.max()) < 20
    for fold in range(4):  # each sampled image comes back with its pixels, in its fold
        for number, image in zip(folds.sampled_numbers(fold).tolist(), torch.cat(list(folds.sampled(fold, 3)) or [torch.zeros(0, 3, 16, 16, dtype=torch.uint8)])):
            assert number % 4 == fold and torch.equal(image, images[number])


@pytest.mark.parametrize("model", ["patchcore", "padim"])
def test_the_threshold_hears_every_training_image_not_a_tenth(model):
    """40 training and 4 held-out images: the threshold comes from 44 normal scores with cross-fitting, from 4
    without; the model itself (its memory) is the same."""
    images = woven_textures(44, seed=1)
    with_folds = create_detector(model, image_size=(64, 64)).fit(images[:40], images[40:])
    without = create_detector(model, image_size=(64, 64), threshold_from_folds=False).fit(images[:40], images[40:])
    assert with_folds.calibration_.validation_count == 44 and without.calibration_.validation_count == 4
    assert torch.equal(with_folds.state_tensors()[next(iter(without.state_tensors()))],
                       without.state_tensors()[next(iter(without.state_tensors()))])
    assert with_folds.calibration_.validation_mean != without.calibration_.validation_mean


@pytest.mark.parametrize("streamed", [False, True])
def test_without_held_out_images_each_training_image_counts_once(streamed):
    """No validation images: the threshold once heard every training image twice, scored by the memory that learned
    it (low) and by one that did not, and called the first "held-out"; now only the fair scores count."""
    images = woven_textures(40, seed=4)
    reporter, lines = _logged()
    detector = create_detector("patchcore", image_size=(64, 64))
    if streamed:
        detector.fit_batches(lambda: (images[i : i + 8] for i in range(0, 40, 8)), None, reporter)
    else:
        detector.fit(images, None, reporter)
    cal = detector.calibration_
    assert cal.validation_count == 40
    assert any("40 training images scored by memories that did not learn them (no held-out images)" in line
               for line in lines)
    assert not any("held-out images and" in line for line in lines)
    # the fair scores alone: higher than the model's own scores of the images it learned
    own = detector.predict(images).scores
    assert cal.validation_mean > float(own.mean())
    # the maps of images scored by the memory that learned them set neither the regions nor the drift range
    # (they gave 6 of 20 fresh normal images defect regions): regions at the image threshold, no drift check
    assert cal.pixel_threshold is None and cal.region_threshold() == cal.threshold
    assert detector.drift_reference_ is None


def test_enough_held_out_images_set_the_threshold_alone():
    """At a 30% target, 10 held-out normal images measure the rate (3 / 0.3 = 10 needed): no cross-fitting, the
    threshold comes from them alone, and training says why; at 10% (30 needed) the 40 training images join them."""
    images = woven_textures(50, seed=2)
    reporter, lines = _logged()
    enough = create_detector("patchcore", image_size=(64, 64), target_fpr=0.3).fit(images[:40], images[40:], reporter)
    assert enough.calibration_.validation_count == 10
    assert any("10 held-out images alone" in line and "no cross-fitting" in line for line in lines)
    few = create_detector("patchcore", image_size=(64, 64), target_fpr=0.1).fit(images[:40], images[40:])
    assert few.calibration_.validation_count == 50


def test_streamed_fit_gives_the_threshold_of_the_fit_on_one_tensor():
    images = woven_textures(30, seed=2)
    whole = create_detector("patchcore", image_size=(64, 64)).fit(images[:26], images[26:])
    streamed = create_detector("patchcore", image_size=(64, 64))
    streamed.fit_batches(lambda: (images[i : min(i + 5, 26)] for i in range(0, 26, 5)), images[26:], SILENT)
    assert streamed.calibration_.validation_count == whole.calibration_.validation_count == 30
    assert streamed.calibration_.threshold == pytest.approx(whole.calibration_.threshold, rel=1e-4)


def test_few_images_deciding_the_score_region_raise_a_warning():
    """6 held-out images decide the score region alone (one of them is its 10%): a warning says so; with the
    24 training images scored by memories without them, 30 decide and the warning goes."""
    images = woven_textures(30, seed=6)
    reporter, lines = _logged()
    create_detector("patchcore", image_size=(64, 64), threshold_from_folds=False).fit(images[:24], images[24:], reporter)
    assert any(line.startswith("warning: the score region was decided on 6 normal images") for line in lines)
    reporter, lines = _logged()
    create_detector("patchcore", image_size=(64, 64)).fit(images[:24], images[24:], reporter)
    assert 30 >= MIN_REGION_IMAGES and any("of 30 normal scores" in line for line in lines)
    assert not any("score region was decided" in line for line in lines)


def test_models_saved_before_cross_fitting_load_as_they_were(tmp_path: Path):
    images = woven_textures(12, seed=7)
    detector = create_detector("patchcore", image_size=(64, 64), score_region="image").fit(images[:10], images[10:])
    folder = detector.save(tmp_path / "model")
    meta = json.loads((folder / "config.json").read_text())
    assert meta["config"]["threshold_from_folds"] is True
    del meta["config"]["threshold_from_folds"]
    (folder / "config.json").write_text(json.dumps(meta))
    old = load_detector(folder)
    assert old.config.threshold_from_folds is False  # how it was fitted: the threshold from validation alone
    assert old.calibration_.threshold == detector.calibration_.threshold
    meta["config"]["threshold_from_folds"] = "yes"
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="threshold_from_folds"):
        load_detector(folder)
