"""Hostile flags and half-failed calls through ``anomalens.cli.main``: each is one line naming the flag (exit 2),
before any work, and a failed call loses nothing an earlier one saved."""

from __future__ import annotations

import json
import socket
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from _tiny_detector import register_tiny_detector

from anomalens.cli import main
from anomalens.errors import ConfigError
from anomalens.workflows.runs import check_run_name
from anomalens.workflows.train import train_image_model


@pytest.fixture(scope="module")
def run_dir(synthetic_image_dataset, tmp_path_factory):
    """One tiny run (milliseconds to fit) shared by this module's tests."""
    root, category = synthetic_image_dataset
    patcher = pytest.MonkeyPatch()
    register_tiny_detector(patcher)
    yield train_image_model(root, category, "tiny", tmp_path_factory.mktemp("results"), image_size=64, seed=0,
                            device="cpu").run_dir
    patcher.undo()


@pytest.fixture
def good(synthetic_image_dataset):
    root, category = synthetic_image_dataset
    return root / category / "test" / "good"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _predict(run_dir, *args: object) -> int:
    return main(["predict", "--checkpoint", str(run_dir), "--device", "cpu", *map(str, args)])


def test_a_failed_overwrite_keeps_the_earlier_predictions(run_dir, good, tmp_path, capsys):
    out = tmp_path / "out1"
    assert _predict(run_dir, good / "000.png", good / "001.png", "--output-dir", out) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    not_an_image = tmp_path / "notimg.png"
    not_an_image.write_text("not an image")
    capsys.readouterr()
    assert _predict(run_dir, "--output-dir", out, "--overwrite", not_an_image) == 2
    assert "notimg.png" in _error_line(capsys)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing earlier lost
    assert len(json.loads((out / "predictions.json").read_text())["results"]) == 2


def test_overwrite_from_another_directory_removes_the_earlier_overlays(run_dir, good, tmp_path, monkeypatch):
    # the tables store overlay paths relative to the working directory of the call that wrote them
    monkeypatch.chdir(tmp_path)
    assert _predict(run_dir, good / "000.png", good / "001.png", "--output-dir", "out2", "--masks") == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert _predict(run_dir, good / "002.png", "--output-dir", "../out2", "--overwrite") == 0
    assert sorted(p.name for p in (tmp_path / "out2").rglob("*.png")) == ["002_overlay.png"]


def test_a_failed_predict_leaves_no_empty_folder_in_the_run(run_dir, tmp_path, capsys):
    not_an_image = tmp_path / "notimg.png"
    not_an_image.write_text("not an image")
    assert _predict(run_dir, not_an_image) == 2
    _error_line(capsys)
    predictions = run_dir / "predictions"
    assert not predictions.exists() or list(predictions.iterdir()) == []


@pytest.mark.parametrize("size", ["0", "-3"])
def test_predict_refuses_a_batch_size_below_one(run_dir, good, tmp_path, capsys, size):
    assert _predict(run_dir, good / "000.png", "--output-dir", tmp_path / "out", "--batch-size", size) == 2
    assert _error_line(capsys) == f"anomalens: error: --batch-size must be at least 1, got {size}"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, named", [
    (["--port", "99999"], "--port must be at most 65535"),
    (["--port", "0"], "--port must be at least 1"),
    (["--max-batch", "-1"], "--max-batch must be at least 1"),
    (["--queue-size", "0"], "--queue-size must be at least 1"),
    (["--max-wait-ms", "-5"], "--max-wait-ms must be at least 0"),
    (["--max-wait-ms", "nan"], "--max-wait-ms must be a finite number"),
    (["--max-request-mb", "0"], "--max-request-mb must be above 0"),
    (["--max-request-mb", "-1"], "--max-request-mb must be above 0"),
    (["--threads", "-2"], "--threads must be at least 1"),
])
def test_serve_refuses_bad_limits_in_one_line(tmp_path, capsys, flags, named):
    assert main(["serve", "--model", str(tmp_path / "missing"), *flags]) == 2
    assert named in _error_line(capsys)


