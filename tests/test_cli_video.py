"""The video commands: flags reach the model, outputs appear, user errors exit 2 with one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from anomalens.cli import main
from anomalens.data.synthetic_video import make_synthetic_video_dataset
from anomalens.data.video_io import probe_video

CATEGORY = "synthetic_conveyor"
TINY_CONVLSTM = ["--model", "convlstm", "--image-size", "32", "48", "--epochs", "1", "--sequence-length", "4",
                 "--stride", "2", "--latent-dim", "8", "--lstm-hidden-dim", "8", "--lstm-layers", "1", "--batch-size", "4",
                 "--lr", "0.001", "--target-fpr", "0.05"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_synthetic_video_dataset(tmp_path_factory.mktemp("cli_video"), n_train=2, n_test=2, n_frames=16, size=(48, 64))


@pytest.mark.parametrize("command", ["train-video", "evaluate-video", "analyze-video"])
def test_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Example:" in text and f"anomalens {command}" in text and "--device" in text


def test_train_evaluate_analyze_from_the_command_line(data_dir, tmp_path, capsys):
    results = tmp_path / "results"
    assert main(["train-video", "--data-dir", str(data_dir), "--category", CATEGORY, "--results-dir", str(results),
                 "--seed", "3", "--device", "cpu", *TINY_CONVLSTM]) == 0
    run_dir = next(results.iterdir())
    run = json.loads((run_dir / "run.json").read_text())
    assert run["seed"] == 3 and run["model"] == "convlstm" and run["image_size"] == [32, 48]
    config = run["config"]
    assert (config["sequence_length"], config["stride"], config["epochs"], config["lstm_layers"]) == (4, 2, 1, 1)
    assert (config["latent_dim"], config["lstm_hidden_dim"], config["lr"], config["target_fpr"]) == (8, 8, 0.001, 0.05)
    assert f"evaluate-video --checkpoint {run_dir}" in capsys.readouterr().out

    assert main(["evaluate-video", "--checkpoint", str(run_dir), "--device", "cpu"]) == 0
    assert "frame AUROC" in capsys.readouterr().out
    assert (run_dir / "evaluation" / "metrics.json").is_file()

    video = data_dir / CATEGORY / "test" / "stop" / "test_001.mp4"
    out = tmp_path / "analysis"
    assert main(["analyze-video", "--checkpoint", str(run_dir), "--video", str(video), "--output-dir", str(out),
                 "--device", "cpu"]) == 0
    assert "side by side:" in capsys.readouterr().out
    assert probe_video(out / "side_by_side.mp4")["frames"] == 16
    assert {p.name for p in out.iterdir()} == {"side_by_side.mp4", "timeline.png", "scores.csv", "events.json"}


def test_flag_of_another_model_is_refused(data_dir, tmp_path, capsys):
    code = main(["train-video", "--data-dir", str(data_dir), "--category", CATEGORY, "--results-dir", str(tmp_path),
                 "--model", "stfeatures", "--sequence-length", "8"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--sequence-length does not apply to model stfeatures" in err
    assert not any(tmp_path.iterdir())


def test_stfeatures_flags_reach_its_config(data_dir, tmp_path):
    results = tmp_path / "results"
    assert main(["train-video", "--data-dir", str(data_dir), "--category", CATEGORY, "--results-dir", str(results),
                 "--image-size", "48", "64", "--appearance-memory", "64", "--appearance-samples", "500", "--motion-memory", "16",
                 "--flow-preset", "fast",
                 "--frame-step", "3", "--temporal-sigma", "0", "--temporal-spill", "2.5", "--device", "cpu"]) == 0
    config = json.loads((next(results.iterdir()) / "run.json").read_text())["config"]
    assert (config["appearance_memory"], config["appearance_samples"], config["motion_memory"]) == (64, 500, 16)
    assert config["flow_preset"] == "fast"
    assert (config["frame_step"], config["temporal_sigma"], config["temporal_spill"]) == (3, 0.0, 2.5)
    # its analysis says which cue (appearance or motion) makes each frame's score
    out = tmp_path / "analysis"
    video = data_dir / CATEGORY / "test" / "stop" / "test_001.mp4"
    assert main(["analyze-video", "--checkpoint", str(next(results.iterdir())), "--video", str(video), "--output-dir",
                 str(out), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(open(out / "scores.csv", encoding="utf-8")))
    assert list(rows[0])[-2:] == ["appearance_score", "motion_score"] and len(rows) == 16
    for row in rows:
        assert float(row["appearance_score"]) + float(row["motion_score"]) == pytest.approx(float(row["score"]), abs=1e-4)
    events = json.loads((out / "events.json").read_text())["events"]
    assert events  # the conveyor stops: reported as an interval
    for event in events:
        assert set(event["peak_cues"]) == {"appearance", "motion"}
        assert event["main_cue"] == max(event["peak_cues"], key=event["peak_cues"].get)


def test_stfeatures_flag_is_refused_for_convlstm(data_dir, tmp_path, capsys):
    code = main(["train-video", "--data-dir", str(data_dir), "--category", CATEGORY, "--results-dir", str(tmp_path),
                 "--model", "convlstm", "--flow-preset", "fast"])
    assert code == 2 and "--flow-preset does not apply to model convlstm" in capsys.readouterr().err
    code = main(["train-video", "--data-dir", str(data_dir), "--category", CATEGORY, "--results-dir", str(tmp_path),
                 "--temporal-spill", "sometimes"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--temporal-spill sometimes is not one of normal, off" in err
    assert not any(tmp_path.iterdir())


def test_bad_inputs_exit_2_naming_the_file(data_dir, tmp_path, capsys):
    assert main(["train-video", "--data-dir", str(tmp_path / "nowhere"), "--category", CATEGORY]) == 2
    assert "nowhere" in capsys.readouterr().err
    image_run = tmp_path / "image_run" / "model"
    image_run.mkdir(parents=True)
    from anomalens.models.image.patchcore import PatchCoreConfig

    (image_run / "config.json").write_text(json.dumps({"format_version": 1, "model": "patchcore", "kind": "image",
                                                       "config": PatchCoreConfig().to_dict()}))
    assert main(["analyze-video", "--checkpoint", str(image_run.parent), "--video", str(tmp_path / "x.mp4")]) == 2
    assert "a video model is needed" in capsys.readouterr().err
    assert main(["evaluate-video", "--checkpoint", str(tmp_path / "missing_run")]) == 2
    assert "missing_run" in capsys.readouterr().err


def test_flow_preset_choices_come_from_the_flow_module(tmp_path, capsys):
    from anomalens.data.flow import FLOW_PRESETS

    with pytest.raises(SystemExit) as exit_info:
        main(["train-video", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--flow-preset {" + ",".join(FLOW_PRESETS) + "}" in text
    assert "--flow-preset {ultrafast,fast,medium}" in text  # as the help read when the CLI listed them itself
    with pytest.raises(SystemExit) as exit_info:
        main(["train-video", "--data-dir", str(tmp_path), "--category", CATEGORY, "--flow-preset", "slow"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'slow' (choose from 'ultrafast', 'fast', 'medium')" in err
    assert not any(tmp_path.iterdir())


def test_building_the_parser_imports_neither_opencv_nor_torch():
    import subprocess
    import sys

    code = ("import sys; from anomalens.cli import build_parser; build_parser(); "
            "print(sorted({'cv2', 'torch'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
