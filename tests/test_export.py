"""Export to ONNX / OpenVINO bundles: the bundle gives the checkpoint's scores, verdicts, heatmaps and regions.

Parity targets of issue 10: |score difference| <= 1e-4 x threshold, identical verdicts, heatmaps within 1e-3
(normalised scale), on the synthetic test images (and on real MVTec bottle in a slow test).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from anomalens.cli import main
from anomalens.data.mvtec import discover_category
from anomalens.errors import CheckpointError, ConfigError
from anomalens.export import export_model
from anomalens.models import load_detector
from anomalens.workflows.runs import open_run
from anomalens.inference import Inferencer, read_bundle
from anomalens.workflows.runs import load_detector
from anomalens.workflows.predict import predict_images


def _test_paths(root, category):
    found = discover_category(root, category, require_test=True)
    return sorted((found.root / "test").rglob("*.png"))


def assert_parity(run_dir, bundle_dir, paths, score_tolerance=1e-4, map_tolerance=1e-3):
    """The bundle reproduces the checkpoint on ``paths``: scores (within ``score_tolerance`` of the calibration's
    scale, the spread of the validation scores: wherever the threshold lies, even near 0), verdicts, heatmaps, regions."""
    detector = load_detector(run_dir, device="cpu")
    inferencer = Inferencer.load(bundle_dir)
    images = detector.preprocessing.load_images(paths)
    reference = detector.predict(images)
    results = inferencer.predict(paths)
    cal = detector.calibration_
    scores = np.array([r.score for r in results])
    assert np.abs(scores - reference.scores).max() <= score_tolerance * cal.scale
    assert [r.anomalous for r in results] == list(reference.labels)
    heatmaps = np.stack([r.heatmap for r in results])
    assert np.abs(heatmaps - reference.normalized_maps).max() <= map_tolerance
    return reference, results


def test_onnx_bundle_reproduces_the_checkpoint(patchcore_run, onnx_bundle, synthetic_image_dataset):
    paths = _test_paths(*synthetic_image_dataset)
    reference, results = assert_parity(patchcore_run, onnx_bundle, paths)
    assert any(r.anomalous for r in results) and not all(r.anomalous for r in results)  # the test can fail both ways
    # regions: the library's predict and the runtime find the same ones
    library = predict_images(patchcore_run, paths[:6], device="cpu", output_dir=None)
    for lib, rt in zip(library.results, results[:6]):
        assert [(r.x, r.y, r.width, r.height, r.area) for r in lib.regions] == [(r.x, r.y, r.width, r.height, r.area) for r in rt.regions]


def test_bundle_json_describes_everything_needed(patchcore_run, onnx_bundle):
    meta = read_bundle(onnx_bundle)
    detector = load_detector(patchcore_run)
    assert meta["model"]["name"] == "patchcore" and meta["anomalens_version"]
    assert meta["runtime"] == {"engine": "onnx", "precision": "fp32", "network": None, "openvino_precision_hint": None}
    # PatchCore: two graphs, the library's own faiss index searched between them
    assert {name: graph["file"] for name, graph in meta["graphs"].items()} == {"features": "features.onnx", "maps": "maps.onnx"}
    assert meta["search"]["index"] == "search_index.faiss" and meta["search"]["kind"] == detector.index_.kind
    assert meta["search"]["num_neighbours"] == detector.config.num_neighbours
    assert meta["input"]["image_size"] == [64, 64] and meta["input"]["dtype"] == "uint8"
    assert "BILINEAR" in meta["preprocessing"]["resize"]
    assert meta["calibration"]["threshold"] == detector.calibration_.threshold  # fp32 keeps the checkpoint's threshold
    assert meta["calibration"]["pixel_threshold"] <= meta["calibration"]["threshold"]
    assert meta["model"]["config"]["blur_sigma"] == detector.config.blur_sigma
    bank = np.load(onnx_bundle / "memory_bank.npy", allow_pickle=False)
    assert bank.shape == tuple(detector.memory_bank_.shape) == tuple(meta["constant_inputs"]["memory_bank"]["shape"])
    check = meta["export_check"]
    assert check["images"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < 1e-4


def test_a_damaged_bundle_is_refused_with_the_reason(onnx_bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(onnx_bundle, broken)
    (broken / "memory_bank.npy").unlink()
    with pytest.raises(CheckpointError, match="memory_bank.npy"):
        Inferencer.load(broken)
    meta = json.loads((onnx_bundle / "bundle.json").read_text())
    meta["version"] = 99
    (broken / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="version 99"):
        read_bundle(broken)


def test_runtime_takes_paths_bytes_and_camera_arrays_alike(onnx_bundle, synthetic_image_dataset):
    from anomalens.data.pixels import read_rgb

    path = _test_paths(*synthetic_image_dataset)[-1]
    inferencer = Inferencer.load(onnx_bundle)
    by_path, by_bytes, by_array = inferencer.predict([path, path.read_bytes(), read_rgb(path)])
    assert by_path.score == by_bytes.score == by_array.score
    assert by_path.heatmap.shape == (64, 64) and by_path.mask.dtype == bool


def test_runtime_search_without_faiss_finds_the_same_neighbours():
    faiss = pytest.importorskip("faiss")
    from anomalens.inference.search import BankSearch, image_weights

    rng = np.random.default_rng(0)
    bank, queries = rng.normal(size=(500, 16)).astype(np.float32), rng.normal(size=(300, 16)).astype(np.float32)
    flat = faiss.IndexFlatL2(16)
    flat.add(bank)
    expected_squared, expected = flat.search(queries, 3)
    distances, indices = BankSearch(bank).search(queries, k=3)  # numpy, as on a line PC without faiss
    assert np.array_equal(indices, expected)
    assert np.allclose(distances, np.sqrt(expected_squared), atol=1e-4)
    weights = image_weights(BankSearch(bank), queries.reshape(3, 100, 16), distances[:, 0].reshape(3, 100),
                            indices[:, 0].reshape(3, 100), neighbours=9)
    assert weights.shape == (3,) and np.all((weights > 0) & (weights < 1))


def test_unsupported_precision_and_model_are_refused(patchcore_run, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(patchcore_run), "--precision", "fp16", "--output", str(tmp_path / "b")]) == 2
    assert "fp16" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    with pytest.raises(ConfigError, match="bf16"):
        export_model(patchcore_run, "onnx", "bf16", tmp_path / "c")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["padim", "autoencoder"])
def test_padim_and_autoencoder_bundles_reproduce_their_checkpoints(model, synthetic_image_dataset, tmp_path):
    from anomalens.workflows.train import train_image_model

    root, category = synthetic_image_dataset
    settings = {"epochs": 1, "batch_size": 8} if model == "autoencoder" else {}
    run = train_image_model(root, category, model, tmp_path, image_size=64, device="cpu", **settings).run_dir
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle").folder
    _, results = assert_parity(run, bundle, _test_paths(root, category))
    assert (results[0].view is not None) == (model == "autoencoder")


@pytest.mark.slow
def test_openvino_fp32_matches_and_int8_keeps_the_checkpoint_calibration_moved(patchcore_run, synthetic_image_dataset, tmp_path):
    pytest.importorskip("openvino")
    paths = _test_paths(*synthetic_image_dataset)
    ov_bundle = export_model(patchcore_run, "openvino", "fp32", tmp_path / "ov").folder
    assert read_bundle(ov_bundle)["runtime"]["openvino_precision_hint"] == "f32"
    assert "f32" in Inferencer.load(ov_bundle).engine.description
    assert_parity(patchcore_run, ov_bundle, paths)

    int8 = export_model(patchcore_run, "onnx", "int8", tmp_path / "int8", calibration_images=16)
    meta = int8.bundle
    assert meta["graphs"]["features"]["file"] == "features_int8.onnx"
    # the checkpoint's calibration, moved by the int8 graph's score shift on the validation images
    assert meta["calibration_source"].startswith("checkpoint, threshold moved by")
    checkpoint = load_detector(open_run(patchcore_run)[0]).calibration_
    moved = meta["calibration"]["threshold"] - checkpoint.threshold
    assert meta["calibration"]["validation_count"] == checkpoint.validation_count
    assert abs(moved) <= meta["export_check"]["max_score_difference"] + 1e-6
    results = Inferencer.load(int8.folder).predict(paths)
    assert len(results) == len(paths) and all(np.isfinite(r.score) for r in results)


@pytest.mark.slow
def test_real_bottle_parity(mvtec_root, tmp_path):
    from anomalens.workflows.train import train_image_model

    run = train_image_model(mvtec_root, "bottle", "patchcore", tmp_path, device="cpu", coreset_ratio=0.01).run_dir
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle").folder
    assert_parity(run, bundle, _test_paths(mvtec_root, "bottle"))


def test_benchmark_compares_exported_runtimes_with_pytorch(patchcore_run, synthetic_image_dataset, tmp_path, capsys):
    from anomalens.workflows.benchmark import compare_runtimes, format_runtime_table

    root, category = synthetic_image_dataset
    exported = Path(patchcore_run) / "export" / "onnx_fp32"
    exported.mkdir(parents=True, exist_ok=True)
    (exported / "mine.txt").write_text("a bundle the user exported")
    rows = compare_runtimes(patchcore_run, root, category, ["onnx:fp32"], repeats=1)
    # the benchmark's bundles live in a temporary folder: the user's export is left as it was
    assert [p.name for p in exported.iterdir()] == ["mine.txt"]
    assert rows[1]["bundle_megabytes"] > 0
    assert [(r["runtime"], r["precision"]) for r in rows] == [("pytorch", "fp32"), ("onnx", "fp32")]
    pytorch, onnx = rows
    assert onnx["max_score_difference_over_scale"] <= 1e-4 and onnx["same_verdicts"] == 1.0
    assert abs(onnx["image_auroc"] - pytorch["image_auroc"]) < 1e-9 and onnx["images_per_second"] > 0
    assert "onnx" in format_runtime_table(rows)
    # a wrong runtime is refused before any training
    assert main(["benchmark", "--data-dir", str(root), "--category", category, "--results-dir", str(tmp_path),
                 "--runtimes", "tensorrt:fp32"]) == 2
    assert "tensorrt:fp32" in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_part_score_region_bundle_reproduces_the_checkpoint(synthetic_image_dataset, tmp_path):
    """score_region "part" takes the image score on the part alone: the maps graph gets the images too, and
    averages the capped map over score_window squares (the default 20 px: 5 blocks of 4 px) as the checkpoint does."""
    from anomalens.workflows.runs import read_model_config
    from anomalens.workflows.train import train_image_model

    root, category = synthetic_image_dataset
    run = train_image_model(root, category, "patchcore", tmp_path, image_size=64, device="cpu", score_region="part").run_dir
    bundle = export_model(run, "onnx", "fp32", tmp_path / "bundle")
    assert bundle.bundle["graphs"]["maps"]["inputs"] == ["distances", "weights", "images"]
    assert read_model_config(run)["config"]["score_window"] == 20
    assert_parity(run, bundle.folder, _test_paths(root, category))
