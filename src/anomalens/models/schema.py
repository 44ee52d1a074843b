"""The checkpoint schema: every field of a model's ``config.json`` and a run's ``run.json`` checked on load.

A checkpoint is data from disk that anyone may have edited, so nothing in it is trusted: each field is
checked for its type (from the model's config dataclass) and its range (the table :data:`RANGES`, which
reads its caps from :mod:`anomalens.limits`, the same caps the CLI uses) before a single tensor is
allocated. A failure is one line naming the file and the field, raised as
:class:`~anomalens.errors.CheckpointError`. Training settings (CLI flags, the UI's advanced JSON) go
through :func:`check_settings`, so a value refused on load is refused when training too.

>>> check_settings(PatchCoreConfig, {"batch_size": -1})          # doctest: +SKIP
Traceback (most recent call last):
ConfigError: batch_size must be 1..4096, got -1
>>> check_model_config(json.loads(text), Path("model/config.json"))   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from anomalens import limits
from anomalens.errors import AnomalensError, CheckpointError, ConfigError
from anomalens.runtime import SHA256_HEX


@dataclass(frozen=True)
class Range:
    """Allowed values of one number (``low``/``high`` inclusive unless ``open_low``/``open_high``)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def problem(self, value: float) -> str | None:
        too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if not (too_low or too_high):
            return None
        left = "(" if self.open_low or self.low is None else "["
        right = ")" if self.open_high or self.high is None else "]"
        if self.low is not None and self.high is not None and not (self.open_low or self.open_high):
            return f"must be {_num(self.low)}..{_num(self.high)}"
        low = "-inf" if self.low is None else _num(self.low)
        high = "inf" if self.high is None else _num(self.high)
        return f"must be in {left}{low}, {high}{right}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


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
}
# Text settings whose syntax their model checks when it is built (refused there, as a CheckpointError on load).
MODEL_CHECKED: dict[str, str] = {"training_degradations": "models/video/degrade.py parses each entry",
                                 "codec_memory": "models/video/degrade.py parses each entry",
                                 "motion_codec_memory": "models/video/degrade.py parses each entry"}
CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {
    name: _choices(name) for name in ("backbone", "loss", "normal_reference", "flow_preset", "score_region", "cue_combination",
                                         "temporal_spill", "anomaly_map")
}
# Top-level fields of a model's config.json (what BaseDetector.save writes; "preprocessing" in older files). Only
# model, kind and config are required: drift_reference and weights_sha256 (the SHA-256 of weights.safetensors) came
# later, and a checkpoint saved before them loads as it did then, without the drift or the checksum check.
MODEL_CONFIG_FIELDS = ("format_version", "anomalens_version", "model", "kind", "config", "preprocessing", "calibration",
                       "drift_reference", "interrupted", "weights_sha256")
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


