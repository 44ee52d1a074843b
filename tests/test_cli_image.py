"""The image commands through ``anomalens.cli.main``: help, train -> evaluate -> predict -> benchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomalens.cli import main


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "benchmark"])
def test_every_command_has_help_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "Example:" in out and f"anomalens {command}" in out
    assert "--device" in out and "--seed" in out


def test_train_flags_cover_the_original_and_the_feature_models(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for flag in ("--epochs", "--lr", "--latent-dim", "--loss", "--ssim-weight", "--num-workers", "--batch-size",
                 "--image-size", "--validation-fraction", "--target-fpr", "--results-dir", "--backbone",
                 "--coreset-ratio", "--tile", "--model", "--normal-reference"):
        assert flag in out, flag


def test_autoencoder_flags_reach_its_config(synthetic_image_dataset, tmp_path):
    import json

    root, category = synthetic_image_dataset
    rc = main(["train", "--data-dir", str(root), "--category", category, "--model", "autoencoder", "--image-size", "32",
               "--epochs", "1", "--batch-size", "8", "--latent-dim", "16", "--normal-reference", "zscore",
               "--results-dir", str(tmp_path)])
    assert rc == 0
    config = json.loads((_run_dir(tmp_path) / "model" / "config.json").read_text())["config"]
    assert (config["normal_reference"], config["latent_dim"], config["epochs"]) == ("zscore", 16, 1)


def _run_dir(results):
    runs = [p for p in results.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def test_train_evaluate_predict_through_the_cli(tiny_model, synthetic_image_dataset, tmp_path, capsys):
    root, category = synthetic_image_dataset
    results = tmp_path / "results"
    rc = main(["train", "--data-dir", str(root), "--category", category, "--model", tiny_model, "--image-size", "64",
               "--results-dir", str(results), "--seed", "2", "--device", "cpu", "--target-fpr", "0.05", "--epochs", "2"])
    assert rc == 0
    run_dir = _run_dir(results)
    out = capsys.readouterr().out
    assert str(run_dir) in out and "threshold" in out
    config = json.loads((run_dir / "model" / "config.json").read_text())
    assert config["config"]["target_fpr"] == 0.05 and config["config"]["epochs"] == 2  # given flags reach the model
    assert config["config"]["batch_size"] == 8  # flags not given keep the model's own default
    assert json.loads((run_dir / "run.json").read_text())["settings"] == {"target_fpr": 0.05, "epochs": 2}

    assert main(["evaluate", "--checkpoint", str(run_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "image AUROC" in out and (run_dir / "evaluation" / "metrics.json").is_file()

    good = root / category / "test" / "good"
    assert main(["predict", "--checkpoint", str(run_dir), str(good), "--output-dir", str(tmp_path / "pred")]) == 0
    out = capsys.readouterr().out
    assert out.count("score") >= 8 and "of 8 images anomalous" in out
    assert (tmp_path / "pred" / "predictions.csv").is_file() and len(list((tmp_path / "pred").glob("*_overlay.png"))) == 8
    # a second call into the same folder is refused with one line, unless --overwrite
    assert main(["predict", "--checkpoint", str(run_dir), str(good), "--output-dir", str(tmp_path / "pred")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(run_dir), str(good), "--output-dir", str(tmp_path / "pred"), "--overwrite"]) == 0


def test_a_flag_the_model_does_not_have_is_named(tiny_model, synthetic_image_dataset, tmp_path, capsys):
    root, category = synthetic_image_dataset
    rc = main(["train", "--data-dir", str(root), "--category", category, "--model", tiny_model,
               "--backbone", "lite1", "--results-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "anomalens: error: --backbone does not apply to model tiny"
    assert list(tmp_path.iterdir()) == []


def test_epochs_do_not_apply_to_patchcore(synthetic_image_dataset, tmp_path, capsys):
    pytest.importorskip("anomalens.models.image.patchcore")
    root, category = synthetic_image_dataset
    rc = main(["train", "--data-dir", str(root), "--category", category, "--epochs", "3", "--results-dir", str(tmp_path)])
    assert rc == 2 and "--epochs does not apply to model patchcore" in capsys.readouterr().err


def test_benchmark_prints_a_table_and_writes_json(tiny_model, synthetic_image_dataset, tmp_path, capsys):
    root, category = synthetic_image_dataset
    output = tmp_path / "bench.json"
    rc = main(["benchmark", "--data-dir", str(root), "--category", category, "--model", tiny_model, "--image-size", "64",
               "--results-dir", str(tmp_path / "results"), "--output", str(output), "--device", "cpu"])
    assert rc == 0
    result = json.loads(output.read_text())
    for key in ("model", "category", "image_auroc", "pixel_auroc", "aupro", "f1_max", "fit_seconds",
                "images_per_second", "peak_rss_mb", "epochs"):
        assert key in result, key
    assert result["model"] == tiny_model and result["category"] == category
    assert result["fit_seconds"] >= 0 and result["images_per_second"] > 0 and result["peak_rss_mb"] > 0
    assert result["validation_images"] == 4 and result["train_images"] == 36
    # CPU time of the scoring beside its wall-clock rate, in the evaluation's metrics.json too
    timing = json.loads((Path(result["evaluation_dir"]) / "metrics.json").read_text())["timing"]
    assert timing["cpu_seconds"] > 0 and result["cpu_ms_per_image"] == timing["cpu_ms_per_image"] > 0
    # 24 test images; cpu_seconds is rounded to 1 ms, cpu_ms_per_image to 0.01 ms
    assert timing["cpu_ms_per_image"] == pytest.approx(1000 * timing["cpu_seconds"] / 24, abs=1000 * 0.0005 / 24 + 0.005)
    out = capsys.readouterr().out
    assert "image_auroc" in out and "peak_rss_mb" in out and "cpu_ms_per_image" in out


def test_benchmark_hands_video_datasets_to_the_video_workflow(monkeypatch, tmp_path, capsys):
    import anomalens.data.video_datasets as video_datasets
    import anomalens.workflows.benchmark as benchmark_workflow

    calls = []

    def fake_benchmark(data_dir, category, model=None, results_dir="results", **kwargs):
        calls.append((str(data_dir), category, model, kwargs))
        return {"model": model or "stfeatures", "category": category, "frame_auroc": 0.9}

    monkeypatch.setattr(video_datasets, "is_video_category", lambda data_dir, category: True)
    monkeypatch.setattr(benchmark_workflow, "benchmark_video_model", fake_benchmark)
    output = tmp_path / "video.json"
    rc = main(["benchmark", "--data-dir", str(tmp_path), "--category", "ped2", "--model", "convlstm", "--epochs", "2",
               "--output", str(output), "--seed", "4"])
    assert rc == 0
    (data_dir, category, model, kwargs) = calls[0]
    assert (category, model, kwargs["seed"], kwargs["epochs"]) == ("ped2", "convlstm", 4, 2)
    assert json.loads(output.read_text())["frame_auroc"] == 0.9
