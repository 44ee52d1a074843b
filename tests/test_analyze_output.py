"""analyze-video's output folder: an earlier analysis is kept unless --overwrite, and replaced only by a new one
that was written in full; the run and model folders are never an output folder.

The model is test_video_workflow's tiny colour-rarity video detector (fits in well under a second).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from anomalens.cli import main
from anomalens.data.synthetic_video import make_synthetic_video_dataset
from anomalens.models.base import MODEL_REGISTRY
from anomalens.workflows import predict
from anomalens.workflows.predict import analyze_video
from anomalens.workflows.train import train_video_model

CATEGORY = "synthetic_conveyor"


@pytest.fixture(scope="module")
def run_and_videos(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = make_synthetic_video_dataset(tmp_path_factory.mktemp("data"), n_train=3, n_test=2, n_frames=12, size=(48, 64))
    MODEL_REGISTRY["tinyvideo"] = "test_video_workflow:TinyVideoDetector"
    try:
        run = train_video_model(root, CATEGORY, "tinyvideo", tmp_path_factory.mktemp("results"), device="cpu").run_dir
    finally:
        MODEL_REGISTRY.pop("tinyvideo", None)
    first, second = sorted((root / CATEGORY / "test").rglob("*.mp4"))[:2]
    return Path(run), first, second


@pytest.fixture(autouse=True)
def registered():
    MODEL_REGISTRY["tinyvideo"] = "test_video_workflow:TinyVideoDetector"
    yield
    MODEL_REGISTRY.pop("tinyvideo", None)


def analyze(run: Path, video: Path, out: Path, *extra: str) -> int:
    return main(["analyze-video", "--checkpoint", str(run), "--video", str(video), "--output-dir", str(out),
                 "--device", "cpu", *extra])


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    return err


def test_an_earlier_analysis_is_kept_unless_overwrite(run_and_videos, tmp_path, capsys, monkeypatch):
    run, first, second = run_and_videos
    out = tmp_path / "analysis"
    assert analyze(run, first, out) == 0
    earlier = {name: (out / name).read_bytes() for name in predict.ANALYSIS_FILES}
    capsys.readouterr()
    assert analyze(run, second, out) == 2
    err = one_line_error(capsys)
    assert str(out) in err and "--overwrite" in err
    assert {name: (out / name).read_bytes() for name in earlier} == earlier

    # a replacement that fails half-way leaves the earlier analysis whole
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict, "plot_timeline", broken)
    with pytest.raises(OSError):
        analyze_video(run, second, out, device="cpu", overwrite=True)
    assert {name: (out / name).read_bytes() for name in earlier} == earlier
    monkeypatch.undo()

    assert analyze(run, second, out, "--overwrite") == 0
    assert str(second) in (out / "events.json").read_text() and str(first) not in (out / "events.json").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(predict.ANALYSIS_FILES)  # no temporary left behind


@pytest.mark.parametrize("inside", ["", "model"])
def test_the_run_and_model_folders_are_refused(run_and_videos, capsys, inside):
    run, first, _ = run_and_videos
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    assert analyze(run, first, run / inside, "--overwrite") == 2
    assert str(run / inside) in one_line_error(capsys)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_two_default_analyses_in_one_second_keep_their_own_folders(run_and_videos, monkeypatch):
    run, first, _ = run_and_videos

    class FrozenClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 1, 12, 0, 0)

    monkeypatch.setattr(predict, "datetime", FrozenClock)
    one = analyze_video(run, first, device="cpu").output_dir
    two = analyze_video(run, first, device="cpu").output_dir
    assert one != two and two.name == one.name + "_2"
    assert (one / "scores.csv").is_file() and (two / "scores.csv").is_file()
