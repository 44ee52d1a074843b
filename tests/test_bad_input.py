"""Issue 2's bad inputs: each gives exit code 2, one line that names the file and the problem, and no
half-written output."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from PIL import Image

from anomalens.cli import main
from anomalens.data.synthetic import make_synthetic_image_dataset


@pytest.fixture
def dataset(tmp_path):
    root = make_synthetic_image_dataset(tmp_path / "data", n_train=6, n_test_good=2, n_test_per_defect=1, image_size=64)
    return root, "synthetic_widget", root / "synthetic_widget"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # progress bars may come first; the error is the last line
    assert line.startswith("anomalens: error: ")
    return line


def _train(root, category, results, *extra):
    return main(["train", "--data-dir", str(root), "--category", category, "--results-dir", str(results),
                 "--image-size", "64", "--device", "cpu", *extra])


def _assert_no_run(results):
    assert not results.exists() or [p for p in results.iterdir()] == []


@pytest.fixture
def tiny_run(tiny_model, dataset, tmp_path):
    root, category, _ = dataset
    assert _train(root, category, tmp_path / "results", "--model", tiny_model) == 0
    return next((tmp_path / "results").iterdir())


def test_data_dir_without_the_layout(dataset, tmp_path, capsys):
    root, category, folder = dataset
    shutil.rmtree(folder / "train")
    assert _train(root, category, tmp_path / "results") == 2
    line = _error_line(capsys)
    assert str(folder) in line and "missing train/good/" in line
    _assert_no_run(tmp_path / "results")


def test_missing_category_and_missing_data_dir(dataset, tmp_path, capsys):
    root, category, _ = dataset
    assert _train(root, "bottle", tmp_path / "results") == 2
    assert "category 'bottle' not found" in _error_line(capsys)
    assert _train(tmp_path / "nowhere", category, tmp_path / "results") == 2
    assert str(tmp_path / "nowhere") in _error_line(capsys)


def test_empty_train_good(dataset, tmp_path, capsys):
    root, category, folder = dataset
    for path in (folder / "train" / "good").iterdir():
        path.unlink()
    assert _train(root, category, tmp_path / "results") == 2
    line = _error_line(capsys)
    assert "train/good" in line and "no images" in line
    _assert_no_run(tmp_path / "results")


@pytest.mark.parametrize(
    "content, problem",
    [(b"", "empty file (0 bytes)"), (b"GIF89a-but-not-really", "corrupt or unknown format"), (None, "cannot decode")],
    ids=["zero-byte", "corrupt", "truncated"],
)
def test_bad_training_image_is_named(tiny_model, dataset, tmp_path, capsys, content, problem):
    root, category, folder = dataset
    bad = folder / "train" / "good" / "003.png"
    if content is None:  # a real PNG cut in half
        bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    else:
        bad.write_bytes(content)
    assert _train(root, category, tmp_path / "results", "--model", tiny_model) == 2
    line = _error_line(capsys)
    assert str(bad) in line and problem in line
    _assert_no_run(tmp_path / "results")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_image_is_named(tiny_model, dataset, tmp_path, capsys):
    root, category, folder = dataset
    bad = folder / "train" / "good" / "002.png"
    bad.chmod(0)
    try:
        assert _train(root, category, tmp_path / "results", "--model", tiny_model) == 2
    finally:
        bad.chmod(0o644)
    line = _error_line(capsys)
    assert str(bad) in line and "permission denied" in line


def test_mask_of_another_size_is_named(tiny_run, dataset, capsys):
    root, category, folder = dataset
    mask = folder / "ground_truth" / "spot" / "000_mask.png"
    Image.new("L", (50, 64)).save(mask)
    assert main(["evaluate", "--checkpoint", str(tiny_run)]) == 2
    line = _error_line(capsys)
    assert str(mask) in line and "50x64" in line and "64x64" in line
    assert not (tiny_run / "evaluation").exists()


def test_missing_checkpoint(tmp_path, capsys):
    assert main(["evaluate", "--checkpoint", str(tmp_path / "results" / "gone")]) == 2
    line = _error_line(capsys)
    assert str(tmp_path / "results" / "gone") in line and "checkpoint not found" in line
    assert main(["predict", "--checkpoint", str(tmp_path), str(tmp_path)]) == 2
    assert "not an anomalens model folder" in _error_line(capsys)


def test_a_run_folder_or_its_model_folder_loads_the_same_model_everywhere(tiny_run, tmp_path):
    """One resolver (models.base.resolve_model_dir) for the library, the CLI's workflows, the server and the UI."""
    from anomalens.errors import CheckpointError
    from anomalens.models.base import load_detector
    from anomalens.serve.backends import load_predictor
    from anomalens.ui.common import DetectorCache

    from_run, from_model = load_detector(tiny_run), load_detector(tiny_run / "model")
    assert from_run.name == from_model.name and torch_equal(from_run.state_tensors(), from_model.state_tensors())
    assert load_predictor(tiny_run, device="cpu").describe() == load_predictor(tiny_run / "model", device="cpu").describe()
    cache = DetectorCache(2)
    assert cache.get(tiny_run, "cpu", "image") is cache.get(tiny_run / "model", "cpu", "image")
    (tmp_path / "empty").mkdir()
    for path, reason in ((tmp_path / "empty", "no config.json in it or in model/"), (tmp_path / "gone", "checkpoint not found")):
        with pytest.raises(CheckpointError) as caught:
            load_detector(path)
        assert str(path) in str(caught.value) and reason in str(caught.value) and "\n" not in str(caught.value)


