"""Format versions of config.json and bundle.json: one table each of the fields every version added
(``schema.FORMAT_FIELDS``, ``bundle.BUNDLE_FIELDS``), kept equal to the code's fields, frozen once released; and a
file of a newer version is refused as "saved by a newer anomalens: upgrade", naming the file and both versions.

Adding a field: put it under a new version in the table (the current version is the newest there); a released
version's fields never change (:data:`RELEASED_FIELDS`), and a release's formats are those it shipped with
(:data:`RELEASES`), so a new format also needs a new ``anomalens.__version__``.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import re
from pathlib import Path

import pytest

import anomalens
from anomalens.errors import CheckpointError
from anomalens.inference import bundle as bundle_module
from anomalens.inference.bundle import BUNDLE_FIELDS, BUNDLE_VERSION, READABLE_VERSIONS, REQUIRED, read_bundle
from anomalens.metrics.drift import DriftReference
from anomalens.metrics.threshold import Calibration
from anomalens.models import base, schema
from anomalens.models.base import CONFIG_FILE, MODEL_REGISTRY, detector_class, load_detector
from anomalens.models.schema import FORMAT_FIELDS, FORMAT_VERSION, check_model_config, format_fields

ROOT = Path(__file__).resolve().parents[1]
# the formats each released anomalens writes (model format, bundle version)
RELEASES = {"0.1.0": (1, 3), "0.2.0": (2, 3)}
# SHA-256 of each released version's fields (see _digest); a version above these is not released yet
RELEASED_FIELDS = {
    "model format": {1: "e9bc99bd83ce34ac32cd25d278601029688f31a9bdd59701c0781210e8e7ea64",
                     2: "f37a4a1c6882550355465e8cb474be2021298baf98f10656e460d5e67e94f005"},
    "bundle": {1: "c3820523c1460032a5ee413f8cd163de5c57f0d9b332bb7b88e98fd2788b29c5",
               2: "390c28fe012d48c4d427eb9ad80ed1b294b641b06b43e06d819ada688aee54d4",
               3: "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"},
}
# top-level sections of bundle.json keyed by names (files, graphs), not fields; the model's settings; information only
BUNDLE_NAMED = ("graphs", "outputs", "constant_inputs", "files_sha256", "export_check", "postprocessing")


def _digest(fields) -> str:
    """Order-free fingerprint of one version's fields."""
    if isinstance(fields, dict):
        fields = {section: sorted(names) for section, names in fields.items()}
    else:
        fields = sorted(fields)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


# ---- the tables ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(MODEL_REGISTRY))
def test_the_format_table_lists_every_setting_of_every_model_once(model):
    fields = [f.name for f in dataclasses.fields(detector_class(model).config_class)]
    listed = format_fields(model)
    assert len(listed) == len(set(listed)), f"{model}: a field is listed twice"
    missing, stale = sorted(set(fields) - set(listed)), sorted(set(listed) - set(fields))
    assert not missing, f"{model}: add {missing} to schema.FORMAT_FIELDS under a new format version"
    assert not stale, f"{model}: {stale} are no longer settings; files that have them would be refused"


def test_the_format_table_lists_the_calibration_the_drift_reference_and_the_top_level():
    assert sorted(format_fields("calibration")) == sorted(f.name for f in dataclasses.fields(Calibration))
    assert sorted(format_fields("drift_reference")) == sorted(f.name for f in dataclasses.fields(DriftReference))
    assert set(schema.MODEL_CONFIG_FIELDS) == set(format_fields("config.json"))
    sections = {section for fields in FORMAT_FIELDS.values() for section in fields}
    assert sections == {"config.json", "calibration", "drift_reference", *MODEL_REGISTRY}


