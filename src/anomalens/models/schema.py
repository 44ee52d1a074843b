"""The checkpoint schema: every field of a model's ``config.json`` and a run's ``run.json`` checked on load.

A checkpoint is data from disk that anyone may have edited, so nothing in it is trusted: each field is
checked for its type (from the model's config dataclass) and its range (the table :data:`RANGES`, which
reads its caps from :mod:`anomalens.limits`, the same caps the CLI uses) before a single tensor is
allocated. A failure is one line naming the file and the field, raised as
:class:`~anomalens.errors.CheckpointError`. Training settings (CLI flags, the UI's advanced JSON) go
through :func:`check_settings`, so a value refused on load is refused when training too. Which fields a file may
have follows from its ``format_version`` (:data:`FORMAT_FIELDS`, the fields each version added); a version newer
than this anomalens reads is refused as such, naming both versions, before any field is looked at.

>>> check_settings(PatchCoreConfig, {"batch_size": -1})          # doctest: +SKIP
Traceback (most recent call last):
ConfigError: batch_size must be 1..4096, got -1
>>> check_model_config(json.loads(text), Path("model/config.json"))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Callable, Mapping

from anomalens import limits
from anomalens.errors import AnomalensError, CheckpointError, ConfigError
from anomalens.runtime import SHA256_HEX
# one definition of a valid number and range, shared with bundle.json's checks (inference/bundle.py)
from anomalens.validation import Invalid, Range, check_number, check_version, show


def _choices(name: str) -> Callable[[], tuple[str, ...]]:
    """Allowed strings, read from the module that owns them (imported only when a checkpoint is checked)."""

    def read() -> tuple[str, ...]:
        if name == "backbone":
            from anomalens.models.components.backbone import VARIANTS

            return tuple(VARIANTS)
        if name == "loss":
            from anomalens.models.components.losses import LOSS_KINDS

            return tuple(LOSS_KINDS)
        if name == "normal_reference":
            from anomalens.models.image.autoencoder import NORMAL_REFERENCES

            return tuple(NORMAL_REFERENCES)
        if name == "score_region":
            from anomalens.models.image.feature_detector import SCORE_REGIONS

            return SCORE_REGIONS
        if name == "flow_preset":
            from anomalens.models.video.motion import FLOW_PRESETS

            return tuple(FLOW_PRESETS)
        if name == "cue_combination":
            from anomalens.models.video.stfeatures import CUE_COMBINATIONS

            return CUE_COMBINATIONS
        if name == "anomaly_map":
            from anomalens.models.video.stfeatures import ANOMALY_MAPS

            return ANOMALY_MAPS
        if name == "temporal_spill":
            from anomalens.models.video.stfeatures import TEMPORAL_SPILLS

            return TEMPORAL_SPILLS
        if name in ("appearance_by_place", "motion_by_place"):
            from anomalens.models.video.stfeatures import PLACE_RULES

            return PLACE_RULES
        raise KeyError(name)

    return read


SIDE = Range(limits.MIN_IMAGE_SIDE, limits.MAX_IMAGE_SIDE)
# list settings whose values must rise (backbone stages, shallow to deep)
INCREASING = ("stages",)
POSITIVE_COUNT = Range(1, limits.MAX_MEMORY_ENTRIES)
# Range of every config field of the built-in models; a test checks that none is missing.
RANGES: dict[str, Range] = {
    "image_size": SIDE,
    "seed": Range(0, 2**63 - 1),
    "batch_size": Range(1, limits.MAX_BATCH_SIZE),
    "target_fpr": Range(0.0, 0.5, open_low=True, open_high=True),
    # feature models
    "stages": Range(0, 6),
    "neighbourhood": Range(1, 15),
    "projection_dim": Range(1, limits.MAX_CHANNELS),
    "blur_sigma": Range(0.0, 256.0),
    "tile": SIDE,
    "tile_overlap": Range(0, limits.MAX_IMAGE_SIDE - 1),
    "score_window": Range(1, limits.MAX_IMAGE_SIDE),
    "coreset_ratio": Range(0.0, 1.0, open_low=True),
    "coreset_projection_dim": Range(1, limits.MAX_CHANNELS),
    "num_neighbours": Range(1, 1000),
    "memory_bank_size": POSITIVE_COUNT,
    "ridge": Range(0.0, 1e6, open_low=True),
    # autoencoder and convlstm
    "epochs": Range(0, limits.MAX_EPOCHS),  # the models refuse 0 themselves where they need an epoch
    "lr": Range(0.0, 10.0, open_low=True),
    "latent_dim": Range(1, limits.MAX_CHANNELS),
    "ssim_weight": Range(0.0, 1.0),
    "num_workers": Range(0, 256),
    "smoothing_sigma": Range(0.0, 256.0),
    "patience": Range(0, limits.MAX_EPOCHS),
    "weight_decay": Range(0.0, 1.0),
    "sequence_length": Range(1, limits.MAX_SEQUENCE_LENGTH),
    "stride": Range(1, limits.MAX_SEQUENCE_LENGTH),
    "lstm_hidden_dim": Range(1, limits.MAX_CHANNELS),
    "lstm_layers": Range(1, 16),
    # stfeatures
    "appearance_memory": POSITIVE_COUNT,
    "appearance_samples": POSITIVE_COUNT,
    "motion_scale": Range(0.0, 1.0, open_low=True),
    "orientation_bins": Range(2, 360),
    "motion_cell": Range(1, 256),
    "motion_memory": Range(1, 65_536),
    "position_tolerance": Range(0, 16),
    "frame_step": Range(1, 10_000),
    "temporal_sigma": Range(0.0, 10_000.0),
    "temporal_median": Range(1, 999),  # odd: the model checks that
    "temporal_cap": Range(0.0, 1000.0),
    "temporal_spill": Range(0.0, 1000.0),
    "input_blur": Range(0.0, 64.0),
    "flow_min_contrast": Range(0.0, 255.0),
    "still_texture_weight": Range(0.0, 1000.0),
    "above_ceiling_lowpass": Range(0, 63),  # odd (or 0, 1): the model checks that
    "place_spread_floor": Range(0.0, 10.0, open_low=True),
}
# Text settings whose syntax their model checks when it is built (refused there, as a CheckpointError on load).
MODEL_CHECKED: dict[str, str] = {"training_degradations": "models/video/degrade.py parses each entry",
                                 "codec_memory": "models/video/degrade.py parses each entry",
                                 "motion_codec_memory": "models/video/degrade.py parses each entry"}
CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {
    name: _choices(name) for name in ("backbone", "loss", "normal_reference", "flow_preset", "score_region", "cue_combination",
                                         "temporal_spill", "anomaly_map", "appearance_by_place", "motion_by_place")
}
# ---- format versions ---------------------------------------------------------------------------------
# What each version of config.json's format added, the one record of which fields a saved model may have:
# "config.json" its top-level fields, "calibration" and "drift_reference" those of the two sections, a model's
# name its settings under "config". The newest version is FORMAT_VERSION (what BaseDetector.save writes) and every
# version up to it is read. tests/test_format_versions.py checks that these are exactly the code's fields and that
# a released version's fields never change, so a new field comes with a new version: an older anomalens then
# refuses the model as "saved by a newer anomalens: upgrade" instead of "not a setting" for the field it lacks.
# Version 1 holds every field up to this table, some added over time: those stay optional in version 1 files (the
# models' SAVED_BEFORE, calibration fields with defaults, drift_reference.width; preprocessing, drift_reference,
# interrupted and weights_sha256 at the top level). A field of version N >= 2 is required in files of version N
# and later and refused in older ones (they were written without it: it was put there by hand), which load with
# their model's SAVED_BEFORE value of it (a test checks that there is one).
_DETECTOR = ("image_size", "seed", "batch_size", "target_fpr")  # DetectorConfig: every model
_FEATURES = (*_DETECTOR, "backbone", "stages", "neighbourhood", "projection_dim", "blur_sigma", "tile", "tile_overlap",
             "score_region", "score_window", "threshold_from_folds")  # FeatureDetectorConfig: patchcore, padim
FORMAT_FIELDS: dict[int, dict[str, tuple[str, ...]]] = {
    1: {
        "config.json": ("format_version", "anomalens_version", "model", "kind", "config", "preprocessing",
                        "calibration", "drift_reference", "interrupted", "weights_sha256"),
        "calibration": ("threshold", "scale", "target_fpr", "validation_mean", "validation_std", "validation_max",
                        "validation_count", "pixel_threshold", "pixel_target_fpr", "tail_model", "measured_fpr",
                        "effective_count", "needed_count", "warning", "clip_held_out_fpr", "fold_shift",
                        "fold_shift_items"),
        "drift_reference": ("median", "low", "high", "count", "width"),
        "patchcore": (*_FEATURES, "coreset_ratio", "memory_bank_size", "exact_search", "coreset_projection_dim",
                      "num_neighbours"),
        "padim": (*_FEATURES, "ridge"),
        "autoencoder": (*_DETECTOR, "epochs", "lr", "latent_dim", "loss", "ssim_weight", "num_workers",
                        "smoothing_sigma", "patience", "weight_decay", "normal_reference"),
        "convlstm": (*_DETECTOR, "sequence_length", "stride", "epochs", "lr", "latent_dim", "lstm_hidden_dim",
                     "lstm_layers"),
        "stfeatures": (*_DETECTOR, "backbone", "stages", "appearance_memory", "appearance_samples", "motion_scale",
                       "flow_preset", "flow_min_contrast", "orientation_bins", "still_texture_weight",
                       "still_texture_where_moving", "motion_cell", "motion_memory", "position_tolerance", "frame_step",
                       "temporal_sigma", "temporal_median", "temporal_cap", "temporal_spill", "input_blur",
                       "appearance_above_typical", "typical_appearance_ceiling", "training_degradations",
                       "codec_memory", "above_ceiling_lowpass", "threshold_from_folds", "motion_per_second",
                       "cue_combination", "typical_motion_ceiling", "motion_codec_memory", "anomaly_map"),
    },
    # anomalens 0.2.0: each video cue's cells measured against their own normal range
    2: {"stfeatures": ("appearance_by_place", "motion_by_place", "place_spread_floor")},
    # anomalens 0.3.0: video frames noisier than the training footage low-passed down to its noise level
    3: {"stfeatures": ("match_noise_level",)},
}
FORMAT_VERSION = max(FORMAT_FIELDS)


def format_fields(section: str, version: int = FORMAT_VERSION) -> tuple[str, ...]:
    """The fields of ``section`` (``config.json``, ``calibration``, ``drift_reference`` or a model's name) that a
    file of format ``version`` may have: those added by versions 1 to ``version``."""
    return tuple(name for v in sorted(FORMAT_FIELDS) if v <= version for name in FORMAT_FIELDS[v].get(section, ()))


def lowest_format(model: str) -> int:
    """The oldest format that holds every field a model of this name now saves: the newest version that added a
    top-level, calibration or drift-reference field or a setting of this model. Saved in it, an older anomalens
    that knows that format still reads a model whose fields did not change (a PatchCore, when only stfeatures
    gained settings), instead of refusing it as newer."""
    sections = ("config.json", "calibration", "drift_reference", model)
    return max(v for v, added in FORMAT_FIELDS.items() if v == min(FORMAT_FIELDS) or any(added.get(s) for s in sections))


def added_in(section: str) -> dict[str, int]:
    """Field of ``section`` -> the format version that added it (a section the table lacks, such as a test's
    model, gives none: all its fields count as version 1's)."""
    return {name: v for v in sorted(FORMAT_FIELDS) for name in FORMAT_FIELDS[v].get(section, ())}


# Top-level fields of a model's config.json (what BaseDetector.save writes; "preprocessing" in older files). Only
# model, kind and config are required: drift_reference and weights_sha256 (the SHA-256 of weights.safetensors) came
# later, and a checkpoint saved before them loads as it did then, without the drift or the checksum check.
MODEL_CONFIG_FIELDS = format_fields("config.json")
# Fields of a model's config.json besides "config"; "model" is checked against the registry.
CALIBRATION_RANGES: dict[str, tuple[type, Range]] = {
    "threshold": (float, Range()),
    "scale": (float, Range(0.0, None, open_low=True)),
    "target_fpr": (float, RANGES["target_fpr"]),
    "validation_mean": (float, Range()),
    "validation_std": (float, Range(0.0)),
    "validation_max": (float, Range()),
    "validation_count": (int, Range(1, 2**63 - 1)),
}


# ---- values ------------------------------------------------------------------------------------------
def _value(field: str, value: Any, annotation: Any, name: str) -> Any:
    """Check ``value`` against a config dataclass annotation (int, float, str, bool, tuples, ``X | None``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(annotation)):
            return None
        if len(options) == 1:
            return _value(field, value, options[0], name)
        problems = []
        for option in options:
            try:
                return _value(field, value, option, name)
            except Invalid as exc:
                problems.append((option, exc))
        # the option of the value's own kind says what is wrong with it (a word that is not a choice, a number out
        # of range) better than "wrong type"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        for option, exc in problems:
            if (option is str and isinstance(value, str)) or (option in (int, float) and number):
                raise exc
        raise Invalid(field, f"has the wrong type ({type(value).__name__})")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise Invalid(field, f"must be a list, got {show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            if len(value) > 16:
                raise Invalid(field, f"must be a list of at most 16 values, got {len(value)}")
            items = tuple(_value(f"{field}[{i}]", v, args[0], name) for i, v in enumerate(value))
            if name in INCREASING and any(b <= a for a, b in zip(items, items[1:])):
                # the feature extractor takes its grid from the first stage: out of order, no grid fits
                raise Invalid(field, f"must be strictly increasing, got {show(value)}")
            if name in INCREASING and not items:
                raise Invalid(field, "must list at least one value")
            return items
        if len(value) != len(args):
            raise Invalid(field, f"must be a list of {len(args)} values, got {show(value)}")
        return tuple(_value(f"{field}[{i}]", v, a, name) for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise Invalid(field, f"must be true or false, got {show(value)}")
        return value
    if annotation in (int, float):
        return check_number(field, value, annotation, RANGES.get(name))
    if annotation is str:
        if not isinstance(value, str):
            raise Invalid(field, f"must be a string, got {show(value)}")
        if name in CHOICES and value not in CHOICES[name]():
            raise Invalid(field, f"{value[:40]} is not one of {', '.join(CHOICES[name]())}")
        return value
    if value is not None and isinstance(annotation, type) and not isinstance(value, annotation):
        raise Invalid(field, f"must be a {annotation.__name__}, got {show(value)}")
    return value


def _settings(config_class: type, data: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise Invalid(prefix.rstrip(".") or "settings", f"must be an object of settings, got {show(data)}")
    hints = typing.get_type_hints(config_class)
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise Invalid(f"{prefix}{unknown[0]}", f"is not a setting of this model (known: {', '.join(sorted(known))})")
    return {name: _value(f"{prefix}{name}", value, hints[name], name) for name, value in data.items()}


# ---- public checks --------------------------------------------------------------------------------
def read_json(file: str | Path) -> Any:
    """A checkpoint's JSON file, parsed with its size capped; any failure is a CheckpointError naming the file."""
    file = Path(file)
    try:
        size = file.stat().st_size
        if size > limits.MAX_CHECKPOINT_JSON_BYTES:
            raise CheckpointError(f"{size / 2**20:.0f} MB is too large for this file (at most "
                                  f"{limits.MAX_CHECKPOINT_JSON_BYTES / 2**20:.0f} MB)", file)
        return json.loads(file.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(exc, RecursionError) else _first_line(exc)
        raise CheckpointError(f"unreadable {file.name} ({reason})", file) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def check_settings(config_class: type, settings: Mapping[str, Any], model: str | None = None) -> dict[str, Any]:
    """Training settings (CLI flags, UI JSON) for ``config_class``, type- and range-checked; raises ConfigError."""
    try:
        return _settings(config_class, settings, "")
    except Invalid as exc:
        where = f" (model {model})" if model else ""
        raise ConfigError(f"{exc.field} {exc.message}{where}") from None


def check_model_config(meta: Any, file: str | Path) -> dict[str, Any]:
    """A parsed ``config.json``: its format version first (one newer than this anomalens reads says "upgrade
    anomalens", naming both versions), then every field; returns it unchanged or raises CheckpointError naming the
    field."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"field (top level): must be an object, got {type(meta).__name__}", file)
    # before the fields: a newer format's fields would otherwise be refused one by one as unknown
    version = check_version(meta, "format_version", tuple(FORMAT_FIELDS), "model format", "this model was saved", file)
    try:
        return _model_config(meta, version)
    except Invalid as exc:
        raise CheckpointError(f"field {exc.field}: {exc.message}", file) from None
    except AnomalensError as exc:  # e.g. an unknown model name from the registry
        raise CheckpointError(exc.message, file) from None


def _version_fields(section: str, data: Mapping[str, Any], version: int, prefix: str) -> None:
    """The rules of :data:`FORMAT_FIELDS` for one section of a file of format ``version``: no field of a later
    version (the file was written without it, so it was put there by hand), and every field of versions 2 to
    ``version`` (each section's own rules say which of version 1's may be missing)."""
    added = added_in(section)
    later = sorted(name for name in data if added.get(name, 1) > version)
    if later:
        raise Invalid(f"{prefix}{later[0]}", f"is not a field of model format version {version} (it came with version "
                                             f"{added[later[0]]}): the file was changed after it was saved")
    missing = [name for name, v in added.items() if 1 < v <= version and name not in data]
    if missing:
        raise Invalid(f"{prefix}{missing[0]}", "is missing")


def _model_config(meta: dict[str, Any], version: int) -> dict[str, Any]:
    from anomalens.models.base import MODEL_REGISTRY, detector_class

    _version_fields("config.json", meta, version, "")
    known = format_fields("config.json", version)
    unknown = sorted(str(k) for k in meta if k not in known)
    if unknown:  # refused like an unknown config.* setting: a misspelt field would otherwise be silently ignored
        raise Invalid(unknown[0][:40], f"is not a field of config.json (known: {', '.join(known)})")
    for name in ("model", "kind", "config"):
        if name not in meta:
            raise Invalid(name, "is missing")
    model = meta["model"]
    if not isinstance(model, str) or model not in MODEL_REGISTRY:
        raise Invalid("model", f"unknown model type {show(model)}; known: {', '.join(sorted(MODEL_REGISTRY))}")
    cls = detector_class(model)
    if meta["kind"] != cls.kind:
        kind = f"a {meta['kind']} model" if meta["kind"] in ("image", "video") else show(meta["kind"])
        raise Invalid("kind", f"this file says {kind}, but {model} is an {cls.kind} model"
                      if cls.kind == "image" else f"this file says {kind}, but {model} is a {cls.kind} model")
    if isinstance(meta["config"], Mapping):
        _version_fields(model, meta["config"], version, "config.")
    _settings(cls.config_class, meta["config"], "config.")
    # fields added after a model was first saved are in its SAVED_BEFORE (how the older models were fitted); every
    # other field has been saved by every checkpoint since, so a file without it was edited, and its default
    # (image_size 256, say) would silently change the scores. Fields of a later format than the file's are absent
    # (checked above) and take their SAVED_BEFORE value too; those of versions 2 to the file's are there (also above).
    optional = set(cls.config_class.SAVED_BEFORE)
    for f in dataclasses.fields(cls.config_class):
        if f.name not in meta["config"] and f.name not in optional:
            raise Invalid(f"config.{f.name}", "is missing")
    if "anomalens_version" in meta and not isinstance(meta["anomalens_version"], str):
        raise Invalid("anomalens_version", f"must be a string, got {show(meta['anomalens_version'])}")
    if not isinstance(meta.get("interrupted", False), bool):
        raise Invalid("interrupted", f"must be true or false, got {show(meta['interrupted'])}")
    checksum = meta.get("weights_sha256")  # absent in checkpoints saved before it; null would skip the check
    if "weights_sha256" in meta and not (isinstance(checksum, str) and SHA256_HEX.fullmatch(checksum)):
        raise Invalid("weights_sha256", f"must be a SHA-256 as 64 lowercase hex digits, got {show(checksum)}")
    preprocessing = meta.get("preprocessing")
    if preprocessing is not None:
        if not isinstance(preprocessing, dict):
            raise Invalid("preprocessing", f"must be an object, got {show(preprocessing)}")
        size = preprocessing.get("image_size")
        if size is not None:
            _value("preprocessing.image_size", size, tuple[int, int], "image_size")
    calibration = meta.get("calibration")
    if calibration is not None:
        check_calibration(calibration, "calibration.", version)
    drift = meta.get("drift_reference")
    if drift is not None:
        check_drift_reference(drift, "drift_reference.", version)
    return meta


def check_drift_reference(data: Any, prefix: str = "drift_reference.", version: int | None = None) -> dict[str, Any]:
    """The fit-time range of typical distances (:class:`~anomalens.metrics.drift.DriftReference`): finite numbers,
    ``low <= high``, a positive ``width`` (the unit deviations are counted in; absent in early files, which take
    ``high - low``) and a ``count`` of at least one held-out item. ``version``: the format version of the
    ``config.json`` it is part of (:data:`FORMAT_FIELDS`' rules apply)."""
    from anomalens.metrics.drift import DriftReference

    if not isinstance(data, dict):
        raise Invalid(prefix.rstrip("."), f"must be an object or null, got {show(data)}")
    if version is not None:
        _version_fields("drift_reference", data, version, prefix)
    known = [f.name for f in dataclasses.fields(DriftReference)]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise Invalid(f"{prefix}{unknown[0][:40]}", f"is not a field of the drift reference (known: {', '.join(known)})")
    for name in known:
        if name not in data:
            if name != "width":
                raise Invalid(f"{prefix}{name}", "is missing")
            continue
        rule = {"count": Range(1, 2**63 - 1), "width": Range(0.0, None, open_low=True)}.get(name)
        check_number(f"{prefix}{name}", data[name], int if name == "count" else float, rule)
    if data["low"] > data["high"]:
        raise Invalid(f"{prefix}low", f"must not be above drift_reference.high ({show(data['low'])} > {show(data['high'])})")
    return data


def check_calibration(data: Any, prefix: str = "calibration.", version: int | None = None) -> dict[str, Any]:
    """The saved threshold and its normalisation: every field of :class:`Calibration` by its type (those added
    later may be missing), finite numbers, a positive scale, a count of at least one. ``version``: the format
    version of the ``config.json`` it is part of (:data:`FORMAT_FIELDS`' rules apply); None in ``bundle.json``,
    which has versions of its own."""
    from anomalens.metrics.threshold import Calibration

    if not isinstance(data, dict):
        raise Invalid(prefix.rstrip("."), f"must be an object, got {show(data)}")
    if version is not None:
        _version_fields("calibration", data, version, prefix)
    hints = typing.get_type_hints(Calibration)
    for f in dataclasses.fields(Calibration):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise Invalid(f"{prefix}{f.name}", "is missing")
            continue
        kind, rule = CALIBRATION_RANGES.get(f.name, (None, None))
        if kind is not None:
            check_number(f"{prefix}{f.name}", data[f.name], kind, rule)
        else:
            _value(f"{prefix}{f.name}", data[f.name], hints[f.name], f.name)
    for name in ("pixel_threshold", "pixel_target_fpr", "measured_fpr", "effective_count", "needed_count", "clip_held_out_fpr",
                 "fold_shift", "fold_shift_items"):
        if data.get(name) is not None:
            rule = RANGES["target_fpr"] if name == "pixel_target_fpr" else (Range(0.0) if name not in ("pixel_threshold", "fold_shift") else None)
            check_number(f"{prefix}{name}", data[name], float, rule)
    if "tail_model" in data and data["tail_model"] not in ("normal", "generalized_pareto"):
        raise Invalid(f"{prefix}tail_model", f"{show(data['tail_model'])} is not one of normal, generalized_pareto")
    return data


# run.json: the fields that evaluation, the run list and the UI read; others are kept as they are
RUN_FIELDS: dict[str, Any] = {
    "anomalens_version": str,
    "kind": ("image", "video"),
    "category": str,
    "data_dir": str,
    "model": str,
    "created": str,
    "seed": int,
    "device": str,
    "image_size": tuple[int, int],
    "validation_fraction": Range(0.0, 1.0, open_high=True),
    "settings": dict,
    "config": dict,
    "interrupted": bool,
    "threshold": float,
    "train_count": int,
    "fit_seconds": float,
    "validation_files": list,
    "validation_clips": list,
    "train_clips": list,
    "train_frames": int,
}


def check_run_record(run: Any, file: str | Path) -> dict[str, Any]:
    """A parsed ``run.json``: an object whose known fields have their types; raises CheckpointError naming the field."""
    try:
        if not isinstance(run, dict):
            raise Invalid("(top level)", f"must be an object, got {type(run).__name__}")
        for name, rule in RUN_FIELDS.items():
            if name not in run:
                continue
            value = run[name]
            if isinstance(rule, tuple) and all(isinstance(r, str) for r in rule):
                if value not in rule:
                    raise Invalid(name, f"{show(value)} is not one of {', '.join(rule)}")
            elif isinstance(rule, Range):
                check_number(name, value, float, rule)
            elif rule in (list, dict):
                if not isinstance(value, rule):
                    raise Invalid(name, f"must be a{'n object' if rule is dict else ' list'}, got {show(value)}")
            else:
                _value(name, value, rule, name)
        for name in ("category", "data_dir"):
            if name in run and ("\x00" in run[name] or not run[name].strip()):
                raise Invalid(name, f"{show(run[name])} is not a usable name")
        return run
    except Invalid as exc:
        raise CheckpointError(f"field {exc.field}: {exc.message}", file) from None
