"""Integrity of saved models and exported bundles: neither safetensors, ONNX, OpenVINO nor .npy has a checksum, so a
damaged copy (a bad disk, an interrupted transfer to a line PC) would load silently and give wrong verdicts.
``config.json`` records the SHA-256 of ``weights.safetensors`` and ``bundle.json`` that of every file of the bundle;
a file that no longer matches is refused in one line naming it. Models and bundles saved before checksums load."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from _hostile import error_line
from anomalens.cli import main
from anomalens.errors import CheckpointError
from anomalens.inference import Inferencer, VideoInferencer
from anomalens.inference.bundle import BUNDLE_FILE, CHECKSUMS, read_bundle
from anomalens.runtime import file_sha256
from anomalens.models.base import CONFIG_FILE, WEIGHTS_CHECKSUM, WEIGHTS_FILE, load_detector

REFUSED = "does not match the checksum"


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _flip_tensor_byte(weights: Path) -> None:
    """Flip one bit in the middle of the tensor data (past the safetensors header): the file still parses."""
    data = weights.read_bytes()
    start = 8 + struct.unpack("<Q", data[:8])[0]
    _flip_byte(weights, start + (len(data) - start) // 2)


def _copy(folder: Path, target: Path) -> Path:
    shutil.copytree(folder, target)
    return target


def _one_line_naming(exc: CheckpointError, file: Path) -> str:
    text = str(exc)
    assert "\n" not in text and exc.path == file and file.name in exc.message, text
    return text


# ---- checkpoints -------------------------------------------------------------------------------------
def test_save_records_the_weights_checksum(patchcore_run):
    model = patchcore_run / "model"
    meta = json.loads((model / CONFIG_FILE).read_text())
    assert meta[WEIGHTS_CHECKSUM] == file_sha256(model / WEIGHTS_FILE)


def test_a_flipped_byte_in_the_weights_is_refused_naming_the_file(patchcore_run, tmp_path):
    model = _copy(patchcore_run, tmp_path / "run") / "model"
    load_detector(model)  # the copy itself loads
    _flip_tensor_byte(model / WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match=REFUSED) as caught:
        load_detector(model)
    text = _one_line_naming(caught.value, model / WEIGHTS_FILE)
    assert f"{WEIGHTS_FILE} does not match the checksum in {CONFIG_FILE}" in text


def test_a_checkpoint_saved_before_checksums_still_loads_and_scores_the_same(patchcore_run, synthetic_image_dataset,
                                                                              tmp_path):
    model = _copy(patchcore_run, tmp_path / "run") / "model"
    meta = json.loads((model / CONFIG_FILE).read_text())
    del meta[WEIGHTS_CHECKSUM]  # as every config.json written before the field existed
    (model / CONFIG_FILE).write_text(json.dumps(meta))
    root, category = synthetic_image_dataset
    paths = sorted((root / category / "test").rglob("*.png"))[:2]
    old, saved = load_detector(model), load_detector(patchcore_run)
    images = saved.preprocessing.load_images(paths)
    np.testing.assert_array_equal(old.predict(images).scores, saved.predict(images).scores)


@pytest.mark.parametrize("value", ["abc", "A" * 64, 42, ["0" * 64], None])
def test_a_malformed_weights_checksum_is_refused_naming_the_field(patchcore_run, tmp_path, value):
    model = _copy(patchcore_run, tmp_path / "run") / "model"
    meta = json.loads((model / CONFIG_FILE).read_text())
    (model / CONFIG_FILE).write_text(json.dumps({**meta, WEIGHTS_CHECKSUM: value}))
    with pytest.raises(CheckpointError, match=f"field {WEIGHTS_CHECKSUM}: must be a SHA-256") as caught:
        load_detector(model)
    assert caught.value.path == model / CONFIG_FILE


def test_the_cli_refuses_damaged_weights_in_one_line_naming_the_file(patchcore_run, synthetic_image_dataset,
                                                                     tmp_path, capsys):
    run = _copy(patchcore_run, tmp_path / "run")
    _flip_tensor_byte(run / "model" / WEIGHTS_FILE)
    root, category = synthetic_image_dataset
    image = sorted((root / category / "test").rglob("*.png"))[0]
    assert main(["predict", "--checkpoint", str(run), str(image), "--output-dir", str(tmp_path / "out")]) == 2
    line = error_line(capsys)
    assert str(run / "model" / WEIGHTS_FILE) in line and REFUSED in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---- bundles -----------------------------------------------------------------------------------------
def test_export_records_the_checksum_of_every_file_of_the_bundle(onnx_bundle):
    recorded = json.loads((onnx_bundle / BUNDLE_FILE).read_text())[CHECKSUMS]
    files = {p.name for p in onnx_bundle.iterdir() if p.is_file() and p.name != BUNDLE_FILE}
    assert set(recorded) == files and {"features.onnx", "maps.onnx", "memory_bank.npy"} <= files
    assert all(recorded[name] == file_sha256(onnx_bundle / name) for name in files)


def test_a_flipped_byte_in_any_bundle_file_is_refused_naming_it(onnx_bundle, tmp_path):
    """Each file in turn (the graphs, the memory bank, the search index if any): Inferencer.load refuses it before
    an engine opens it. The memory bank's last byte is float data, which numpy would load without a word."""
    names = sorted(p.name for p in onnx_bundle.iterdir() if p.is_file() and p.name != BUNDLE_FILE)
    assert {"features.onnx", "maps.onnx", "memory_bank.npy"} <= set(names)
    for name in names:
        broken = _copy(onnx_bundle, tmp_path / f"broken_{name}")
        size = (broken / name).stat().st_size
        _flip_byte(broken / name, size - 1 if name.endswith(".npy") else size // 2)
        with pytest.raises(CheckpointError, match=REFUSED) as caught:
            Inferencer.load(broken)
        text = _one_line_naming(caught.value, broken / name)
        assert f"{name} does not match the checksum in {BUNDLE_FILE}" in text


def test_a_video_bundle_is_checked_in_the_same_place(onnx_bundle, tmp_path):
    """VideoInferencer.load reads the bundle through the same read_bundle (a minimal ConvLSTM description around a
    real graph, as in test_checkpoint_hardening_more.py)."""
    from anomalens.inference.bundle import bundle_checksums

    broken = _copy(onnx_bundle, tmp_path / "video")
    meta = json.loads((broken / BUNDLE_FILE).read_text())
    meta["model"] = {**meta["model"], "name": "convlstm", "kind": "video"}
    meta["graphs"] = {"window": meta["graphs"]["features"]}
    meta["video"] = {"sequence_length": 2, "stride": 1}
    meta["constant_inputs"] = {"memory": {"file": "memory.npy", "shape": [2, 2], "dtype": "float32"}}
    np.save(broken / "memory.npy", np.ones((2, 2), np.float32))
    meta[CHECKSUMS] = bundle_checksums(broken)
    (broken / BUNDLE_FILE).write_text(json.dumps(meta))
    VideoInferencer.load(broken)
    _flip_byte(broken / "memory.npy", (broken / "memory.npy").stat().st_size - 1)
    with pytest.raises(CheckpointError, match=REFUSED) as caught:
        VideoInferencer.load(broken)
    _one_line_naming(caught.value, broken / "memory.npy")


def test_a_bundle_exported_before_checksums_still_loads(onnx_bundle, tmp_path):
    old = _copy(onnx_bundle, tmp_path / "old")
    meta = json.loads((old / BUNDLE_FILE).read_text())
    del meta[CHECKSUMS]
    meta["version"] = 2  # bundles of version 3 always record it
    (old / BUNDLE_FILE).write_text(json.dumps(meta))
    image = np.zeros((*meta["input"]["image_size"], 3), np.uint8)
    assert Inferencer.load(old).predict([image])[0].score == Inferencer.load(onnx_bundle).predict([image])[0].score


def test_a_file_the_runtime_opens_without_a_recorded_checksum_is_refused(onnx_bundle, tmp_path):
    """A file swapped in under another name would otherwise escape the check."""
    broken = _copy(onnx_bundle, tmp_path / "broken")
    meta = json.loads((broken / BUNDLE_FILE).read_text())
    del meta[CHECKSUMS]["memory_bank.npy"]
    (broken / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="records no checksum for 'memory_bank.npy'"):
        read_bundle(broken)


@pytest.mark.parametrize("value", [None, ["maps.onnx"], {"maps.onnx": "not hex"}, {"../maps.onnx": "0" * 64}])
def test_a_malformed_checksum_section_is_refused(onnx_bundle, tmp_path, value):
    broken = _copy(onnx_bundle, tmp_path / "broken")
    meta = json.loads((broken / BUNDLE_FILE).read_text())
    (broken / BUNDLE_FILE).write_text(json.dumps({**meta, CHECKSUMS: value}))
    with pytest.raises(CheckpointError, match=CHECKSUMS) as caught:
        read_bundle(broken)
    assert caught.value.path == broken / BUNDLE_FILE


def test_an_openvino_bundle_checks_the_weights_beside_its_graphs(patchcore_run, tmp_path):
    """OpenVINO keeps a graph's weights in a .bin that bundle.json does not name: it is recorded and checked too."""
    pytest.importorskip("openvino")
    from anomalens.export import export_model

    bundle = export_model(patchcore_run, "openvino", "fp32", tmp_path / "ov").folder
    recorded = json.loads((bundle / BUNDLE_FILE).read_text())[CHECKSUMS]
    assert {"features.xml", "features.bin", "maps.xml", "maps.bin"} <= set(recorded)
    _flip_byte(bundle / "features.bin", (bundle / "features.bin").stat().st_size // 2)
    with pytest.raises(CheckpointError, match=REFUSED) as caught:
        Inferencer.load(bundle)
    _one_line_naming(caught.value, bundle / "features.bin")
    meta = json.loads((bundle / BUNDLE_FILE).read_text())
    del meta[CHECKSUMS]["features.bin"]  # left out by an edit: the runtime would read it unchecked
    (bundle / BUNDLE_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="records no checksum for 'features.bin'"):
        Inferencer.load(bundle)