def test_a_saved_model_writes_the_oldest_format_that_holds_its_fields_and_only_those(tiny_folder):
    """Only stfeatures gained settings in formats 2 and 3: every other model is still written in format 1, which
    anomalens 0.1.0 reads (a line PC or a Ray worker not yet upgraded)."""
    meta = json.loads((tiny_folder / CONFIG_FILE).read_text())
    assert base.FORMAT_VERSION == FORMAT_VERSION == max(FORMAT_FIELDS) == 3
    assert meta["format_version"] == schema.lowest_format(meta["model"]) == 1
    assert {name: schema.lowest_format(name) for name in sorted(MODEL_REGISTRY) if name != "tiny"} == \
        {"autoencoder": 1, "convlstm": 1, "padim": 1, "patchcore": 1, "stfeatures": 3}
    assert set(meta) <= set(format_fields("config.json"))
    assert set(meta["calibration"]) <= set(format_fields("calibration"))
    assert set(meta["drift_reference"]) <= set(format_fields("drift_reference"))


def test_released_format_versions_never_change():
    for what, table in (("model format", FORMAT_FIELDS), ("bundle", BUNDLE_FIELDS)):
        released = RELEASED_FIELDS[what]
        for version, digest in released.items():
            assert _digest(table[version]) == digest, f"{what} version {version} was released: add a new version instead"
        assert all(version > max(released) for version in set(table) - set(released)), what
        assert sorted(table) == list(range(1, max(table) + 1)), what


