"""The video workflow end to end on synthetic conveyor video: train, evaluate, analyse, and bad input.

Most tests use a tiny colour-rarity video detector defined here (fast and deterministic), so they check
the workflow and not a model; one test runs the default model ``stfeatures``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anomalens.data.synthetic_video import make_synthetic_video_dataset
from anomalens.data.video_datasets import discover_video_category
from anomalens.data.video_io import open_clip, probe_video, write_video
from anomalens.errors import CheckpointError, ConfigError, DataError
from anomalens.metrics.events import clip_frame_auroc, event_flags
from anomalens.models.base import MODEL_REGISTRY, DetectorConfig
from anomalens.models.video.base import ClipPrediction, VideoDetector
from anomalens.progress import Reporter
from anomalens.workflows.evaluate import evaluate_video_model
from anomalens.workflows.predict import analyze_video
from anomalens.workflows.train import split_video_clips, train_video_model

CATEGORY = "synthetic_conveyor"
BINS = 8  # colour levels per channel


@dataclass
class TinyConfig(DetectorConfig):
    image_size: tuple[int, int] = (48, 64)
    sequence_length: int = 2


class TinyVideoDetector(VideoDetector):
    """Pixels whose colour was rare in normal frames are anomalous; the frame score is the hottest 4x4 block."""

    name = "tinyvideo"
    config_class = TinyConfig

    def _fit_clips(self, train, validation, reporter):
        counts = torch.zeros(BINS**3)
        for clip in reporter.iter(list(train), "fit"):
            for frame in clip:
                counts += torch.bincount(self._bins(frame).ravel(), minlength=BINS**3).float()
        self.rarity_ = -torch.log((counts + 1) / (counts.sum() + BINS**3))

    def _bins(self, frame: torch.Tensor) -> torch.Tensor:
        q = frame.long() * BINS // 256
        return q[0] * BINS * BINS + q[1] * BINS + q[2]

    def _predict_clip(self, clip, reporter, views=True):
        scores, maps, views = [], [], []
        for frame in clip:
            heat = self.rarity_[self._bins(frame)]
            pooled = F.avg_pool2d(heat[None, None], 4)[0, 0]
            scores.append(float(pooled.max()))
            maps.append(pooled.numpy().astype(np.float16))
            views.append(frame.numpy())
        if len(scores) < self.config.sequence_length:
            raise ConfigError(f"the clip has {len(scores)} frames, fewer than --sequence-length", clip.path)
        return ClipPrediction(np.array(scores, np.float32), np.stack(maps), np.stack(views))

    def state_tensors(self):
        return {"rarity": self.rarity_}

    def load_state_tensors(self, tensors):
        self.rarity_ = tensors["rarity"]


@pytest.fixture(autouse=True)
def tiny_model():
    MODEL_REGISTRY["tinyvideo"] = f"{__name__}:TinyVideoDetector"
    yield
    MODEL_REGISTRY.pop("tinyvideo", None)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_synthetic_video_dataset(tmp_path_factory.mktemp("video"), n_train=3, n_test=5, n_frames=40, size=(72, 96))


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory) -> Path:
    MODEL_REGISTRY["tinyvideo"] = f"{__name__}:TinyVideoDetector"
    result = train_video_model(dataset, CATEGORY, "tinyvideo", tmp_path_factory.mktemp("results"), device="cpu")
    return Path(result.run_dir)


def test_train_writes_a_video_run_with_held_out_clips(tiny_run):
    run = json.loads((tiny_run / "run.json").read_text())
    assert tiny_run.name.startswith(f"video_{CATEGORY}_")
    assert run["kind"] == "video" and run["category"] == CATEGORY and run["model"] == "tinyvideo"
    assert len(run["validation_clips"]) == 1 and run["validation_clips"][0] not in run["train_clips"]
    assert len(run["train_clips"]) == 2 and run["validation_frames"] == 40
    assert all(name.startswith("train_") for name in run["train_clips"] + run["validation_clips"])  # never a test clip
    assert (tiny_run / "model" / "weights.safetensors").is_file() and (tiny_run / "train.log").read_text()
    assert json.loads((tiny_run / "history.json").read_text()) == []


def test_evaluate_reports_pooled_and_per_clip_frame_auroc(tiny_run):
    result = evaluate_video_model(tiny_run, device="cpu")
    m = json.loads((result.output_dir / "metrics.json").read_text())
    assert m["counts"]["test_clips"] == 5 and m["counts"]["labelled_frames"] == 200
    assert m["per_type"]["foreign_object"]["frame_auroc"] > 0.9  # a blue blob is a colour never seen
    assert m["per_type"]["colour_change"]["frame_auroc"] > 0.9
    assert m["per_clip"]["test_004"]["frame_auroc"] is None  # the normal clip has one class only
    assert 0.0 <= m["frame_auroc"] <= 1.0 and m["video_auroc"] is not None
    assert sorted(p.name for p in result.output_dir.glob("timeline_*.png")) == [f"timeline_test_{i:03d}.png" for i in range(5)]
    rows = list(csv.DictReader(open(result.output_dir / "frame_scores.csv")))
    assert len(rows) == 200 and {r["label"] for r in rows} == {"0", "1"}
    assert "frame AUROC (all test frames pooled)" in result.report_path.read_text()


def test_clips_of_two_types_with_one_name_stay_apart(tiny_run, dataset, tmp_path):
    """test/<type>/01.mp4 in every type folder (the layout invites it) once became one row of per_clip, one
    timeline, and a mean per-clip AUROC over the last clip only."""
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(dataset / CATEGORY, copy / CATEGORY)
    for video in sorted((copy / CATEGORY / "test").rglob("*.mp4")):
        for suffix in (".mp4", ".labels.csv"):
            source = video.with_suffix(suffix)
            if source.exists():
                source.rename(video.with_name("01" + suffix))
    result = evaluate_video_model(tiny_run, copy, CATEGORY, device="cpu")
    m = json.loads((result.output_dir / "metrics.json").read_text())
    types = sorted(p.name for p in (copy / CATEGORY / "test").iterdir())
    assert sorted(m["per_clip"]) == [f"{t}/01" for t in types] and m["counts"]["test_clips"] == len(types)
    assert sorted(p.name for p in result.output_dir.glob("timeline_*.png")) == [f"timeline_{t}_01.png" for t in types]
    aurocs = [v["frame_auroc"] for v in m["per_clip"].values() if v["frame_auroc"] is not None]
    assert len(aurocs) >= 2 and m["mean_clip_frame_auroc"] == pytest.approx(float(np.mean(aurocs)))


def test_analyze_writes_one_output_frame_per_input_frame(tiny_run, dataset, tmp_path):
    video = dataset / CATEGORY / "test" / "foreign_object" / "test_000.mp4"
    truth = discover_video_category(dataset, CATEGORY)
    labels = next(c for c in truth.test if c.name == "test_000").frame_labels
    analysis = analyze_video(tiny_run, video, tmp_path / "out", device="cpu")
    info = probe_video(analysis.side_by_side_path)
    assert info["frames"] == 40 and info["fps"] == pytest.approx(10)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and info["faststart"]
    assert info["width"] % 2 == 0 and info["height"] % 2 == 0
    rows = list(csv.DictReader(open(analysis.scores_csv)))
    assert len(rows) == 40 and list(rows[0]) == ["frame", "time", "score", "normalized_score", "anomalous"]
    assert float(rows[10]["time"]) == pytest.approx(1.0)
    assert clip_frame_auroc(labels, analysis.scores) > 0.9
    events = json.loads(analysis.events_json.read_text())["events"]
    covered = event_flags(events, 40)
    assert covered[labels == 1].mean() > 0.8  # the blob's passage is reported as an event
    longest = max(events, key=lambda e: e["frames"])
    assert labels[longest["start_frame"] : longest["end_frame"] + 1].mean() > 0.8
    assert analysis.timeline_path.is_file() and analysis.anomalous.shape == (40,)


def test_analyze_frame_folder_default_output_and_fps(tiny_run, dataset, tmp_path):
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    clip = open_clip(dataset / CATEGORY / "test" / "normal" / "test_004.mp4", _prep())
    for i, frame in enumerate(clip.iter_native()):
        if i == 12:
            break
        Image.fromarray(frame).save(folder / f"{i}.png")
    analysis = analyze_video(tiny_run, folder, device="cpu", fps=4)
    assert analysis.output_dir.parent == tiny_run / "analysis"
    assert probe_video(analysis.side_by_side_path)["frames"] == 12
    assert analysis.fps == 4 and float(list(csv.DictReader(open(analysis.scores_csv)))[4]["time"]) == pytest.approx(1.0)


def _prep():
    from anomalens.data.preprocessing import Preprocessing

    return Preprocessing(image_size=(48, 64))


def test_truncated_video_is_analysed_up_to_the_damage(tiny_run, dataset, tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (72, 96, 3), dtype=np.uint8) for _ in range(30)]
    data = write_video(tmp_path / "full.mp4", frames, fps=10).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 2 // 3])
    messages: list[str] = []
    reporter = Reporter(callback=lambda stage, *_: messages.append(stage), show_tqdm=False)
    analysis = analyze_video(tiny_run, cut, tmp_path / "out", device="cpu", reporter=reporter)
    n = len(analysis.scores)
    assert 0 < n < 30 and probe_video(analysis.side_by_side_path)["frames"] == n
    assert any("truncated" in m for m in messages)
    assert json.loads(analysis.events_json.read_text())["truncated"] is True


def test_single_training_clip_holds_out_its_tail(dataset):
    refs = discover_video_category(dataset, CATEGORY).train[:1]
    train, validation, names = split_video_clips(refs, _prep(), 0.25, seed=0)
    assert [c.num_frames for c in train] == [30] and [c.num_frames for c in validation] == [10]
    assert names == ["train_000.mp4 [frames 30-39]"]
    assert len(list(validation[0])) == 10


def test_wrong_kind_of_checkpoint_is_refused(tiny_run, tmp_path):
    image_model = tmp_path / "image_run" / "model"
    image_model.mkdir(parents=True)
    from anomalens.models.image.patchcore import PatchCoreConfig

    (image_model / "config.json").write_text(json.dumps({"format_version": 1, "model": "patchcore", "kind": "image",
                                                         "config": PatchCoreConfig().to_dict()}))
    with pytest.raises(CheckpointError, match="image model"):
        analyze_video(image_model.parent, tmp_path / "any.mp4", device="cpu")
    with pytest.raises(CheckpointError, match="image model"):
        evaluate_video_model(image_model.parent, device="cpu")
    from anomalens.workflows.evaluate import evaluate_image_model

    with pytest.raises(CheckpointError, match="video model"):
        evaluate_image_model(tiny_run, device="cpu")


def test_bad_training_input_is_a_clear_error(dataset, tmp_path, synthetic_image_dataset):
    with pytest.raises(ConfigError, match="image model"):
        train_video_model(dataset, CATEGORY, "patchcore", tmp_path, device="cpu")
    image_root, image_category = synthetic_image_dataset
    with pytest.raises(DataError, match="no normal training clips"):
        train_video_model(image_root, image_category, "tinyvideo", tmp_path, device="cpu")
    with pytest.raises(ConfigError, match=r"train_00\d\.mp4.*sequence_length"):  # a setting; the CLI says --sequence-length
        train_video_model(dataset, CATEGORY, "convlstm", tmp_path, device="cpu", image_size=32, sequence_length=100, epochs=1)
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
def test_default_model_end_to_end(tmp_path):
    """stfeatures on a small conveyor: foreign objects outscore normal frames; outputs are well-formed."""
    root = make_synthetic_video_dataset(tmp_path / "data", n_train=2, n_test=1, n_frames=32, size=(96, 128))
    result = train_video_model(root, CATEGORY, "stfeatures", tmp_path / "results", image_size=(96, 128), device="cpu")
    video = root / CATEGORY / "test" / "foreign_object" / "test_000.mp4"
    labels = discover_video_category(root, CATEGORY).test[0].frame_labels
    analysis = analyze_video(result.run_dir, video, tmp_path / "out", device="cpu")
    assert clip_frame_auroc(labels, analysis.scores) > 0.9
    info = probe_video(analysis.side_by_side_path)
    assert info["frames"] == 32 and info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert len(list(csv.DictReader(open(analysis.scores_csv)))) == 32


def _link_frames(source: Path, target: Path, frames: range) -> None:
    """A clip made of links to some real frames (nothing is copied)."""
    target.mkdir(parents=True)
    for index in frames:
        (target / f"{index:03d}.jpg").symlink_to(source / f"{index:03d}.jpg")


@pytest.mark.slow
def test_real_ped2_clips_anomalous_frames_outscore_normal_ones(ped2_root, tmp_path):
    """Real UCSD Ped2 frames (linked, not copied): 2 short normal clips, and test clip 02 around its onset."""
    source = ped2_root / "ucsd_ped2"
    mini = tmp_path / "data" / "ped2_mini"
    for name in ("01", "02"):
        _link_frames(source / "training" / "frames" / name, mini / "training" / "frames" / name, range(0, 60))
    window = range(64, 144)  # the anomaly (a cyclist) enters at frame 94
    _link_frames(source / "testing" / "frames" / "02", mini / "testing" / "frames" / "02", window)
    labels = json.loads((source / "labels_frame.json").read_text())["02"][window.start : window.stop]
    (mini / "labels_frame.json").write_text(json.dumps({"02": labels}))
    assert 0 < sum(labels) < len(labels)
    result = train_video_model(tmp_path / "data", "ped2_mini", "stfeatures", tmp_path / "results", device="cpu")
    metrics = evaluate_video_model(result.run_dir, device="cpu").metrics
    assert metrics["counts"]["labelled_frames"] == 80
    assert metrics["frame_auroc"] > 0.8