class _Invalid(Exception):
    """A field that failed; turned into a one-line error naming the file (or the setting) and the field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- values ------------------------------------------------------------------------------------------
def _number(field: str, value: Any, kind: type, rule: Range | None) -> int | float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Invalid(field, f"must be {'an integer' if kind is int else 'a number'}, got {_show(value)}")
    if kind is int and isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise _Invalid(field, f"must be an integer, got {_show(value)}")
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid(field, f"must be a finite number, got {value}")
    if rule is not None:
        problem = rule.problem(value)
        if problem:
            raise _Invalid(field, f"{problem}, got {_show(value)}")
    return value


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
            except _Invalid as exc:
                problems.append((option, exc))
        # the option of the value's own kind says what is wrong with it (a word that is not a choice, a number out
        # of range) better than "wrong type"
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        for option, exc in problems:
            if (option is str and isinstance(value, str)) or (option in (int, float) and number):
                raise exc
        raise _Invalid(field, f"has the wrong type ({type(value).__name__})")
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            raise _Invalid(field, f"must be a list, got {_show(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            if len(value) > 16:
                raise _Invalid(field, f"must be a list of at most 16 values, got {len(value)}")
            items = tuple(_value(f"{field}[{i}]", v, args[0], name) for i, v in enumerate(value))
            if name in INCREASING and any(b <= a for a, b in zip(items, items[1:])):
                # the feature extractor takes its grid from the first stage: out of order, no grid fits
                raise _Invalid(field, f"must be strictly increasing, got {_show(value)}")
            if name in INCREASING and not items:
                raise _Invalid(field, "must list at least one value")
            return items
        if len(value) != len(args):
            raise _Invalid(field, f"must be a list of {len(args)} values, got {_show(value)}")
        return tuple(_value(f"{field}[{i}]", v, a, name) for i, (v, a) in enumerate(zip(value, args)))
    if annotation is bool:
        if not isinstance(value, bool):
            raise _Invalid(field, f"must be true or false, got {_show(value)}")
        return value
    if annotation in (int, float):
        return _number(field, value, annotation, RANGES.get(name))
    if annotation is str:
        if not isinstance(value, str):
            raise _Invalid(field, f"must be a string, got {_show(value)}")
        if name in CHOICES and value not in CHOICES[name]():
            raise _Invalid(field, f"{value[:40]} is not one of {', '.join(CHOICES[name]())}")
        return value
    if value is not None and isinstance(annotation, type) and not isinstance(value, annotation):
        raise _Invalid(field, f"must be a {annotation.__name__}, got {_show(value)}")
    return value


def _settings(config_class: type, data: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise _Invalid(prefix.rstrip(".") or "settings", f"must be an object of settings, got {_show(data)}")
    hints = typing.get_type_hints(config_class)
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise _Invalid(f"{prefix}{unknown[0]}", f"is not a setting of this model (known: {', '.join(sorted(known))})")
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
    except _Invalid as exc:
        where = f" (model {model})" if model else ""
        raise ConfigError(f"{exc.field} {exc.message}{where}") from None


def check_model_config(meta: Any, file: str | Path, format_version: int) -> dict[str, Any]:
    """A parsed ``config.json``: every field checked; returns it unchanged or raises CheckpointError naming the field."""
    try:
        return _model_config(meta, format_version)
    except _Invalid as exc:
        raise CheckpointError(f"field {exc.field}: {exc.message}", file) from None
    except AnomalensError as exc:  # e.g. an unknown model name from the registry
        raise CheckpointError(exc.message, file) from None


def _model_config(meta: Any, format_version: int) -> dict[str, Any]:
    from anomalens.models.base import MODEL_REGISTRY, detector_class

    if not isinstance(meta, dict):
        raise _Invalid("(top level)", f"must be an object, got {type(meta).__name__}")
    unknown = sorted(str(k) for k in meta if k not in MODEL_CONFIG_FIELDS)
    if unknown:  # refused like an unknown config.* setting: a misspelt field would otherwise be silently ignored
        raise _Invalid(unknown[0][:40], f"is not a field of config.json (known: {', '.join(MODEL_CONFIG_FIELDS)})")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _Invalid("format_version", f"must be an integer, got {_show(version)}")
    if version != format_version:
        raise _Invalid("format_version", f"{_show(version)} is not supported (this anomalens reads {format_version})")
    for name in ("model", "kind", "config"):
        if name not in meta:
            raise _Invalid(name, "is missing")
    model = meta["model"]
    if not isinstance(model, str) or model not in MODEL_REGISTRY:
        raise _Invalid("model", f"unknown model type {_show(model)}; known: {', '.join(sorted(MODEL_REGISTRY))}")
    cls = detector_class(model)
    if meta["kind"] != cls.kind:
        kind = f"a {meta['kind']} model" if meta["kind"] in ("image", "video") else _show(meta["kind"])
        raise _Invalid("kind", f"this file says {kind}, but {model} is an {cls.kind} model"
                       if cls.kind == "image" else f"this file says {kind}, but {model} is a {cls.kind} model")
    _settings(cls.config_class, meta["config"], "config.")
    # fields added after a model was first saved are in its SAVED_BEFORE (how the older models were fitted); every
    # other field has been saved by every checkpoint since, so a file without it was edited, and its default
    # (image_size 256, say) would silently change the scores
    optional = set(cls.config_class.SAVED_BEFORE)
    for f in dataclasses.fields(cls.config_class):
        if f.name not in meta["config"] and f.name not in optional:
            raise _Invalid(f"config.{f.name}", "is missing")
    if "anomalens_version" in meta and not isinstance(meta["anomalens_version"], str):
        raise _Invalid("anomalens_version", f"must be a string, got {_show(meta['anomalens_version'])}")
    if not isinstance(meta.get("interrupted", False), bool):
        raise _Invalid("interrupted", f"must be true or false, got {_show(meta['interrupted'])}")
    checksum = meta.get("weights_sha256")  # absent in checkpoints saved before it; null would skip the check
    if "weights_sha256" in meta and not (isinstance(checksum, str) and SHA256_HEX.fullmatch(checksum)):
        raise _Invalid("weights_sha256", f"must be a SHA-256 as 64 lowercase hex digits, got {_show(checksum)}")
    preprocessing = meta.get("preprocessing")
    if preprocessing is not None:
        if not isinstance(preprocessing, dict):
            raise _Invalid("preprocessing", f"must be an object, got {_show(preprocessing)}")
        size = preprocessing.get("image_size")
        if size is not None:
            _value("preprocessing.image_size", size, tuple[int, int], "image_size")
    calibration = meta.get("calibration")
    if calibration is not None:
        check_calibration(calibration, "calibration.")
    drift = meta.get("drift_reference")
    if drift is not None:
        check_drift_reference(drift)
    return meta


def check_drift_reference(data: Any, prefix: str = "drift_reference.") -> dict[str, Any]:
    """The fit-time range of typical distances (:class:`~anomalens.metrics.drift.DriftReference`): finite numbers,
    ``low <= high``, a positive ``width`` (the unit deviations are counted in; absent in early files, which take
    ``high - low``) and a ``count`` of at least one held-out item."""
    from anomalens.metrics.drift import DriftReference

    if not isinstance(data, dict):
        raise _Invalid(prefix.rstrip("."), f"must be an object or null, got {_show(data)}")
    known = [f.name for f in dataclasses.fields(DriftReference)]
    unknown = sorted(str(k) for k in data if k not in known)
    if unknown:
        raise _Invalid(f"{prefix}{unknown[0][:40]}", f"is not a field of the drift reference (known: {', '.join(known)})")
    for name in known:
        if name not in data:
            if name != "width":
                raise _Invalid(f"{prefix}{name}", "is missing")
            continue
        rule = {"count": Range(1, 2**63 - 1), "width": Range(0.0, None, open_low=True)}.get(name)
        _number(f"{prefix}{name}", data[name], int if name == "count" else float, rule)
    if data["low"] > data["high"]:
        raise _Invalid(f"{prefix}low", f"must not be above drift_reference.high ({_show(data['low'])} > {_show(data['high'])})")
    return data


def check_calibration(data: Any, prefix: str = "calibration.") -> dict[str, Any]:
    """The saved threshold and its normalisation: every field of :class:`Calibration` by its type (those added
    later may be missing), finite numbers, a positive scale, a count of at least one."""
    from anomalens.metrics.threshold import Calibration

    if not isinstance(data, dict):
        raise _Invalid(prefix.rstrip("."), f"must be an object, got {_show(data)}")
    hints = typing.get_type_hints(Calibration)
    for f in dataclasses.fields(Calibration):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Invalid(f"{prefix}{f.name}", "is missing")
            continue
        kind, rule = CALIBRATION_RANGES.get(f.name, (None, None))
        if kind is not None:
            _number(f"{prefix}{f.name}", data[f.name], kind, rule)
        else:
            _value(f"{prefix}{f.name}", data[f.name], hints[f.name], f.name)
    for name in ("pixel_threshold", "pixel_target_fpr", "measured_fpr", "effective_count", "needed_count", "clip_held_out_fpr",
                 "fold_shift", "fold_shift_items"):
        if data.get(name) is not None:
            rule = RANGES["target_fpr"] if name == "pixel_target_fpr" else (Range(0.0) if name not in ("pixel_threshold", "fold_shift") else None)
            _number(f"{prefix}{name}", data[name], float, rule)
    if "tail_model" in data and data["tail_model"] not in ("normal", "generalized_pareto"):
        raise _Invalid(f"{prefix}tail_model", f"{_show(data['tail_model'])} is not one of normal, generalized_pareto")
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
            raise _Invalid("(top level)", f"must be an object, got {type(run).__name__}")
        for name, rule in RUN_FIELDS.items():
            if name not in run:
                continue
            value = run[name]
            if isinstance(rule, tuple) and all(isinstance(r, str) for r in rule):
                if value not in rule:
                    raise _Invalid(name, f"{_show(value)} is not one of {', '.join(rule)}")
            elif isinstance(rule, Range):
                _number(name, value, float, rule)
            elif rule in (list, dict):
                if not isinstance(value, rule):
                    raise _Invalid(name, f"must be a{'n object' if rule is dict else ' list'}, got {_show(value)}")
            else:
                _value(name, value, rule, name)
        for name in ("category", "data_dir"):
            if name in run and ("\x00" in run[name] or not run[name].strip()):
                raise _Invalid(name, f"{_show(run[name])} is not a usable name")
        return run
    except _Invalid as exc:
        raise CheckpointError(f"field {exc.field}: {exc.message}", file) from None