def test_a_new_format_comes_with_a_new_anomalens_version():
    """A released anomalens writes the formats it shipped with: a new one needs a new version, which is what an older
    anomalens quotes when it refuses the file."""
    current = (FORMAT_VERSION, BUNDLE_VERSION)
    assert RELEASES.get(anomalens.__version__, current) == current
    assert all(_release(anomalens.__version__) >= _release(release) for release in RELEASES)
    pyproject = re.search(r'(?m)^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert pyproject == anomalens.__version__


def test_fields_added_after_version_1_load_older_files_as_they_were_fitted():
    """A file of an older format lacks them: they take the value that reproduces its scores."""
    for version, sections in FORMAT_FIELDS.items():
        if version == 1:
            continue
        for model in MODEL_REGISTRY:
            later = set(sections.get(model, ())) - set(detector_class(model).config_class.SAVED_BEFORE)
            assert not later, f"{model}: {sorted(later)} need a SAVED_BEFORE value"
        defaults = {f.name for f in dataclasses.fields(Calibration)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
        assert set(sections.get("calibration", ())) <= defaults
        assert not sections.get("drift_reference"), "DriftReference.from_dict takes only width from older files"


def test_the_bundle_table_is_the_readable_versions():
    assert BUNDLE_VERSION == max(BUNDLE_FIELDS) and READABLE_VERSIONS == tuple(range(1, BUNDLE_VERSION + 1))
    listed = [name for fields in BUNDLE_FIELDS.values() for name in fields]
    assert len(listed) == len(set(listed))
    assert set(REQUIRED) <= set(BUNDLE_FIELDS[1])
    assert {name.split(".")[0] for name in listed} <= set(listed)  # a section's fields come with the section


def _bundle_fields(meta: dict) -> set[str]:
    names = set(meta)
    for section, value in meta.items():
        if isinstance(value, dict) and section not in BUNDLE_NAMED:
            names |= {f"{section}.{key}" for key in value}
    return names


def _check_bundle_fields(folder: Path) -> None:
    meta = json.loads((folder / "bundle.json").read_text())
    assert meta["version"] == BUNDLE_VERSION
    unlisted = _bundle_fields(meta) - {name for fields in BUNDLE_FIELDS.values() for name in fields}
    assert not unlisted, f"add {sorted(unlisted)} to inference/bundle.py BUNDLE_FIELDS under a new bundle version"


def test_an_image_bundle_has_only_listed_fields(onnx_bundle):
    _check_bundle_fields(onnx_bundle)


def test_a_video_bundle_has_only_listed_fields(tmp_path):
    from anomalens.data.preprocessing import Preprocessing
    from anomalens.data.synthetic_video import synthetic_clip
    from anomalens.export import export_model
    from anomalens.models.base import create_detector

    size = (64, 96)
    prep = Preprocessing(image_size=size)
    clips = [[prep.prepare_array(f) for f in synthetic_clip(seed, n_frames=16, size=size)[0]] for seed in (0, 1, 2)]
    detector = create_detector("stfeatures", image_size=size, appearance_memory=256, motion_memory=32, batch_size=4,
                               training_degradations=(), codec_memory=(), motion_codec_memory=())
    detector.fit_clips(clips[:2], clips[2:]).save(tmp_path / "model")
    _check_bundle_fields(export_model(tmp_path / "model", "onnx", "fp32", tmp_path / "bundle").folder)


def test_schema_helpers_are_public_names():
    """bundle.json's checks use the schema's definitions of a valid field through public names only."""
    for path in [*(ROOT / "src").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        text = path.read_text()
        if "anomalens.models.schema import" not in text and "anomalens.validation import" not in text:
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.module in ("anomalens.models.schema", "anomalens.validation"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.relative_to(ROOT)} imports {private} from {node.module}"


# ---- config.json of a newer format -----------------------------------------------------------------
def _edit(folder: Path, **changes) -> Path:
    path = folder / CONFIG_FILE
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))
    return path


def _refused(folder: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_detector(folder)
    text = str(caught.value)
    assert "\n" not in text
    return text


def test_a_model_of_a_newer_format_says_upgrade_naming_the_file_and_both_versions(tiny_folder):
    newer = FORMAT_VERSION + 1
    meta = json.loads((tiny_folder / CONFIG_FILE).read_text())
    # what a newer anomalens adds: a setting and a top-level field this one does not know
    path = _edit(tiny_folder, format_version=newer, anomalens_version="0.9.0", config={**meta["config"], "new_setting": 3},
                 new_section={"a": 1})
    assert _refused(tiny_folder) == (
        f"{path}: this model was saved by a newer anomalens 0.9.0 (model format version {newer}; anomalens "
        f"{anomalens.__version__} reads model format versions up to {FORMAT_VERSION}): upgrade anomalens to load it")


def test_a_newer_format_quotes_no_odd_release_text(tiny_folder):
    _edit(tiny_folder, format_version=FORMAT_VERSION + 7, anomalens_version="x" * 200 + "\n")
    text = _refused(tiny_folder)
    assert f"saved by a newer anomalens (model format version {FORMAT_VERSION + 7};" in text and "xxx" not in text


@pytest.mark.parametrize("value, reason", [("1", "must be an integer, got '1'"), (True, "must be an integer, got True"),
                                           (1.0, "must be an integer, got 1.0"), (None, "must be an integer, got None"),
                                           (0, "0 is not a model format version"),
                                           (-3, "-3 is not a model format version")])
def test_a_format_version_that_is_no_version_is_a_damaged_file(tiny_folder, value, reason):
    path = _edit(tiny_folder, format_version=value)
    text = _refused(tiny_folder)
    assert text.startswith(f"{path}: field format_version: {reason}") and "upgrade" not in text


@pytest.mark.parametrize("value", [10**400, -(10**400), FORMAT_VERSION + 101])
def test_a_format_version_far_beyond_any_release_is_a_damaged_file_in_one_short_line(tiny_folder, value):
    """Versions grow by one per release: 10**400 is no newer anomalens's, and a message quoting all its digits (or
    telling the user to upgrade) would mislead."""
    path = _edit(tiny_folder, format_version=value)
    text = _refused(tiny_folder)
    assert text.startswith(f"{path}: field format_version: ") and "is not a model format version" in text
    assert "upgrade" not in text and len(text) < len(str(path)) + 160


def test_an_unknown_field_in_a_known_format_is_still_not_a_setting(tiny_folder):
    meta = json.loads((tiny_folder / CONFIG_FILE).read_text())
    _edit(tiny_folder, config={**meta["config"], "new_setting": 3})
    assert "field config.new_setting: is not a setting of this model" in _refused(tiny_folder)
    _edit(tiny_folder, config=meta["config"], new_section={"a": 1})
    assert "field new_section: is not a field of config.json" in _refused(tiny_folder)


@pytest.fixture
def two_formats(monkeypatch):
    """The table as it will be once a version 2 adds PatchCore's exact_search (now a version 1 field)."""
    first = {**FORMAT_FIELDS[1], "patchcore": tuple(n for n in FORMAT_FIELDS[1]["patchcore"] if n != "exact_search")}
    monkeypatch.setattr(schema, "FORMAT_FIELDS", {1: first, 2: {"patchcore": ("exact_search",)}})


def _patchcore(version: int, **config) -> dict:
    cls = detector_class("patchcore").config_class
    return {"format_version": version, "model": "patchcore", "kind": "image", "config": {**cls().to_dict(), **config}}


def test_each_format_version_has_its_own_fields(two_formats):
    file = Path("model/config.json")
    older = _patchcore(1)
    older["config"].pop("exact_search")
    assert check_model_config(older, file) is older  # saved before the field: its SAVED_BEFORE value on load
    with pytest.raises(CheckpointError, match=r"field config\.exact_search: is not a field of model format version 1 "
                                              r"\(it came with version 2\)"):
        check_model_config(_patchcore(1), file)  # a version 1 file never had it: put there by hand
    assert check_model_config(_patchcore(2), file)["format_version"] == 2
    newer = _patchcore(2)
    newer["config"].pop("exact_search")
    with pytest.raises(CheckpointError, match=r"field config\.exact_search: is missing"):
        check_model_config(newer, file)
    with pytest.raises(CheckpointError, match=r"model format version 3; anomalens \S+ reads model format versions up to 2\)"):
        check_model_config(_patchcore(3), file)


# ---- bundle.json of a newer version ----------------------------------------------------------------
def _bundle(tmp_path: Path, **fields) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "bundle.json").write_text(json.dumps({"format": "anomalens-bundle", **fields}))
    return folder


def test_a_bundle_of_a_newer_version_says_upgrade_naming_the_file_and_both_versions(tmp_path):
    folder = _bundle(tmp_path, version=BUNDLE_VERSION + 1, anomalens_version="0.9.0", new_section={})
    with pytest.raises(CheckpointError) as caught:
        read_bundle(folder)
    assert str(caught.value) == (
        f"{folder / 'bundle.json'}: this bundle was exported by a newer anomalens 0.9.0 (bundle version "
        f"{BUNDLE_VERSION + 1}; anomalens {anomalens.__version__} reads bundle versions up to {BUNDLE_VERSION}): "
        "upgrade anomalens to load it")


@pytest.mark.parametrize("value, reason", [("3", "must be an integer, got '3'"), (True, "must be an integer, got True"),
                                           (None, "must be an integer, got None"),
                                           (0, r"0 is not a bundle version \(anomalens \S+ reads 1, 2, 3\)")])
def test_a_bundle_version_that_is_no_version_is_a_damaged_file(tmp_path, value, reason):
    folder = _bundle(tmp_path, version=value)
    with pytest.raises(CheckpointError, match=rf"bundle\.json: field version: {reason}"):
        read_bundle(folder)


def test_the_runtime_reads_the_bundle_table(tmp_path):
    """READABLE_VERSIONS comes from BUNDLE_FIELDS: a version past the table is a newer bundle."""
    assert bundle_module.READABLE_VERSIONS == tuple(BUNDLE_FIELDS)
    with pytest.raises(CheckpointError, match="newer anomalens"):
        read_bundle(_bundle(tmp_path, version=max(BUNDLE_FIELDS) + 1))
