"""The bias of cross-fitted scores, measured on held-out normal data and taken off before the threshold
(metrics/threshold.py ``score_shift``), and quantised bundles that carry the checkpoint's calibration over, moved by
their own score shift (export/bundle.py ``quantised_calibration``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _textures import woven_textures
from test_cross_fit import _dealt_and_learned
from anomalens.errors import CheckpointError
from anomalens.export.bundle import quantised_calibration
from anomalens.metrics.threshold import MIN_SHIFT_ITEMS, calibrate, score_shift
from anomalens.models import create_detector, load_detector
from anomalens.progress import Reporter


def _logged() -> tuple[Reporter, list[str]]:
    lines: list[str] = []
    return Reporter(show_tqdm=False, callback=lambda message, *_: lines.append(message)), lines


def test_a_known_shift_is_recovered_and_an_unmeasurable_one_is_not_applied():
    rng = np.random.default_rng(0)
    reference = rng.normal(10.0, 2.0, size=40)
    others = reference[None] + 0.8 + rng.normal(0.0, 0.1, size=(3, 40))  # three memories, each 0.8 too high
    shift = score_shift(others, reference)
    assert shift.items == 40 and abs(shift.measured - 0.8) < 0.03 and abs(shift.shift - 0.8) < 0.03
    # a few items whose differences disagree in sign: the uncertain mean is shrunk to (nearly) nothing
    noisy = score_shift(np.array([[1.5, -0.9, 1.2, -1.1]]), np.zeros(4))
    assert abs(noisy.shift) < abs(noisy.measured) / 2
    # fewer independent items than needed: measured, not applied, and the note says why
    few = score_shift(np.array([[1.0, 1.2]]), np.zeros(2))
    assert few.shift == 0.0 and few.measured == pytest.approx(1.1) and f"at least {MIN_SHIFT_ITEMS}" in few.note
    # frames of one clip: 200 smoothed frames count as a few independent ones
    noise = np.convolve(rng.normal(size=460), np.ones(30) / 30, mode="valid")[:400]
    clips = score_shift(noise[None] + 1.0, np.zeros(400), [200, 200])
    assert clips.items < 40 and clips.shift > 0.5
    # one clip: its frames cannot say how the shift varies between clips, so nothing is applied
    one = score_shift(noise[None] + 1.0, np.zeros(400), [400])
    assert one.shift == 0.0 and "one held-out clip" in one.note
    # two clips that disagree: the shift is shrunk by the spread of the clips' own shifts, not their frames'
    disagree = score_shift(np.r_[noise[:200] + 1.5, noise[200:] - 0.5][None], np.zeros(400), [200, 200])
    assert abs(disagree.shift) < 0.5 * abs(disagree.measured)
    assert score_shift(np.zeros((0, 0)), np.zeros(0)).shift == 0.0


def test_a_memory_known_to_be_biased_is_corrected_to_within_a_tolerance():
    """Every patch kept, one neighbour: a memory without a third of the images scores normal images higher than
    the model's. Its bias, measured on 40 unseen normal images (each scored by every fold's memory and by the
    model), is over 1; the shift measured on the 12 held-out images alone comes within 0.4 of it, and the
    corrected cross-fitted scores' mean lies nearer what unseen normal images score."""
    images = woven_textures(82, seed=7)
    train, held_out, unseen = images[:30], images[30:42], images[42:]
    detector, folds = _dealt_and_learned("patchcore", train, coreset_ratio=1.0, exact_search=True, num_neighbours=1,
                                         score_region="image")
    truth = detector.fold_shift(folds, unseen).measured
    shift = detector.fold_shift(folds, held_out)
    assert truth > 1.0 and shift.items == 12
    assert abs(shift.shift - truth) < 0.4
    cross = detector.cross_fitted_scores(folds, ("image",))["image"]
    unseen_mean = detector.predict(unseen).scores.mean()
    assert abs((cross - shift.shift).mean() - unseen_mean) < 0.5 * (cross.mean() - unseen_mean)


def test_the_fit_takes_the_shift_off_saves_it_and_validates_it_on_load(tmp_path):
    images = woven_textures(50, seed=3)
    reporter, lines = _logged()
    detector = create_detector("patchcore", image_size=(64, 64)).fit(images[:40], images[40:], reporter)
    cal = detector.calibration_
    assert cal.fold_shift is not None and cal.fold_shift_items == 10
    assert any(line.startswith("cross-fitted scores lowered by") or "taken as they are" in line for line in lines)
    assert "cross_fitted_shift" in cal.false_alarm_summary()
    folder = detector.save(tmp_path / "model")
    assert load_detector(folder).calibration_ == cal
    config = json.loads((folder / "config.json").read_text())
    for bad in ("0.3", float("nan")):
        config["calibration"]["fold_shift"] = bad
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match="calibration.fold_shift"):
            load_detector(folder)
    for name in ("fold_shift", "fold_shift_items"):  # a model saved before the correction loads as it was
        config["calibration"].pop(name, None)
    (folder / "config.json").write_text(json.dumps(config))
    assert load_detector(folder).calibration_.fold_shift is None


