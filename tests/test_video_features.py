"""The default video model on a synthetic conveyor: appearance and motion anomalies outscore normal frames."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from anomalens.data.preprocessing import Preprocessing
from anomalens.data.synthetic_video import ANOMALY_TYPES, synthetic_clip
from anomalens.errors import DataError
from anomalens.models.base import create_detector, load_detector
from anomalens.models.video.motion import FlowStream, flow_view, orientation_histograms, sector_tolerance, typical_flow
from anomalens.models.components.sampler import Reservoir, batched_greedy_coreset
from anomalens.models.components.kernels import gaussian_smooth_1d
from anomalens.models.video.stfeatures import PositionalMemory

SIZE = (96, 128)
# re-encoded training copies are left out of the shared model (at 96x128 a JPEG at quality 20 or half size is
# not a camera's footage); test_training_re_encodings_* covers them
SETTINGS = dict(image_size=SIZE, appearance_memory=512, motion_memory=64, batch_size=4, training_degradations=())


def clip(seed: int, n_frames: int = 40, anomaly: str | None = None) -> tuple[list[torch.Tensor], np.ndarray]:
    frames, labels = synthetic_clip(seed, n_frames=n_frames, size=SIZE, anomaly=anomaly)
    prep = Preprocessing(image_size=SIZE)
    return [prep.prepare_array(f) for f in frames], labels


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random anomalous frame outscores a random normal one (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


@pytest.fixture(scope="module")
def fitted():
    train = [clip(seed)[0] for seed in range(4)]
    validation = [clip(10)[0], clip(11)[0]]
    return create_detector("stfeatures", **SETTINGS).fit_clips(train, validation)


@pytest.mark.parametrize("anomaly", ANOMALY_TYPES)
def test_anomalous_frames_outscore_normal_ones(fitted, anomaly):
    frames, labels = clip(100 + ANOMALY_TYPES.index(anomaly), n_frames=60, anomaly=anomaly)
    result = fitted.predict_clip(frames)
    assert labels.sum() > 0 and (labels == 0).sum() > 0
    assert auroc(result.scores, labels) > 0.9, anomaly
    # the threshold from normal validation clips flags most of the anomaly
    assert result.labels[labels == 1].mean() > 0.5, anomaly


def test_normal_clip_stays_mostly_below_threshold(fitted):
    frames, _ = clip(200, n_frames=60)
    result = fitted.predict_clip(frames)
    assert result.labels.mean() < 0.25
    assert 0.0 < result.normalized_scores.mean() < 0.5


def test_drift_fires_on_footage_unlike_training_and_not_on_new_normal_footage(fitted):
    """Known inputs: a new normal clip of the same line, and the same clip under light at 40% or seen through
    fog (contrast halved): the whole frame changes, so the typical distance leaves the fit-time range."""
    from anomalens.metrics.drift import assess_drift

    frames, _ = clip(210, n_frames=30)
    normal = assess_drift(fitted.predict_clip(frames), fitted.drift_reference_)
    assert normal is not None and not normal.drifted
    darker = [(f.float() * 0.4).round().to(torch.uint8) for f in frames]
    foggy = [(f.float() * 0.5 + 100).round().to(torch.uint8) for f in frames]
    for changed in (darker, foggy):
        verdict = assess_drift(fitted.predict_clip(changed), fitted.drift_reference_)
        assert verdict.drifted and verdict.deviation > 2.0


def test_the_threshold_also_hears_training_clips_scored_by_memories_that_never_saw_them():
    """Known inputs: one of four training clips is filmed under dimmer light. The held-out clip is an ordinary one,
    so alone it sets a threshold from one scene; cross-validated, the dim clip is scored by the fold that did not
    learn it, at its own higher level (its frame noise shrunk as predict_clip's smoothing would), and the
    threshold makes room for it."""

    train = [clip(seed)[0] for seed in range(4)]
    train[3] = [(f.float() * 0.75).round().to(torch.uint8) for f in train[3]]
    validation = [clip(10)[0]]
    detector = create_detector("stfeatures", **SETTINGS, threshold_from_folds=True).fit_clips(train, validation)
    extra = detector._cross_validated_scores()
    held_out = detector.predict_clip(validation[0]).scores
    assert extra is not None and detector.calibration_.validation_count == len(held_out) + len(extra[0])
    # clip by clip: each of the four training clips is one series of the threshold's autocorrelation count
    assert len(extra[1]) == 4 and sum(extra[1]) == len(extra[0])
    dim = extra[0][-extra[1][-1]:]  # the last clip's frames come last
    assert np.median(dim) > np.median(held_out) + 0.5  # the dim footage runs higher than the ordinary clip ...
    assert dim.max() < detector.calibration_.threshold  # ... and stays below the threshold
    # the rate with each clip judged by the threshold of the others is measured and saved
    assert detector.calibration_.clip_held_out_fpr is not None


def test_without_held_out_clips_each_training_frame_counts_once():
    """No validation clips: the threshold once heard the training clips twice, scored by the memories that learned
    them (low) and cross-validated, and called the first "held-out"; now only the cross-validated frames count."""
    from anomalens.progress import Reporter

    lines: list[str] = []
    train = [clip(seed)[0] for seed in range(4)]
    detector = create_detector("stfeatures", **SETTINGS).fit_clips(
        train, [], Reporter(show_tqdm=False, callback=lambda message, *_: lines.append(message)))
    extra = detector._cross_validated_scores()
    assert extra is not None and detector.calibration_.validation_count == len(extra[0]) > 0
    assert any("cross-validated frames of 4 training clips (no held-out clips)" in line for line in lines)
    assert not any("held-out clip(s) and" in line for line in lines)
    assert detector.drift_reference_ is None  # the training clips' own maps run low: no range is claimed


def test_outputs_have_one_entry_per_frame(fitted):
    frames, _ = clip(300, n_frames=23)
    result = fitted.predict_clip(frames)
    assert result.scores.shape == (23,) and result.scores.dtype == np.float32
    assert result.maps.shape == (23, SIZE[0] // 8, SIZE[1] // 8) and result.maps.dtype == np.float16
    assert result.views.shape == (23, 3, SIZE[0] // 2, SIZE[1] // 2) and result.views.dtype == np.uint8
    assert np.isfinite(result.scores).all()
    assert set(result.cues) == {"appearance", "motion"}
    np.testing.assert_allclose(result.cues["appearance"] + result.cues["motion"], result.scores, atol=1e-5)


def test_scoring_a_long_clip_shows_its_progress_and_stops_on_request(fitted, monkeypatch):
    from anomalens.errors import Cancelled
    from anomalens.models.video import stfeatures
    from anomalens.progress import Reporter

    frames, _ = clip(302, n_frames=23)  # batches of 4: 4 + 4 x 4 + 3 -> 6 steps
    steps: list[tuple[str, int, int | None]] = []
    record = Reporter(callback=lambda stage, done, total, info: steps.append((stage, done, total)), show_tqdm=False)
    fitted.predict_clip(frames, record)
    assert not [s for s in steps if s[0].startswith("score frames")]  # a short clip: no bar of its own
    monkeypatch.setattr(stfeatures, "LONG_CLIP_FRAMES", 20)  # as if it were long
    fitted.predict_clip(frames, record)
    scoring = [(done, total) for stage, done, total in steps if stage.startswith("score frames")]
    assert scoring == [(i, 6) for i in range(7)]
    stop = threading.Event()
    presses: list[int] = []

    def press_after_two(stage: str, done: int, total: int | None, info: str) -> None:
        presses.append(done)
        if done == 2:
            stop.set()

    with pytest.raises(Cancelled):  # the UI's Cancel: the next step stops
        fitted.predict_clip(frames, Reporter(callback=press_after_two, cancel_event=stop, show_tqdm=False))
    assert presses[-1] == 2


def test_single_frame_clip_is_scored(fitted):
    frames, _ = clip(301, n_frames=8)
    assert fitted.predict_clip(frames[:1]).scores.shape == (1,)


def test_fields_added_later_load_with_the_value_old_models_were_fitted_with(fitted, tmp_path, monkeypatch):
    """A field missing from a saved config takes SAVED_BEFORE's value (how old models were fitted), not the default."""
    import json

    from anomalens.models.video.stfeatures import SpatioTemporalConfig

    fitted.save(tmp_path / "model")
    config_path = tmp_path / "model" / "config.json"
    meta = json.loads(config_path.read_text())
    for field in ("input_blur", "training_degradations"):
        del meta["config"][field]
    config_path.write_text(json.dumps(meta))
    monkeypatch.setattr(SpatioTemporalConfig, "SAVED_BEFORE", {"input_blur": 0.75, "training_degradations": ()})
    loaded = load_detector(tmp_path / "model", kind="video")
    assert loaded.config.input_blur == 0.75 and loaded.config.training_degradations == ()


def test_models_saved_before_the_robust_cues_score_as_they_were_fitted(fitted, tmp_path):
    import json

    fitted.save(tmp_path / "model")
    config_path = tmp_path / "model" / "config.json"
    meta = json.loads(config_path.read_text())
    assert {"flow_min_contrast", "appearance_above_typical"} <= set(meta["config"])
    for field in ("flow_min_contrast", "appearance_above_typical"):
        del meta["config"][field]
    config_path.write_text(json.dumps(meta))
    loaded = load_detector(tmp_path / "model", kind="video")
    assert loaded.config.flow_min_contrast == 0.0 and loaded.config.appearance_above_typical is False


def test_training_re_encodings_make_compressed_normal_video_look_normal():
    """Trained on clean frames, a JPEG-compressed normal clip scores lower on appearance once JPEG copies are part
    of training (the mechanism behind --training-degradations)."""
    from anomalens.models.video.degrade import jpeg_degrade

    train = [clip(seed)[0] for seed in range(3)]
    validation = [clip(10)[0]]
    alone = {**SETTINGS, "codec_memory": ()}  # the mechanism on its own, without the codec memory's own discount
    plain = create_detector("stfeatures", **alone).fit_clips(train, validation)
    robust = create_detector("stfeatures", **{**alone, "training_degradations": ("jpeg:15",)}).fit_clips(train, validation)
    frames = clip(20)[0]
    compressed = list(jpeg_degrade(torch.stack(frames), 15))
    shift = {}
    for name, detector in (("plain", plain), ("robust", robust)):
        clean = np.median(detector.predict_clip(frames).cues["appearance"])
        shift[name] = np.median(detector.predict_clip(compressed).cues["appearance"]) - clean
    assert shift["robust"] < shift["plain"]

def test_same_seed_same_model():
    train, validation = [clip(0, 24)[0], clip(1, 24)[0]], [clip(2, 24)[0]]
    a = create_detector("stfeatures", **SETTINGS).fit_clips(train, validation)
    b = create_detector("stfeatures", **SETTINGS).fit_clips(train, validation)
    frames, _ = clip(3, 24, anomaly="speed_change")
    np.testing.assert_array_equal(a.predict_clip(frames).scores, b.predict_clip(frames).scores)


def test_cues_are_standardised_on_cross_fitted_frames_or_on_validation(fitted):
    # four training clips: two folds, each scored by the other's memories, so that normal frames average near 0
    # after standardisation (mean of each cue subtracted) and the spread is positive
    assert fitted.standardisation_.shape == (4,) and (fitted.standardisation_[[1, 3]] > 0).all()
    frames, _ = clip(500, n_frames=40)
    assert abs(float(np.mean(fitted.predict_clip(frames).scores))) < 2.0
    # one short training clip cannot make two folds: the validation clip standardises instead
    single = create_detector("stfeatures", **SETTINGS).fit_clips([clip(0, 24)[0]], [clip(1, 24)[0]])
    assert torch.isfinite(single.standardisation_).all() and (single.standardisation_[[1, 3]] > 0).all()
    assert np.isfinite(single.predict_clip(frames).scores).all()


def test_frames_of_the_wrong_size_are_refused(fitted):
    with pytest.raises(DataError, match="expected the model's 128x96"):
        fitted.predict_clip([torch.zeros(3, 64, 64, dtype=torch.uint8)])


def test_flow_recovers_a_known_shift():
    y, x = np.mgrid[0:64, 0:96].astype(np.float32)
    pattern = lambda dx, dy: (127 + 60 * np.sin((x - dx) / 3.0) + 60 * np.cos((y - dy) / 4.0)).astype(np.uint8)  # noqa: E731
    stream = FlowStream("medium")
    assert stream.push(pattern(0, 0)) is None
    flow = stream.push(pattern(2, -1))
    assert flow.shape == (2, 64, 96)
    centre = flow[:, 16:48, 24:72]
    assert abs(float(np.median(centre[0])) - 2.0) < 0.25 and abs(float(np.median(centre[1])) + 1.0) < 0.25


def test_flow_on_flat_noise_is_not_trusted_and_on_texture_it_is():
    # codec noise on a flat wall: DIS returns random vectors there; weighted by texture they vanish (motion.py)
    rng = np.random.default_rng(0)
    noisy = lambda: np.clip(128 + 3.0 * rng.standard_normal((64, 96)), 0, 255).astype(np.uint8)  # noqa: E731
    raw, trusted = FlowStream("medium"), FlowStream("medium", min_contrast=4.0)
    frames = [noisy() for _ in range(4)]
    raw_speed = [np.hypot(*f) for f in map(raw.push, frames) if f is not None]
    trusted_speed = [np.hypot(*f) for f in map(trusted.push, frames) if f is not None]
    assert np.quantile(raw_speed, 0.95) > 3.0  # what the motion memory used to see on a static scene
    assert np.quantile(trusted_speed, 0.95) < 0.3
    # a textured pattern moving 2 px per frame keeps its speed
    y, x = np.mgrid[0:64, 0:96].astype(np.float32)
    pattern = lambda dx: (127 + 60 * np.sin((x - dx) / 3.0) + 60 * np.cos(y / 4.0)).astype(np.uint8)  # noqa: E731
    stream = FlowStream("medium", min_contrast=4.0)
    stream.push(pattern(0))
    flow = stream.push(pattern(2))[:, 16:48, 24:72]
    assert float(np.median(flow[0])) > 1.5


def test_orientation_histogram_puts_speed_in_the_right_bin():
    flow = torch.zeros(1, 2, 48, 48)
    flow[0, 0, 8:24, 8:24] = 3.0  # a square moving right at 3 px/frame
    histograms = orientation_histograms(flow, bins=8, cell=8)
    assert histograms.shape == (1, 8, 6, 6)
    # angle 0 falls at the start of bin 4 (bins cover -pi..pi); the square fills cell (1, 1)'s 16x16 window
    # by three quarters
    assert torch.isclose(histograms[0, 4, 1, 1], torch.tensor(3.0 * 144 / 256))
    assert histograms[0, :4].abs().max() == 0 and histograms[0, 5:].abs().max() == 0
    assert histograms[0, 4, 5, 5] == 0  # far from the square: no motion


def test_motion_view_shows_motion_relative_to_the_normal_motion():
    # A conveyor belt that always moves right at about 3 px/frame: shown raw it saturates the whole view (issue 15)
    rng = np.random.default_rng(0)
    belt = torch.zeros(20, 2, 48, 64)
    belt[:, 0] = 3.0 * (1 + 0.03 * torch.from_numpy(rng.standard_normal((20, 1, 1))).float())
    belt[:, 1] = 0.3
    belt += 0.2 * torch.from_numpy(rng.standard_normal(belt.shape)).float()
    usual = typical_flow(orientation_histograms(belt, bins=8, cell=8), (48, 64), neighbours=1)
    assert usual.shape == (9, 2, 48, 64)  # the usual flow of each cell and of its 8 neighbours
    tolerance = sector_tolerance(usual, bins=8)
    # the belt's motion, known to half a histogram sector
    assert abs(np.hypot(*usual[4, :, 24, 32]) - np.hypot(3.0, 0.3)) < 0.3
    assert np.hypot(*(usual[4, :, 24, 32] - [3.0, 0.3])) <= tolerance[4, 24, 32]
    grey = np.full((48, 64), 128, np.uint8)
    tint = lambda view: np.abs(view.astype(int) - 128).max(axis=0).mean()  # noqa: E731  0 = plain grey
    running, stopped = belt[5].numpy(), np.zeros((2, 48, 64), np.float32)
    assert tint(flow_view(grey, running, full_speed=2.9)) > 100  # raw: saturated
    assert tint(flow_view(grey, running, 2.9, usual, tolerance)) < 15  # normal motion: the grey photo
    assert tint(flow_view(grey, stopped, 2.9, usual, tolerance)) > 40  # the belt stopped: coloured


def test_reservoir_keeps_a_uniform_bounded_sample():
    reservoir = Reservoir(capacity=500, seed=0)
    for start in range(0, 10_000, 256):
        reservoir.add(torch.arange(start, min(start + 256, 10_000), dtype=torch.float32)[:, None])
    sample = reservoir.sample[:, 0]
    assert sample.shape == (500,) and len(set(sample.tolist())) == 500  # no row twice
    # uniform over the stream: each tenth of it holds about a tenth of the sample
    counts = torch.histc(sample, bins=10, min=0, max=10_000)
    assert counts.min() > 25 and counts.max() < 75
    again = Reservoir(capacity=500, seed=0)
    for start in range(0, 10_000, 256):
        again.add(torch.arange(start, min(start + 256, 10_000), dtype=torch.float32)[:, None])
    assert torch.equal(again.sample, reservoir.sample)


def test_reservoir_tags_travel_with_their_rows():
    """Known inputs: row i carries the value i and the tags (i // 100, i); after sampling, every kept row still has
    its own tags (how cross-fitted frames are put back in their clip)."""
    reservoir = Reservoir(capacity=64, seed=3)
    for start in range(0, 1000, 90):
        numbers = torch.arange(start, min(start + 90, 1000))
        reservoir.add(numbers.float()[:, None], torch.stack([numbers // 100, numbers], dim=1))
    rows, tags = reservoir.sample[:, 0].long(), reservoir.sample_tags
    assert tags is not None and tags.shape == (64, 2)
    assert torch.equal(tags[:, 1], rows) and torch.equal(tags[:, 0], rows // 100)
    untagged = Reservoir(capacity=4)
    untagged.add(torch.zeros(10, 1))
    assert untagged.sample_tags is None


def test_coreset_keeps_outliers_and_memory_finds_them():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(3, 200, 8, generator=generator) * 0.1
    points[:, 17] += 10.0  # one far-away normal sample per cell must be remembered
    picked = batched_greedy_coreset(points, 10)
    assert picked.shape == (3, 10) and all(17 in row.tolist() for row in picked)
    memory = PositionalMemory.build(points.permute(1, 2, 0).reshape(200, 8, 1, 3), size=10, tolerance=0, seed=0)
    query = torch.zeros(1, 8, 1, 3)
    query[0, :, 0, 1] = 10.0  # cell 1 sees its outlier again: close to memory
    distances = memory.distances(query)[0, 0]
    assert distances[1] < 0.5 and distances[0] < 1.0


def test_gaussian_smoothing_keeps_length_and_constants():
    values = np.full(7, 3.0)
    np.testing.assert_allclose(gaussian_smooth_1d(values, 2.0), values, rtol=1e-6)
    assert gaussian_smooth_1d(np.arange(5.0), 3.0).shape == (5,)


def test_frame_buffer_spills_to_disk_beyond_its_memory_limit():
    from anomalens.models.video.base import FrameBuffer

    small = FrameBuffer(memory_limit=1 << 20)
    small.append(np.zeros((2, 3, 8, 8), np.uint8))
    assert not isinstance(small.array(), np.memmap) and small.array().shape == (2, 3, 8, 8)
    buffer = FrameBuffer((3, 8, 8), memory_limit=1000)  # 192 bytes per frame: spills at the sixth frame
    for i in range(10):
        buffer.append(np.full((2, 3, 8, 8), i, np.uint8))
    frames = buffer.array()
    assert isinstance(frames, np.memmap) and frames.shape == (20, 3, 8, 8)
    np.testing.assert_array_equal(frames[:, 0, 0, 0], np.repeat(np.arange(10), 2))
    with pytest.raises(ValueError, match="expected"):
        buffer.append(np.zeros((1, 3, 4, 4), np.uint8))


def test_low_pass_and_jpeg_degradation_keep_shape_and_content():
    from anomalens.models.components.kernels import gaussian_blur as low_pass
    from anomalens.models.video.degrade import jpeg_degrade

    frames = torch.stack(clip(5, n_frames=8)[0][:2])
    degraded = jpeg_degrade(frames, 20)
    assert degraded.shape == frames.shape and degraded.dtype == torch.uint8
    difference = (degraded.float() - frames.float()).abs()
    assert 0.5 < difference.mean() < 12  # visibly compressed, still the same scene
    floats = frames.float() / 255
    assert torch.equal(low_pass(floats, 0.0), floats)
    blurred = low_pass(floats, 1.5)
    assert blurred.shape == floats.shape
    assert blurred.mean().item() == pytest.approx(floats.mean().item(), abs=2e-3)  # a low-pass keeps the mean
    noise = torch.randn(1, 3, 64, 64) * 0.1
    assert low_pass(noise, 1.5).std() < 0.3 * noise.std()  # and removes pixel noise


def test_cross_fitted_scores_keep_each_clips_level_and_lose_frame_noise():
    """Known inputs: two clips of white noise around levels 0 and 5. Smoothing in time (sigma 2) would shrink the
    noise by sqrt(sum of squared taps) = 0.376 and keep the levels: so does as_if_smoothed, clip by clip."""
    from anomalens.models.components.kernels import gaussian_smooth_1d
    from anomalens.models.video.stfeatures import as_if_smoothed

    rng = np.random.default_rng(0)
    noise = rng.normal(0.0, 1.0, (2, 4000))
    scores = np.concatenate([noise[0], 5.0 + noise[1]])
    out = as_if_smoothed(scores, [4000, 4000], 2.0)
    assert abs(np.median(out[:4000])) < 0.05 and abs(np.median(out[4000:]) - 5.0) < 0.05
    assert np.std(out[4000:]) == pytest.approx(0.376 * np.std(scores[4000:]), rel=0.01)
    # what the smoothing of a whole series does to white noise: the same spread
    assert np.std(out[:4000]) == pytest.approx(np.std(gaussian_smooth_1d(noise[0], 2.0)), rel=0.05)
    assert np.array_equal(as_if_smoothed(scores, [8000], 0.0), scores)
