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


def test_export_refuses_a_folder_whose_replacement_would_lose_files(patchcore_run, onnx_bundle, tmp_path, capsys):
    """Export swaps the whole --output folder for the bundle: the run folder itself, a folder holding it, or any
    folder with other files are refused (exit 2, one line naming it, nothing touched); an earlier bundle is
    replaced, as is an empty folder."""
    run = shutil.copytree(patchcore_run, tmp_path / "runs" / "patchcore")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    others = tmp_path / "bundles"
    others.mkdir()
    (others / "notes.txt").write_text("the user's own file")
    a_file = tmp_path / "bundle.zip"
    a_file.write_text("not a folder")
    for output, says in [(run, "holds the checkpoint"), (run / "model", "holds the checkpoint"),
                         (tmp_path / "runs", "holds the checkpoint"), (others, "holds other files and no earlier bundle"),
                         (a_file, "is not a folder")]:
        assert main(["export", "--checkpoint", str(run), "--output", str(output)]) == 2, output
        err = capsys.readouterr().err
        assert says in err and str(output) in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    assert (others / "notes.txt").read_text() == "the user's own file" and a_file.read_text() == "not a folder"

    earlier = shutil.copytree(onnx_bundle, tmp_path / "earlier")
    (earlier / "stale.txt").write_text("left by the earlier export")
    assert main(["export", "--checkpoint", str(run), "--output", str(earlier)]) == 0
    assert not (earlier / "stale.txt").exists() and Inferencer.load(earlier).predict(np.zeros((64, 64, 3), np.uint8))


def test_a_failed_swap_keeps_the_old_folder(tmp_path):
    """atomic_dir moves the old folder aside before renaming the new one in: if that rename fails, the old one
    comes back (a real failure: the new folder is gone when the rename is attempted)."""
    from anomalens.runtime import atomic_dir

    target = tmp_path / "bundle"
    target.mkdir()
    (target / "bundle.json").write_text("the earlier bundle")
    with pytest.raises(FileNotFoundError):
        with atomic_dir(target) as tmp:
            (tmp / "bundle.json").write_text("the new one")
            shutil.rmtree(tmp)
    assert (target / "bundle.json").read_text() == "the earlier bundle"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # nothing left aside


def _tampered(bundle: Path, folder: Path, edit) -> Path:
    folder = shutil.copytree(bundle, folder)
    meta = json.loads((folder / "bundle.json").read_text())
    edit(meta)
    (folder / "bundle.json").write_text(json.dumps(meta))  # bundle.json is the one file no checksum covers
    return folder


def _set(*path_and_value):
    *path, value = path_and_value

    def edit(meta):
        for key in path[:-1]:
            meta = meta[key]
        if value is _DELETE:
            del meta[path[-1]]
        else:
            meta[path[-1]] = value
    return edit


