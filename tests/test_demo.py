"""``anomalens demo`` and ``anomalens ui``: demo data and models are prepared once, reused, and handed to the UI."""

from __future__ import annotations

import json
import shutil

import pytest

from anomalens.cli import main
from anomalens.workflows import demo


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The image half of the demo at 64 px (the video half costs minutes and has its own tests in #4)."""
    root = tmp_path_factory.mktemp("demo")
    patch = pytest.MonkeyPatch()
    patch.setattr(demo, "DEMO_IMAGE_SIZE", 64)
    try:
        assets = demo.prepare_demo(root / "demo_data", root / "results", device="cpu", video=False)
    finally:
        patch.undo()
    return root, assets


def test_first_run_writes_data_trains_and_evaluates(prepared):
    root, assets = prepared
    assert assets.problems == []
    assert assets.image_run == (root / "results" / demo.IMAGE_RUN).resolve()
    metrics = json.loads((assets.image_run / "evaluation" / "metrics.json").read_text())
    assert 0.5 < metrics["image_auroc"] <= 1.0  # evaluated on the test split, so the UI's list shows metrics
    # examples: one normal image and one of each defect type, all from the test split
    assert [p.parent.name for p in assets.image_examples][0] == "good"
    assert {p.parent.name for p in assets.image_examples} == {"good", "scratch", "spot", "missing_piece", "colour_shift"}
    assert all(p.is_file() and p.parent.parent.name == "test" for p in assets.image_examples)
    manifest = json.loads((root / "demo_data" / demo.MANIFEST).read_text())
    assert manifest["image_run"] == str(assets.image_run)


def test_later_runs_reuse_data_and_models(prepared, monkeypatch):
    root, assets = prepared
    import anomalens.workflows.train as image_workflow

    def no_training(*args, **kwargs):
        raise AssertionError("the demo must reuse its trained model")

    monkeypatch.setattr(image_workflow, "train_image_model", no_training)
    weights = assets.image_run / "model" / "weights.safetensors"
    before = weights.stat().st_mtime_ns
    again = demo.prepare_demo(root / "demo_data", root / "results", device="cpu", video=False)
    assert again.image_run == assets.image_run and again.image_examples == assets.image_examples
    assert weights.stat().st_mtime_ns == before


def test_a_model_from_an_older_version_is_rebuilt_not_loaded(prepared, tmp_path):
    root, assets = prepared
    assert demo._model_ready(assets.image_run)
    stale = tmp_path / "stale"
    (stale / "model").mkdir(parents=True)
    config = json.loads((assets.image_run / "model" / "config.json").read_text())
    config["config"]["memory_size"] = 256  # a setting this version does not have
    (stale / "model" / "config.json").write_text(json.dumps(config))
    (stale / "model" / "weights.safetensors").write_bytes((assets.image_run / "model" / "weights.safetensors").read_bytes())
    assert not demo._model_ready(stale)
    (stale / "model" / "config.json").write_text("{not json")
    assert not demo._model_ready(stale)
    damaged = tmp_path / "damaged"  # weights that no longer match their checksum: rebuilt, not loaded
    shutil.copytree(assets.image_run / "model", damaged / "model")
    data = bytearray((damaged / "model" / "weights.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (damaged / "model" / "weights.safetensors").write_bytes(bytes(data))
    assert not demo._model_ready(damaged)


def test_demo_command_starts_the_ui_with_models_and_examples(prepared, monkeypatch, capsys):
    root, assets = prepared
    calls = []
    monkeypatch.setattr("anomalens.ui.launch", lambda settings, **kw: calls.append((settings, kw)))
    argv = ["demo", "--no-video", "--demo-dir", str(root / "demo_data"), "--results-dir", str(root / "results"), "--device", "cpu"]
    assert main(argv + ["--no-launch"]) == 0
    assert str(assets.image_run) in capsys.readouterr().out and calls == []
    assert main(argv + ["--port", "7999"]) == 0
    settings, kw = calls[0]
    assert kw == {"host": "127.0.0.1", "port": 7999, "auth": None}
    assert settings.image_examples == assets.image_examples
    assert settings.data_roots == [(root / "demo_data").resolve()] and settings.results_dir == (root / "results").resolve()


def test_ui_command_flags_auth_and_defaults(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr("anomalens.ui.launch", lambda settings, **kw: calls.append((settings, kw)))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    monkeypatch.delenv("ANOMALENS_UI_AUTH", raising=False)
    assert main(["ui", "--results-dir", "r", "--auth", "inspector:pw", "--max-upload-mb", "50"]) == 0
    settings, kw = calls[-1]
    assert kw["host"] == "127.0.0.1" and kw["auth"] == ("inspector", "pw")
    assert settings.data_roots == [(tmp_path / "data").resolve()]  # ./data by default (./demo_data absent)
    assert settings.max_upload_mb == 50

    monkeypatch.setenv("ANOMALENS_UI_AUTH", "env:secret")
    assert main(["ui", "--data-root", str(tmp_path), "--host", "0.0.0.0"]) == 0
    assert calls[-1][1]["auth"] == ("env", "secret") and calls[-1][1]["host"] == "0.0.0.0"

    monkeypatch.delenv("ANOMALENS_UI_AUTH")
    capsys.readouterr()
    launched = len(calls)
    assert main(["ui", "--host", "0.0.0.0"]) == 2  # exposed without auth: refused, nothing started
    err = capsys.readouterr().err.strip()
    assert "refusing to listen on 0.0.0.0 without a login" in err and len(err.splitlines()) == 1
    assert len(calls) == launched

    assert main(["ui", "--auth", "no-colon"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anomalens: error:") and "user:password" in err and len(err.splitlines()) == 1