def test_without_validation_images_nothing_measures_the_shift():
    """No validation: the held-out images are the training images themselves, learned by the model, so they
    cannot say how unseen images score; the folds' scores join the threshold as they are."""
    images = woven_textures(30, seed=4)
    detector = create_detector("padim", image_size=(64, 64)).fit(images)
    assert detector.calibration_.fold_shift == 0.0 and detector.calibration_.fold_shift_items == 0.0


def test_a_quantised_bundle_keeps_the_checkpoint_threshold_moved_by_its_score_shift():
    """Known inputs: the quantised graph scores the 20 validation images 0.5 higher (a little noise), its maps
    0.25 higher. The bundle's threshold is the checkpoint's (chosen from far more scores) plus 0.5, not one
    chosen again from the 20 images alone; the pixel threshold moves by 0.25."""
    rng = np.random.default_rng(1)
    reference = rng.normal(20.0, 1.5, size=20)
    maps = rng.normal(5.0, 1.0, size=(20, 16, 16))
    checkpoint = calibrate(np.r_[reference, rng.normal(20.5, 1.5, size=200)], normal_maps=maps)
    quantised = reference + 0.5 + rng.normal(0, 0.02, size=20)
    moved, source = quantised_calibration(checkpoint, reference, maps, quantised, maps + 0.25, "int8")
    assert moved.threshold == pytest.approx(checkpoint.threshold + 0.5, abs=0.02)
    assert moved.pixel_threshold == pytest.approx(checkpoint.pixel_threshold + 0.25, abs=1e-6)
    assert moved.target_fpr == checkpoint.target_fpr and moved.validation_count == checkpoint.validation_count
    assert source.startswith("checkpoint, threshold moved by +0.49") and "20 validation images" in source
    # recalibrating on the 20 quantised scores alone (the former rule) lands elsewhere
    assert abs(calibrate(quantised).threshold - moved.threshold) > 0.1


def test_video_cues_are_standardised_at_the_level_the_final_model_gives_normal_frames(monkeypatch):
    """stfeatures standardises each cue on training frames scored by the other fold's memories, which learned half
    the clips (their coresets, of a fixed size, may score normal frames higher or lower). The shift is measured on
    the two held-out clips and the cues' means are moved by it: every score of the final model moves by the shift
    (standard units, saved in the calibration), the cross-fitted frames keep theirs, and the threshold is the rule's
    on both as they now stand."""
    from test_video_features import SETTINGS, clip

    from anomalens.models.video.stfeatures import SpatioTemporalFeatures

    train, validation, new = [clip(seed)[0] for seed in range(4)], [clip(10)[0], clip(12)[0]], clip(11, n_frames=40)[0]
    corrected = create_detector("stfeatures", **SETTINGS).fit_clips(train, validation)
    shift = corrected.calibration_.fold_shift
    assert shift is not None and shift != 0.0 and corrected.calibration_.fold_shift_items > 0
    unmeasured = SpatioTemporalFeatures._cue_shifts

    def no_shift(self, held_out, memories, reporter):
        return unmeasured(self, [], memories, reporter)  # nothing held out: nothing taken off

    monkeypatch.setattr(SpatioTemporalFeatures, "_cue_shifts", no_shift)
    plain = create_detector("stfeatures", **SETTINGS).fit_clips(train, validation)
    assert plain.calibration_.fold_shift == 0.0
    level, plain_level = np.mean(corrected.predict_clip(new).scores), np.mean(plain.predict_clip(new).scores)
    assert level == pytest.approx(plain_level + shift, abs=1e-3)  # the same scores, on the corrected scale
    cross, lengths = corrected._cross_validated_scores()
    assert np.allclose(cross, plain._cross_validated_scores()[0], atol=1e-4)
    held_out = [plain.predict_clip(v).scores + shift for v in validation]
    expected = calibrate(np.concatenate([*held_out, cross]), series_lengths=[len(h) for h in held_out] + list(lengths))
    assert corrected.calibration_.threshold == pytest.approx(expected.threshold, abs=1e-3)


def test_report_and_ui_lines_say_what_was_taken_off():
    from anomalens.metrics.threshold import Calibration, false_alarm_line

    cal = Calibration(threshold=2.0, scale=1.0, target_fpr=0.01, validation_mean=0.0, validation_std=1.0,
                      validation_max=2.5, validation_count=60, fold_shift=0.43, fold_shift_items=6.0)
    assert "cross-fitted scores lowered by 0.43" in cal.false_alarm_text()
    assert "cross-fitted scores lowered by 0.43" in false_alarm_line(cal.false_alarm_summary())
    assert "lowered" not in false_alarm_line({**cal.false_alarm_summary(), "cross_fitted_shift": None})
