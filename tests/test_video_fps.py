"""Motion per second of the training footage (``motion_per_second``): the same conveyor stored at half the frame rate
moves as fast as in training once its flow is scaled by ``fps / training_fps``; clips at the training rate, or of
unknown rate, score exactly as without the setting; the saved rate round-trips, a bad one is refused, and the live
scorer agrees with predict_clip (the exported bundle: tests/test_export_video.py). A rate counts only when stated (by
the file, labels_frame.json or the user): a raw MJPEG stream's "25 fps" is FFmpeg's guess, so it is unknown."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from anomalens.data.video_io import encode_video, open_clip, probe_video
from anomalens.errors import CheckpointError
from anomalens.live.sources import VideoFileSource
from anomalens.models.base import create_detector, load_detector
from anomalens.models.video.stfeatures import training_rate
from test_video_features import SETTINGS, SIZE

TRAINING_FPS = 10.0


class RatedClip(list):
    """Preprocessed frames with a stated frame rate, as a decoded VideoClip carries one."""

    def __init__(self, frames, fps: float) -> None:
        super().__init__(frames)
        self.fps = self.stated_fps = fps


def sliding_texture(seed: int, n_frames: int, speed: int = 2) -> list[torch.Tensor]:
    """A smooth random texture sliding right by ``speed`` pixels per frame, at the model's size: every window has
    texture and none repeats, so DIS measures twice the step exactly (the conveyor's stripes repeat every 12 pixels,
    where a doubled step can alias)."""
    height, width = SIZE
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.uniform(0, 255, (height, width + speed * n_frames)).astype(np.float32), (0, 0), 2.0)
    grey = cv2.normalize(noise, None, 20, 235, cv2.NORM_MINMAX).astype(np.uint8)
    frames = [grey[:, speed * (n_frames - t) : speed * (n_frames - t) + width] for t in range(n_frames)]
    return [torch.from_numpy(np.repeat(frame[None], 3, axis=0).copy()) for frame in frames]


@pytest.fixture(scope="module")
def model():
    train = [RatedClip(sliding_texture(seed, 32), TRAINING_FPS) for seed in range(4)]
    return create_detector("stfeatures", **SETTINGS).fit_clips(train, [RatedClip(sliding_texture(10, 32), TRAINING_FPS)])


@pytest.fixture(scope="module")
def normal_clip():
    return sliding_texture(200, 48)


def test_half_the_frame_rate_moves_as_in_training_once_rescaled(model, normal_clip):
    assert model.training_fps_ == TRAINING_FPS
    full = model.predict_clip(RatedClip(normal_clip, TRAINING_FPS), views=False).cues["motion"]
    half_frames = normal_clip[::2]  # a recorder at half the rate: every second frame, each step twice as far
    rescaled = model.predict_clip(RatedClip(half_frames, TRAINING_FPS / 2), views=False).cues["motion"]
    per_frame = model.predict_clip(half_frames, views=False).cues["motion"]  # rate unknown: per frame, as before
    inner = slice(2, -2)  # away from the ends, where the temporal Gaussian sees fewer frames in the shorter clip
    gap_rescaled = np.abs(rescaled - full[::2])[inner].mean()
    gap_per_frame = np.abs(per_frame - full[::2])[inner].mean()
    # doubled speeds are far from every normal motion of the cells; rescaled, they are the training footage's own
    assert per_frame[inner].mean() > full[::2][inner].mean() + 3.0
    # close in standard units: this scene's normal motion hardly varies (a spread of a few hundredths of a pixel),
    # so DIS's sub-pixel error at twice the step still reads as a few units; per frame it reads as a hundred
    assert gap_rescaled < 0.1 * gap_per_frame


def test_equal_or_unknown_rates_score_exactly_as_without_rescaling(model, normal_clip):
    unknown = model.predict_clip(normal_clip, views=False)
    same_rate = model.predict_clip(RatedClip(normal_clip, TRAINING_FPS), views=False)
    assert np.array_equal(unknown.scores, same_rate.scores) and np.array_equal(unknown.maps, same_rate.maps)
    assert model.flow_scale(TRAINING_FPS) == 1.0 and model.flow_scale(None) == 1.0 and model.flow_scale(5.0) == 0.5


def test_live_scorer_rescales_as_predict_clip(model, normal_clip):
    half = normal_clip[::2]
    offline = model.predict_clip(RatedClip(half, TRAINING_FPS / 2), views=False)
    scorer = model.causal_scorer(fps=TRAINING_FPS / 2)
    live = [r for i in range(0, len(half), 4) for r in scorer.push(torch.stack(half[i:i + 4]))] + scorer.finish()
    np.testing.assert_allclose([r.score for r in live], offline.scores, atol=1e-4)


def test_training_rate_round_trips_and_a_bad_one_is_refused(model, normal_clip, tmp_path):
    from _saved_tensors import rewrite_weights
    from safetensors.torch import load_file

    half = RatedClip(normal_clip[::2], TRAINING_FPS / 2)
    expected = model.predict_clip(half, views=False).scores
    model.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model", kind="video")
    assert loaded.training_fps_ == TRAINING_FPS and loaded.config.motion_per_second is True
    np.testing.assert_allclose(loaded.predict_clip(half, views=False).scores, expected, atol=1e-5)

    weights = tmp_path / "model" / "weights.safetensors"
    tensors = load_file(weights)
    for bad in (-10.0, float("nan"), 1e9):
        rewrite_weights(weights, {**tensors, "training_fps": torch.tensor([bad], dtype=torch.float64)})
        with pytest.raises(CheckpointError, match="training_fps"):
            load_detector(tmp_path / "model", kind="video")
    rewrite_weights(weights, {name: value for name, value in tensors.items() if name != "training_fps"})
    with pytest.raises(CheckpointError, match="training_fps"):
        load_detector(tmp_path / "model", kind="video")
    # a model saved before the setting existed (no field, no rate): motion per frame, as it scored then
    config_path = tmp_path / "model" / "config.json"
    meta = json.loads(config_path.read_text())
    del meta["config"]["motion_per_second"]
    config_path.write_text(json.dumps(meta))
    old = load_detector(tmp_path / "model", kind="video")
    assert old.config.motion_per_second is False and old.training_fps_ is None and old.flow_scale(5.0) == 1.0


@pytest.fixture(scope="module")
def camera_files(tmp_path_factory):
    """The same 5 fps footage as a raw MJPEG elementary stream (no timestamps, no rate anywhere), in AVI (rate in the
    header) and as a raw H.264 stream (rate in its VUI timing; FFmpeg's average rate still says 25)."""
    folder = tmp_path_factory.mktemp("camera")
    frames = [frame.permute(1, 2, 0).numpy() for frame in sliding_texture(300, 20)]
    mjpeg = dict(codec="mjpeg", pix_fmt="yuvj420p")
    return {"mjpeg": encode_video(folder / "camera.mjpeg", frames, 5, container="mjpeg", **mjpeg),
            "avi": encode_video(folder / "camera.avi", frames, 5, container="avi", **mjpeg),
            "h264": encode_video(folder / "camera.h264", frames, 5, codec="libx264", pix_fmt="yuv420p", container="h264")}


def test_only_a_stated_rate_counts_and_the_user_states_one(model, camera_files):
    prep = model.preprocessing
    raw = open_clip(camera_files["mjpeg"], prep)
    assert raw.stated_fps is None and raw.fps == 25.0  # 25 for timing only
    assert open_clip(camera_files["mjpeg"], prep, fps=5).stated_fps == 5.0  # --fps states it
    assert open_clip(camera_files["avi"], prep).stated_fps == 5.0
    assert open_clip(camera_files["h264"], prep).stated_fps == 5.0  # was read as FFmpeg's 25 before
    assert probe_video(camera_files["mjpeg"])["fps"] == 0.0 and probe_video(camera_files["h264"])["fps"] == 5.0
    source = VideoFileSource(camera_files["mjpeg"])  # the watcher's file source: the same rule
    assert source.stated_fps is None and source.fps == 25.0
    # a model trained on such clips saves no guessed rate; a stated one among them is theirs
    assert training_rate([raw, raw]) is None and training_rate([raw, open_clip(camera_files["avi"], prep)]) == 5.0


def test_an_unstated_rate_leaves_motion_per_frame_and_a_stated_one_rescales_it(model, camera_files):
    """Trained at 10 fps: the raw stream scores exactly as its frames given with no rate (scale 1, not 25 / 10);
    stated at 5 fps (the user's --fps, or the AVI) it scores as those frames at 5 fps."""
    raw = open_clip(camera_files["mjpeg"], model.preprocessing)
    frames = list(raw)
    unstated = model.predict_clip(raw, views=False).scores
    assert np.array_equal(unstated, model.predict_clip(frames, views=False).scores)
    stated = model.predict_clip(open_clip(camera_files["mjpeg"], model.preprocessing, fps=5), views=False).scores
    assert np.array_equal(stated, model.predict_clip(RatedClip(frames, 5.0), views=False).scores)
    assert np.abs(stated - unstated).max() > 0.1  # the rate matters for this model: the comparison can fail


def test_ped2_frame_folders_state_no_rate_so_their_flow_is_untouched(ped2_root, model):
    """UCSD Ped2 (frame folders; its labels_frame.json has no _meta.fps): unknown rate, so a scale of exactly 1, as the
    25 / 25 of before: its scores are bit-identical, and a model trained on it now saves no training_fps."""
    from anomalens.data.video_datasets import discover_video_category

    category = discover_video_category(ped2_root, "ucsd_ped2")
    clips = [ref.open(model.preprocessing) for ref in (category.train[0], category.test[0])]
    assert [clip.stated_fps for clip in clips] == [None, None] and training_rate(clips) is None
    assert model.flow_scale(clips[1].stated_fps) == 1.0