def torch_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


def _edit_config(run_dir, **changes):
    path = run_dir / "model" / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
    return path


def test_checkpoint_of_a_video_model(tiny_run, dataset, capsys):
    _edit_config(tiny_run, kind="video")
    assert main(["evaluate", "--checkpoint", str(tiny_run)]) == 2
    line = _error_line(capsys)
    assert str(tiny_run / "model") in line and "video model" in line


def test_checkpoint_of_an_unknown_model_type(tiny_run, capsys):
    _edit_config(tiny_run, model="resnet_magic")
    assert main(["predict", "--checkpoint", str(tiny_run), str(tiny_run)]) == 2
    assert "unknown model type 'resnet_magic'" in _error_line(capsys)


def test_checkpoint_of_an_incompatible_format_version(tiny_run, capsys):
    path = _edit_config(tiny_run, format_version=99)
    assert main(["evaluate", "--checkpoint", str(tiny_run)]) == 2
    line = _error_line(capsys)
    assert str(path) in line and "format version 99" in line
    assert not (tiny_run / "evaluation").exists()


def test_corrupt_weights_file(tiny_run, capsys):
    from _saved_tensors import refresh_weights_checksum

    weights = tiny_run / "model" / "weights.safetensors"
    weights.write_bytes(b"\x00" * 16)
    refresh_weights_checksum(weights)  # the safetensors check answers, not the checksum
    assert main(["evaluate", "--checkpoint", str(tiny_run)]) == 2
    assert str(weights) in _error_line(capsys)


def test_image_size_no_model_can_take(dataset, tmp_path, capsys):
    root, category, _ = dataset
    assert _train(root, category, tmp_path / "results", "--image-size", "16") == 2
    assert "--image-size 16 16 is out of range" in _error_line(capsys)
    assert _train(root, category, tmp_path / "results", "--image-size", "64", "64", "3") == 2
    assert "--image-size takes one or two numbers" in _error_line(capsys)
    _assert_no_run(tmp_path / "results")


def test_image_size_the_autoencoder_cannot_take(dataset, tmp_path, capsys):
    pytest.importorskip("anomalens.models.image.autoencoder")
    root, category, _ = dataset
    assert _train(root, category, tmp_path / "results", "--model", "autoencoder", "--image-size", "100") == 2
    line = _error_line(capsys)
    assert "--image-size 100 100" in line and "divisible by 16" in line
    _assert_no_run(tmp_path / "results")


def test_predict_input_that_is_not_an_image(tiny_run, tmp_path, capsys):
    bad = tmp_path / "photo.jpg"
    bad.write_text("hello")
    assert main(["predict", "--checkpoint", str(tiny_run), str(bad), "--output-dir", str(tmp_path / "out")]) == 2
    assert str(bad) in _error_line(capsys)
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
