"""Tampered checkpoints (issue 14, points 2 and 5): every field of a real model's config.json and run.json is
mutated in turn; each mutation is refused by `anomalens evaluate` with exit code 2 and one line that names the
file and the field, before any model is built. Hypothesis then tries random JSON in random fields."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _hostile import copy_run, error_line, hostile_dataset, real_run  # noqa: F401 (fixtures)
from anomalens.cli import main
from anomalens.errors import CheckpointError, ConfigError
from anomalens.models.base import MODEL_REGISTRY, detector_class
from anomalens.models.schema import CHOICES, MODEL_CHECKED, RANGES, check_settings
from anomalens.runtime import write_json_atomic
from anomalens.workflows.runs import load_detector

# values no config field may take (bools are not numbers, NaN and infinities are not numbers we accept)
WRONG_VALUES = {
    "string": "abc",
    "list": ["x"],
    "object": {"a": 1},
    "NaN": math.nan,
    "infinity": math.inf,
    "bool": True,
    "huge negative": -(10**9),
}


def _optional_fields(model: str) -> set[str]:
    """Config fields where null is a valid value (annotated ``X | None``)."""
    import typing

    hints = typing.get_type_hints(detector_class(model).config_class)
    return {name for name, hint in hints.items() if type(None) in typing.get_args(hint)}


def _config(run: Path) -> dict:
    return json.loads((run / "model" / "config.json").read_text())


def _write(path: Path, payload) -> None:
    # allow_nan: the tests write what a hostile editor would, including bare NaN
    path.write_text(json.dumps(payload, allow_nan=True))


def _bool_fields(model: str) -> set[str]:
    import typing

    return {name for name, hint in typing.get_type_hints(detector_class(model).config_class).items() if hint is bool}


def _mutations(base: dict) -> list[tuple[str, str, object]]:
    """(field shown in the error, label, new config.json) for every field and every wrong value."""
    cases = []
    optional = _optional_fields(base["model"])
    flags = _bool_fields(base["model"])
    for name in base["config"]:
        for label, value in WRONG_VALUES.items():
            if label == "bool" and name in flags:
                continue  # true is a valid value of a true/false setting
            cases.append((f"config.{name}", label, {**base, "config": {**base["config"], name: value}}))
        if name not in optional:
            cases.append((f"config.{name}", "null", {**base, "config": {**base["config"], name: None}}))
    cases.append(("config.image_size", "100000 x 100000", {**base, "config": {**base["config"], "image_size": [100000, 100000]}}))
    cases.append(("config.image_size", "negative", {**base, "config": {**base["config"], "image_size": [-64, 64]}}))
    cases.append(("config.image_size", "string", {**base, "config": {**base["config"], "image_size": "64"}}))
    cases.append(("config.coreset_ratio", "string number", {**base, "config": {**base["config"], "coreset_ratio": "0.1"}}))
    cases.append(("config.batch_size", "-1", {**base, "config": {**base["config"], "batch_size": -1}}))
    cases.append(("config.target_fpr", "2", {**base, "config": {**base["config"], "target_fpr": 2}}))
    cases.append(("config.surprise", "unknown key", {**base, "config": {**base["config"], "surprise": 1}}))
    if "stages" in base["config"]:  # out of order once crashed the loader ("negative shift count")
        cases.append(("config.stages", "descending", {**base, "config": {**base["config"], "stages": [4, 2]}}))
        cases.append(("config.stages", "repeated", {**base, "config": {**base["config"], "stages": [2, 2]}}))
        cases.append(("config.stages", "empty", {**base, "config": {**base["config"], "stages": []}}))
    import dataclasses

    from anomalens.metrics.threshold import Calibration

    required = {f.name for f in dataclasses.fields(Calibration) if f.default is dataclasses.MISSING}
    text = {f.name for f in dataclasses.fields(Calibration) if f.type in (str, "str")}
    cal = base["calibration"]
    for name in cal:
        if name in required:  # fields added later may be missing (older checkpoints)
            cases.append((f"calibration.{name}", "missing", {**base, "calibration": {k: v for k, v in cal.items() if k != name}}))
        if name not in text:
            cases.append((f"calibration.{name}", "string", {**base, "calibration": {**cal, name: "1.0"}}))
        cases.append((f"calibration.{name}", "NaN", {**base, "calibration": {**cal, name: math.nan}}))
    cases.append(("calibration.scale", "zero", {**base, "calibration": {**cal, "scale": 0}}))
    cases.append(("calibration.scale", "negative", {**base, "calibration": {**cal, "scale": -1.0}}))
    cases.append(("calibration.validation_count", "zero", {**base, "calibration": {**cal, "validation_count": 0}}))
    cases.append(("calibration", "string", {**base, "calibration": "high"}))
    cases.append(("calibration", "list", {**base, "calibration": [1, 2]}))
    cases.append(("config", "missing", {k: v for k, v in base.items() if k != "config"}))
    cases.append(("config", "list", {**base, "config": [1, 2]}))
    cases.append(("config", "string", {**base, "config": "fast"}))
    cases.append(("model", "list", {**base, "model": ["patchcore"]}))
    cases.append(("model", "number", {**base, "model": 3}))
    cases.append(("kind", "other", {**base, "kind": "audio"}))
    cases.append(("interrupted", "string", {**base, "interrupted": "yes"}))
    cases.append(("preprocessing.image_size", "huge", {**base, "preprocessing": {"image_size": [100000, 100000]}}))
    cases.append(("preprocessing", "string", {**base, "preprocessing": "none"}))
    cases.append(("anomalens_version", "number", {**base, "anomalens_version": 1}))
    # no version at all (a newer one says "upgrade anomalens": tests/test_format_versions.py)
    for label, value in (("string", "1"), ("bool", True), ("float", 1.0), ("null", None), ("zero", 0), ("negative", -1)):
        cases.append(("format_version", label, {**base, "format_version": value}))
    return cases


def _top_level_mutations() -> list[tuple[str, str, object]]:
    return [("config.json", "list", [1, 2]), ("config.json", "string", "model"), ("config.json", "null", None),
            ("config.json", "number", 7)]


@pytest.fixture(scope="module")
def base_config(real_run) -> dict:
    return _config(real_run)


def test_every_field_of_config_json_is_checked(real_run, base_config, tmp_path, capsys):
    """About 150 tampered config.json files: each refused with exit 2, one line naming the file and the field."""
    run = copy_run(real_run, tmp_path / "run")
    path = run / "model" / "config.json"
    cases = _mutations(base_config) + _top_level_mutations()
    assert len(cases) > 120
    for field, label, payload in cases:
        _write(path, payload)
        code = main(["evaluate", "--checkpoint", str(run)])
        line = error_line(capsys)
        assert code == 2, (field, label)
        assert str(path) in line, (field, label, line)
        shown = field.split(".")[0] if field == "config.json" else field
        assert shown in line, (field, label, line)
        assert not (run / "evaluation").exists()


def test_bad_json_syntax_deep_nesting_and_size(real_run, tmp_path, capsys):
    run = copy_run(real_run, tmp_path / "run")
    path = run / "model" / "config.json"
    for label, data in {"truncated": path.read_bytes()[:50], "not UTF-8": b"\xff\xfe{", "empty": b"",
                        "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000}.items():
        path.write_bytes(data)
        assert main(["predict", "--checkpoint", str(run), str(run)]) == 2, label
        line = error_line(capsys)
        assert str(path) in line and "unreadable config.json" in line, (label, line)


RUN_MUTATIONS = {
    "list": [1, 2],
    "string": "run",
    "category number": {"category": 5},
    "data_dir list": {"data_dir": ["/"]},
    "kind other": {"kind": "audio"},
    "image_size string": {"image_size": "abc"},
    "image_size huge": {"image_size": [100000, 100000]},
    "seed string": {"seed": "zero"},
    "validation_fraction 2": {"validation_fraction": 2},
    "validation_fraction NaN": {"validation_fraction": math.nan},
    "interrupted string": {"interrupted": "yes"},
    "threshold NaN": {"threshold": math.nan},
    "category with NUL": {"category": "a\x00b"},
    "settings list": {"settings": [1]},
    "validation_files string": {"validation_files": "all"},
}


@pytest.mark.parametrize("label", sorted(RUN_MUTATIONS))
def test_every_field_of_run_json_is_checked(real_run, tmp_path, capsys, label):
    run = copy_run(real_run, tmp_path / "run")
    path = run / "run.json"
    mutation = RUN_MUTATIONS[label]
    original = json.loads(path.read_text())
    _write(path, {**original, **mutation} if isinstance(mutation, dict) else mutation)
    assert main(["evaluate", "--checkpoint", str(run)]) == 2
    line = error_line(capsys)
    assert str(path) in line
    if isinstance(mutation, dict):
        assert f"field {next(iter(mutation))}" in line, line
    assert not (run / "evaluation").exists()


def test_damaged_weights_are_refused(real_run, tmp_path, capsys):
    import struct

    from _saved_tensors import refresh_weights_checksum

    run = copy_run(real_run, tmp_path / "run")
    weights = run / "model" / "weights.safetensors"
    good = weights.read_bytes()
    header = json.dumps({"memory_bank_": {"dtype": "F32", "shape": [1_000_000, 1_000_000], "data_offsets": [0, 16]}}).encode()
    cases = {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "huge header length": struct.pack("<Q", 2**60) + b"{}",
        "tensor larger than the file": struct.pack("<Q", len(header)) + header + b"\0" * 16,
        "text": b"not a safetensors file",
    }
    for label, data in cases.items():
        weights.write_bytes(data)
        refresh_weights_checksum(weights)  # the safetensors checks answer, not the checksum
        assert main(["evaluate", "--checkpoint", str(run)]) == 2, label
        line = error_line(capsys)
        assert str(weights) in line and "checksum" not in line, label


def test_wrong_tensor_shape_is_refused(real_run, tmp_path, capsys):
    import torch
    from _saved_tensors import rewrite_weights
    from safetensors.torch import load_file

    run = copy_run(real_run, tmp_path / "run")
    weights = run / "model" / "weights.safetensors"
    tensors = load_file(str(weights))
    name = next(iter(tensors))
    rewrite_weights(weights, {**tensors, name: torch.zeros(3, 7)})  # the shape check, not the checksum
    assert main(["evaluate", "--checkpoint", str(run)]) == 2
    line = error_line(capsys)
    assert str(weights) in line and "checksum" not in line
    rewrite_weights(weights, {})
    assert main(["evaluate", "--checkpoint", str(run)]) == 2
    line = error_line(capsys)
    assert str(weights) in line and "checksum" not in line


def test_nan_weights_are_refused_and_a_nan_score_is_never_normal(real_run, tmp_path, capsys):
    """A NaN in a memory once loaded and scored NaN, which `score > threshold` called normal."""
    import torch
    from _saved_tensors import rewrite_weights
    from safetensors.torch import load_file

    from anomalens.metrics.threshold import Calibration

    run = copy_run(real_run, tmp_path / "run")
    weights = run / "model" / "weights.safetensors"
    tensors = load_file(str(weights))
    name = max((n for n, t in tensors.items() if t.is_floating_point()), key=lambda n: tensors[n].numel())
    damaged = tensors[name].clone()
    damaged.view(-1)[0] = float("nan")
    rewrite_weights(weights, {**tensors, name: damaged})  # the checksum matches: the values answer
    assert main(["evaluate", "--checkpoint", str(run)]) == 2
    line = error_line(capsys)
    assert str(weights) in line and name[:60] in line and "NaN" in line
    calibration = Calibration(threshold=1.0, scale=1.0, target_fpr=0.01, validation_mean=0.0, validation_std=1.0,
                              validation_max=1.0, validation_count=10)
    assert calibration.is_anomalous(np.array([0.5, 1.0, 1.5, np.nan])).tolist() == [False, False, True, True]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_values_in_random_fields_never_crash_the_loader(real_run, base_config, tmp_path_factory, data):
    """Whatever JSON a field holds, loading either works or raises CheckpointError naming config.json."""
    run = tmp_path_factory.mktemp("fuzz") / "run"
    copy_run(real_run, run)
    section = data.draw(st.sampled_from(["config", "calibration", "top"]))
    payload = json.loads(json.dumps(base_config))
    target = payload if section == "top" else payload[section]
    field = data.draw(st.sampled_from(sorted(target)))
    target[field] = data.draw(json_values)
    _write(run / "model" / "config.json", payload)
    try:
        detector = load_detector(run, device="cpu")
    except CheckpointError as exc:
        assert exc.path is not None and exc.path.name in ("config.json", "weights.safetensors", "model"), str(exc)
        assert "\n" not in str(exc)
        return
    # accepted: then it was a value the schema allows, and the model works with it
    assert detector.calibration_ is None or math.isfinite(detector.calibration_.threshold)


def test_every_config_field_of_every_model_has_a_range_or_choices():
    """A new config field cannot slip past the schema: each one needs a rule (ints, floats, strings)."""
    import dataclasses
    import typing

    missing = []
    for name in MODEL_REGISTRY:
        cls = detector_class(name).config_class
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] is bool:
                continue
            if f.name not in RANGES and f.name not in CHOICES and f.name not in MODEL_CHECKED:
                missing.append(f"{name}.{f.name}")
    assert missing == []


def test_training_settings_use_the_same_rules():
    from anomalens.models.image.patchcore import PatchCoreConfig

    with pytest.raises(ConfigError, match=r"batch_size must be 1\.\.4096, got -1 \(model patchcore\)"):
        check_settings(PatchCoreConfig, {"batch_size": -1}, "patchcore")
    with pytest.raises(ConfigError, match="target_fpr"):
        check_settings(PatchCoreConfig, {"target_fpr": 2})
    with pytest.raises(ConfigError, match="surprise is not a setting of this model"):
        check_settings(PatchCoreConfig, {"surprise": 1})
    assert check_settings(PatchCoreConfig, {"batch_size": 8, "image_size": [64, 96]}) == {"batch_size": 8, "image_size": (64, 96)}
    with pytest.raises(ConfigError, match=r"stages must be strictly increasing, got \[3, 2\] \(model patchcore\)"):
        check_settings(PatchCoreConfig, {"stages": [3, 2]}, "patchcore")
    assert check_settings(PatchCoreConfig, {"stages": [1, 3]}) == {"stages": (1, 3)}


def test_cli_and_checkpoint_share_the_image_size_cap(hostile_dataset, tmp_path, capsys):
    from anomalens import limits

    root, category = hostile_dataset
    too_big = str(limits.MAX_IMAGE_SIDE + 16)
    assert main(["train", "--data-dir", str(root), "--category", category, "--results-dir", str(tmp_path),
                 "--image-size", too_big, "--device", "cpu"]) == 2
    assert f"{limits.MIN_IMAGE_SIDE}..{limits.MAX_IMAGE_SIDE}" in error_line(capsys)
    assert main(["train", "--data-dir", str(root), "--category", category, "--results-dir", str(tmp_path),
                 "--image-size", "64", "--batch-size", "-1", "--device", "cpu"]) == 2
    assert "--batch-size must be 1..4096, got -1" in error_line(capsys)


def test_json_is_never_written_with_bare_nan(tmp_path):
    path = write_json_atomic(tmp_path / "metrics.json", {"auroc": math.nan, "x": [math.inf, 1.0], "ok": 0.5})
    assert json.loads(path.read_text()) == {"auroc": None, "x": [None, 1.0], "ok": 0.5}
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
