"""Helpers for tests that rewrite a saved model's weights or a bundle's files on purpose.

A checkpoint's ``config.json`` records the SHA-256 of ``weights.safetensors`` and a bundle's ``bundle.json`` that of
each of its files; loading refuses a file that no longer matches. A test that builds a situation by rewriting such a
file (a tensor left out, a constant of the wrong shape) rewrites it here, which records the new checksum as saving
and exporting do: the check behind the checksum (tensor names, shapes, dtypes, readable graphs) is then what
answers. Also the shared check of tensors that a video model saves beside its memories (the ceiling, the codec
memory): a damaged or missing one is refused on load, by name, never scored without.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from anomalens.errors import CheckpointError
from anomalens.inference.bundle import BUNDLE_FILE, CHECKSUMS, bundle_checksums
from anomalens.runtime import file_sha256
from anomalens.models.base import CONFIG_FILE, WEIGHTS_CHECKSUM, load_detector


def rewrite_weights(weights: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Save ``tensors`` as the model's ``weights`` file (``.../model/weights.safetensors``) and record its checksum."""
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(weights))
    refresh_weights_checksum(weights)


def refresh_weights_checksum(weights: str | Path) -> None:
    """Record the SHA-256 of ``weights`` (rewritten by the test) in the ``config.json`` beside it, as saving does.
    A config without a checksum (a model saved before checksums) is left without one."""
    config = Path(weights).with_name(CONFIG_FILE)
    meta = json.loads(config.read_text())
    if WEIGHTS_CHECKSUM in meta:
        meta[WEIGHTS_CHECKSUM] = file_sha256(weights)
        config.write_text(json.dumps(meta, indent=2))


def refresh_bundle_checksums(folder: str | Path) -> None:
    """Record the SHA-256 of every file now in the bundle ``folder`` (some rewritten or added by the test) in its
    ``bundle.json``, as export does. A bundle without checksums (exported before them) is left without."""
    path = Path(folder) / BUNDLE_FILE
    meta = json.loads(path.read_text())
    if CHECKSUMS in meta:
        meta[CHECKSUMS] = bundle_checksums(folder)
        path.write_text(json.dumps(meta, indent=2))


def assert_refused_when_damaged_or_missing(folder: Path, weights: dict[str, torch.Tensor], name: str,
                                           damaged: list[torch.Tensor]) -> None:
    """Save each of ``damaged`` as tensor ``name`` of the model in ``folder`` (``weights``: its saved tensors), then
    leave ``name`` out: every load raises a CheckpointError naming it (the config says the model has it, so it is
    required). Leaves the folder without ``name``."""
    path = folder / "weights.safetensors"
    for tensor in damaged:
        rewrite_weights(path, {**weights, name: tensor})
        with pytest.raises(CheckpointError, match=name):
            load_detector(folder)
    rewrite_weights(path, {key: value for key, value in weights.items() if key != name})
    with pytest.raises(CheckpointError, match=name):
        load_detector(folder)
