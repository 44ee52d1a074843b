"""More hostile checkpoints (user audit): fields every checkpoint saves are required, the drift reference is
checked field by field, config.json refuses unknown top-level keys, and a damaged exported bundle (its .npy
constants, its graphs) is one CheckpointError naming the file, not numpy's or ONNX Runtime's traceback."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from _saved_tensors import refresh_bundle_checksums
from anomalens.errors import CheckpointError
from anomalens.inference import Inferencer, VideoInferencer
from anomalens.models.base import CONFIG_FILE, load_detector
from anomalens.models.schema import check_model_config, lowest_format


def _edit(folder: Path, change) -> None:
    path = folder / CONFIG_FILE
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta, allow_nan=True))  # bare NaN, as a hostile editor may write


def _refused(folder: Path, field: str) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_detector(folder)
    text = str(caught.value)
    assert CONFIG_FILE in text and field in text and "\n" not in text, text
    return text


def test_a_missing_image_size_is_refused_not_defaulted(tiny_folder):
    """Saved at 32 px: without the field the model would be rebuilt at the 256 px default."""
    _edit(tiny_folder, lambda meta: meta["config"].pop("image_size"))
    assert "field config.image_size: is missing" in _refused(tiny_folder, "config.image_size")


def _meta(model: str, **config) -> dict:
    from anomalens.models.base import detector_class

    cls = detector_class(model)
    # as saving writes it: the oldest format that holds every current setting
    return {"format_version": lowest_format(model), "model": model, "kind": cls.kind,
            "config": {**cls.config_class().to_dict(), **config}}


@pytest.mark.parametrize("model", ["patchcore", "padim", "autoencoder", "convlstm", "stfeatures"])
def test_original_fields_are_required_and_later_ones_keep_their_saved_before_value(model):
    from anomalens.models.base import detector_class

    cls = detector_class(model).config_class
    later = set(cls.SAVED_BEFORE)
    assert model != "patchcore" or {"memory_bank_size", "exact_search"} <= later
    meta = _meta(model)
    for name in later:  # an older checkpoint, saved before these settings existed, still loads
        meta["config"].pop(name)
    meta["format_version"] = 1  # the first format: settings of later formats were not in it
    check_model_config(meta, Path("model/config.json"))
    for name in ("image_size", "batch_size", "target_fpr", "seed"):
        broken = _meta(model)
        broken["config"].pop(name)
        with pytest.raises(CheckpointError, match=rf"config\.json: field config\.{name}: is missing"):
            check_model_config(broken, Path("model/config.json"))


DRIFT_CASES = {
    "low above high": ({"low": 5.0, "high": -5.0}, "drift_reference.low", "must not be above"),
    "width NaN": ({"width": math.nan}, "drift_reference.width", "finite"),
    "width negative": ({"width": -1.0}, "drift_reference.width", "(0, inf)"),
    "width zero": ({"width": 0.0}, "drift_reference.width", "(0, inf)"),
    "count negative": ({"count": -7}, "drift_reference.count", "must be 1.."),
    "count fractional": ({"count": 2.5}, "drift_reference.count", "integer"),
    "low string": ({"low": "x"}, "drift_reference.low", "must be a number"),
    "median string": ({"median": "x"}, "drift_reference.median", "must be a number"),
    "high infinite": ({"high": math.inf}, "drift_reference.high", "finite"),
    "count bool": ({"count": True}, "drift_reference.count", "integer"),
    "unknown field": ({"surprise": 1}, "drift_reference.surprise", "not a field"),
}


@pytest.mark.parametrize("label", sorted(DRIFT_CASES))
def test_every_field_of_the_drift_reference_is_checked(tiny_folder, label):
    changes, field, reason = DRIFT_CASES[label]

    def change(meta):
        meta["drift_reference"] = {**meta["drift_reference"], **changes}

    _edit(tiny_folder, change)
    text = _refused(tiny_folder, field)
    assert reason in text and "operand" not in text, text


def test_a_missing_drift_field_is_refused_but_early_files_without_width_load(tiny_folder):
    reference = load_detector(tiny_folder).drift_reference_
    _edit(tiny_folder, lambda meta: meta["drift_reference"].pop("width"))  # written before width existed
    loaded = load_detector(tiny_folder).drift_reference_
    assert loaded.width == pytest.approx(max(reference.high - reference.low, 1e-12))
    _edit(tiny_folder, lambda meta: meta["drift_reference"].pop("median"))
    assert "drift_reference.median: is missing" in _refused(tiny_folder, "drift_reference.median")


def test_unknown_top_level_keys_are_refused_like_unknown_settings(tiny_folder):
    _edit(tiny_folder, lambda meta: meta.update(calibraton={"threshold": 1.0}))
    assert "field calibraton: is not a field of config.json" in _refused(tiny_folder, "calibraton")


def test_a_format_version_that_is_not_an_integer_says_so(tiny_folder):
    _edit(tiny_folder, lambda meta: meta.update(format_version="1"))
    text = _refused(tiny_folder, "format_version")
    assert "must be an integer, got '1'" in text and "expects" not in text


# ---- exported bundles --------------------------------------------------------------------------------
def _broken_bundle(onnx_bundle: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(onnx_bundle, broken)
    return broken


def _bad_npy(path: Path, how: str) -> None:
    good = np.load(path, allow_pickle=False)
    if how == "bad header version":
        data = bytearray(path.read_bytes())
        data[6] = 9  # the format's major version byte
        path.write_bytes(bytes(data))
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "pickled objects":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif how == "wrong shape":
        np.save(path, good[:-1])
    elif how == "float64":
        np.save(path, good.astype(np.float64))
    elif how == "npz archive":
        with open(path, "wb") as handle:
            np.savez(handle, bank=good)
    elif how == "text":
        path.write_text("hello")


@pytest.mark.parametrize("how", ["bad header version", "truncated", "pickled objects", "wrong shape", "float64",
                                 "npz archive", "text"])
def test_a_damaged_memory_bank_is_one_checkpoint_error_naming_it(onnx_bundle, tmp_path, how):
    broken = _broken_bundle(onnx_bundle, tmp_path)
    _bad_npy(broken / "memory_bank.npy", how)
    refresh_bundle_checksums(broken)  # the .npy checks answer, not the checksum
    with pytest.raises(CheckpointError, match="memory_bank.npy") as caught:
        Inferencer.load(broken)
    assert "\n" not in str(caught.value) and "(1,0)" not in str(caught.value) and "checksum" not in str(caught.value)


def test_a_damaged_graph_is_one_checkpoint_error_naming_it(onnx_bundle, tmp_path):
    broken = _broken_bundle(onnx_bundle, tmp_path)
    graph = json.loads((broken / "bundle.json").read_text())["graphs"]["maps"]["file"]
    (broken / graph).write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    refresh_bundle_checksums(broken)  # the engine's check answers, not the checksum
    with pytest.raises(CheckpointError, match=graph) as caught:
        Inferencer.load(broken)
    assert "\n" not in str(caught.value) and "onnxruntime" not in str(caught.value).lower()
    assert "checksum" not in str(caught.value)


def test_a_video_bundle_with_a_damaged_constant_is_one_checkpoint_error(onnx_bundle, tmp_path):
    """The video runtime loads its memories the same way (a minimal ConvLSTM description around a real graph)."""
    broken = _broken_bundle(onnx_bundle, tmp_path)
    meta = json.loads((broken / "bundle.json").read_text())
    meta["model"] = {**meta["model"], "name": "convlstm", "kind": "video"}
    meta["graphs"] = {"window": meta["graphs"]["features"]}
    meta["video"] = {"sequence_length": 2, "stride": 1}
    meta["constant_inputs"] = {"memory": {"file": "memory.npy", "shape": [2, 2], "dtype": "float32"}}
    (broken / "bundle.json").write_text(json.dumps(meta))
    np.save(broken / "memory.npy", np.zeros((2, 2), np.float32))
    _bad_npy(broken / "memory.npy", "bad header version")
    refresh_bundle_checksums(broken)
    with pytest.raises(CheckpointError, match="memory.npy") as caught:
        VideoInferencer.load(broken)
    assert "checksum" not in str(caught.value)


def test_a_patchcore_saved_before_the_bounded_bank_searches_exactly_as_it_was_fitted(tmp_path):
    """Models saved before exact_search existed were fitted and calibrated on an exact search; loading them with
    the approximate one (above 4,096 entries) moved their scores off the threshold they were set on."""
    import json

    from _textures import woven_textures

    from anomalens.models import create_detector, load_detector

    images = woven_textures(12, seed=5)
    folder = create_detector("patchcore", image_size=(64, 64)).fit(images[:10], images[10:]).save(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    assert load_detector(folder).config.exact_search is False  # saved with the field: as saved
    for name in ("exact_search", "memory_bank_size"):
        config["config"].pop(name)
    (folder / "config.json").write_text(json.dumps(config))
    older = load_detector(folder)
    assert older.config.exact_search is True and older.config.memory_bank_size is None