_DELETE = object()
TAMPERED = {  # bundle.json edit -> the field the one-line refusal names
    "runtime a string": (_set("runtime", "onnx"), "field runtime: must be an object"),
    "input a list": (_set("input", [64, 64]), "field input: must be an object"),
    "model a string": (_set("model", "patchcore"), "field model: must be an object"),
    "a graph a string": (_set("graphs", "features", "features.onnx"), "field graphs.features: must be an object"),
    "no threshold": (_set("calibration", "threshold", _DELETE), "field calibration.threshold: is missing"),
    "threshold a string": (_set("calibration", "threshold", "23.4"), "field calibration.threshold: must be a number"),
    "threshold NaN": (_set("calibration", "threshold", float("nan")), "field calibration.threshold: must be a finite number"),
    "scale 0": (_set("calibration", "scale", 0), "field calibration.scale: must be in (0, inf)"),
    "scale -1": (_set("calibration", "scale", -1.0), "field calibration.scale: must be in (0, inf)"),
    "pixel threshold a string": (_set("calibration", "pixel_threshold", "x"), "field calibration.pixel_threshold"),
    "max_batch 0": (_set("input", "max_batch", 0), "field input.max_batch: must be 1..4096"),
    "no input name": (_set("input", "name", _DELETE), "field input.name"),
    "image_size 100000": (_set("input", "image_size", [100000, 100000]), "field input.image_size[0]: must be 32..4096"),
    "image_size changed": (_set("input", "image_size", [32, 32]), "field input.image_size: [32, 32] differs from model.config"),
    "no scores output": (_set("outputs", "scores", _DELETE), "field outputs.scores"),
    "an output the graph lacks": (_set("outputs", "maps", "heat"), "field outputs.maps: the graph has no output 'heat'"),
    "nprobe 10**9": (_set("search", "nprobe", 10**9), "field search.nprobe: must be 1.."),
    "num_neighbours 10**9": (_set("search", "num_neighbours", 10**9), "field search.num_neighbours: must be 1..1000"),
    "num_neighbours changed": (_set("search", "num_neighbours", 3), "field search.num_neighbours: 3 differs from the exported"),
    "maps inputs changed": (_set("graphs", "maps", "inputs", ["distances"]), "field graphs.maps.inputs"),
    "constant shape null": (_set("constant_inputs", "memory_bank", "shape", None), "field constant_inputs.memory_bank.shape"),
    "checksums removed": (_set("files_sha256", _DELETE), "field files_sha256: is missing (every bundle of version 3"),
    "version 1 with graphs": (_set("version", 1), "field graphs: a version 1 bundle has one network"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_a_tampered_bundle_json_is_one_error_naming_the_field(onnx_bundle, tmp_path, case):
    edit, says = TAMPERED[case]
    with pytest.raises(CheckpointError) as caught:
        Inferencer.load(_tampered(onnx_bundle, tmp_path / "tampered", edit))
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_serve_refuses_a_tampered_bundle_in_one_line(onnx_bundle, tmp_path, capsys):
    from anomalens.serve.process import free_port

    broken = _tampered(onnx_bundle, tmp_path / "tampered", _set("calibration", "scale", 0))
    assert main(["serve", "--model", str(broken), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"anomalens: error: {broken / 'bundle.json'}: field calibration.scale: must be in (0, inf), got 0"


def test_a_version_2_bundle_without_checksums_still_loads(onnx_bundle, tmp_path):
    def older(meta):
        meta["version"] = 2  # exported before files_sha256 existed, which version 3 always records
        del meta["files_sha256"]

    image = np.zeros((64, 64, 3), np.uint8)
    old = _tampered(onnx_bundle, tmp_path / "old", older)
    assert Inferencer.load(old).predict(image)[0].score == Inferencer.load(onnx_bundle).predict(image)[0].score


def test_arrays_are_uint8_uint16_or_bool_and_uint16_is_read_as_16_bit_files_are(onnx_bundle, synthetic_image_dataset):
    import io

    from PIL import Image

    from anomalens.data.pixels import read_rgb
    from anomalens.errors import DataError

    grey = read_rgb(_test_paths(*synthetic_image_dataset)[-1])[:, :, 0]
    mono16 = grey.astype(np.uint16) * 257  # a Mono16 camera frame of the same scene: 8-bit v is v * 257
    buffer = io.BytesIO()
    Image.fromarray(mono16).save(buffer, "PNG")
    inferencer = Inferencer.load(onnx_bundle)
    as_array, as_file, as_8_bit = inferencer.predict([mono16, buffer.getvalue(), grey])
    assert as_array.score == as_file.score == as_8_bit.score  # 28004 was cast to 100 by wrapping around
    assert inferencer.predict(grey > 127)[0].score == inferencer.predict((grey > 127).astype(np.uint8) * 255)[0].score
    for array in (grey / 255.0, grey.astype(np.float32), grey.astype(np.int64)):
        with pytest.raises(DataError, match=rf"image arrays must be uint8 .* got {array.dtype}: convert first"):
            inferencer.predict(array)