def test_serve_on_a_port_in_use_is_one_line_before_announcing(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # checked before the model loads: the missing model is never reached
        assert main(["serve", "--model", str(tmp_path / "missing"), "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert "serving" not in captured.out
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and f"cannot listen on 127.0.0.1:{port}" in err and "in use" in err


@pytest.mark.parametrize("count", ["0", "-2"])
def test_export_refuses_fewer_than_one_calibration_image(run_dir, tmp_path, capsys, count):
    rc = main(["export", "--checkpoint", str(run_dir), "--precision", "int8", "--output", str(tmp_path / "b"),
               "--calibration-images", count])
    assert rc == 2 and "--calibration-images must be at least 1" in _error_line(capsys)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", ["../escape2", "a/b", ".hidden", "..", "a\\b", ""])
def test_a_run_name_that_is_not_a_plain_folder_name_is_refused_before_training(
        synthetic_image_dataset, tiny_model, tmp_path, capsys, name):
    root, category = synthetic_image_dataset
    results = tmp_path / "results"
    rc = main(["train", "--data-dir", str(root), "--category", category, "--model", tiny_model, "--image-size", "32",
               "--results-dir", str(results), "--device", "cpu", "--run-name", name])
    err = _error_line(capsys)
    assert rc == 2 and "--run-name" in err and "plain folder name" in err
    assert not results.exists() and not (tmp_path / "escape2").exists()  # refused before anything was written


def test_the_library_refuses_such_a_run_name_too():
    with pytest.raises(ConfigError, match="plain folder name"):
        check_run_name("../escape2")
    assert check_run_name("bottle_v2.1 final") == "bottle_v2.1 final"


@pytest.mark.parametrize("flag, value", [("--clip-before", "nan"), ("--clip-after", "inf"), ("--max-latency", "nan"),
                                         ("--close-after", "nan"), ("--close-after", "inf")])
def test_watch_refuses_values_that_are_not_finite(tmp_path, capsys, flag, value):
    rc = main(["watch", "--checkpoint", str(tmp_path / "missing"), "--source", str(tmp_path),
               "--output", str(tmp_path / "w"), flag, value])
    assert rc == 2 and f"{flag} must be a finite number" in _error_line(capsys)


def test_predict_help_shows_its_batch_default_once(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "images scored together (default: 32)" in out and "(default: 32) (default:" not in out


def test_train_help_states_the_aspect_aware_size_default_alone(capsys):
    """The help explained the aspect-aware default, then the dataclass's 256x256 was appended as "the" default."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "training images' aspect ratio at about 256x256 pixels" in out and "(default: 256x256)" not in out


def test_the_overwrite_refusal_names_the_flag_once(run_dir, good, tmp_path, capsys):
    assert _predict(run_dir, good / "000.png", "--output-dir", tmp_path) == 0
    capsys.readouterr()
    assert _predict(run_dir, good / "000.png", "--output-dir", tmp_path) == 2
    err = _error_line(capsys)
    assert "pass --overwrite to replace them" in err and "=True" not in err


def test_the_server_refuses_a_boolean_query_value_it_does_not_know():
    from anomalens.serve import ServeSettings, create_app

    predictor = SimpleNamespace(max_batch=1, predict_prepared=lambda batch: [], describe=lambda: {"model": "fake"},
                                image_size=(8, 8))
    client = TestClient(create_app(predictor, ServeSettings()))  # no lifespan: refused before any scoring
    reply = client.post("/v1/predict?heatmap=maybe", content=b"x")
    assert reply.status_code == 400 and "heatmap" in reply.json()["error"]
    reply = client.post("/v1/predict?mask=2", content=b"x")
    assert reply.status_code == 400 and "mask" in reply.json()["error"]


def test_the_library_refuses_a_bad_run_name_before_training(synthetic_image_dataset, tiny_model, tmp_path):
    """The UI and the Python API reach train_model without the CLI's check: it refuses the name before reading
    any data (a missing data folder would otherwise be the first error), not at saving time after the fit."""
    _, category = synthetic_image_dataset
    with pytest.raises(ConfigError, match="plain folder name"):
        train_image_model(tmp_path / "no_data", category, tiny_model, tmp_path / "results", image_size=32,
                          device="cpu", run_name="../escape3")
    assert not (tmp_path / "escape3").exists() and not list((tmp_path / "results").glob("*"))


def test_predict_refuses_a_damaged_run_json_as_evaluate_does(run_dir, good, tmp_path, capsys):
    """predict with --output-dir once loaded the model alone and took any run.json; now it is checked as evaluate
    checks it, whatever the output folder."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "run.json").write_text("{not json")
    assert _predict(copy, good / "000.png", "--output-dir", tmp_path / "out") == 2
    assert "run.json" in _error_line(capsys)
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_benchmark_refuses_a_folder_as_its_output_before_training(synthetic_image_dataset, tiny_model, tmp_path, capsys):
    """A folder given as --output once failed with a traceback after the whole train and evaluate, losing both."""
    root, category = synthetic_image_dataset
    results = tmp_path / "results"
    (tmp_path / "outdir").mkdir()
    rc = main(["benchmark", "--data-dir", str(root), "--category", category, "--model", tiny_model, "--image-size", "32",
               "--results-dir", str(results), "--device", "cpu", "--output", str(tmp_path / "outdir")])
    err = _error_line(capsys)
    assert rc == 2 and "--output file" in err and str(tmp_path / "outdir") in err
    assert not results.exists()  # refused before any training
