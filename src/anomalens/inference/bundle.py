"""The exported bundle's description, ``bundle.json``: written by ``anomalens.export``, read by the runtime.

A bundle is a folder that scores images without the training stack::

    bundle/
        bundle.json         this description (versioned; validated on load)
        model.onnx          the scoring graph (or model.xml + model.bin for OpenVINO)
        memory_bank.npy     PatchCore's memory bank, fed to the graph as an input (plain .npy, never pickle)

``bundle.json`` holds everything needed to reproduce the checkpoint's scores: input size and how images are
decoded and resized, which scoring steps run inside the graph, the threshold and normalisation, the model's
name, settings and version, the anomalens version that wrote it and the precision the network runs at.

>>> description = read_bundle("bundles/bottle_onnx")        # doctest: +SKIP
>>> description["calibration"]["threshold"]                 # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from anomalens.errors import CheckpointError

BUNDLE_FILE = "bundle.json"
BUNDLE_FORMAT = "anomalens-bundle"
BUNDLE_VERSION = 1
FORMATS = ("onnx", "openvino")
PRECISIONS = {"onnx": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}
REQUIRED = ("format", "version", "anomalens_version", "model", "runtime", "input", "outputs", "calibration")


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / BUNDLE_FILE).is_file()


def read_bundle(folder: str | Path) -> dict[str, Any]:
    """``bundle.json`` of ``folder``, checked for format, version and the files it names."""
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise CheckpointError(f"not an exported anomalens bundle (no {BUNDLE_FILE})", folder)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"unreadable {BUNDLE_FILE} ({exc})", path) from None
    if not isinstance(meta, dict) or meta.get("format") != BUNDLE_FORMAT:
        raise CheckpointError(f"{BUNDLE_FILE} does not describe an anomalens bundle", path)
    if meta.get("version") != BUNDLE_VERSION:
        raise CheckpointError(f"bundle version {meta.get('version')} is not supported (expects {BUNDLE_VERSION})", path)
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise CheckpointError(f"{BUNDLE_FILE} lacks {', '.join(missing)}", path)
    runtime = meta["runtime"]
    if runtime.get("engine") not in FORMATS or runtime.get("precision") not in PRECISIONS[runtime["engine"]]:
        raise CheckpointError(f"unknown engine or precision: {runtime.get('engine')} {runtime.get('precision')}", path)
    for name in [runtime.get("network"), *[spec["file"] for spec in meta.get("constant_inputs", {}).values()]]:
        if not isinstance(name, str) or Path(name).name != name or not (folder / name).is_file():
            raise CheckpointError(f"the bundle's file {name!r} is missing", folder)
    size = meta["input"].get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise CheckpointError(f"bad input image_size {size!r}", path)
    return meta
