"""A check shared by the tests of tensors that a video model saves beside its memories (the ceiling, the codec
memory): a damaged or missing one is refused on load, by name, never scored without."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from anomalens.errors import CheckpointError
from anomalens.models.base import load_detector


def assert_refused_when_damaged_or_missing(folder: Path, weights: dict[str, torch.Tensor], name: str,
                                           damaged: list[torch.Tensor]) -> None:
    """Save each of ``damaged`` as tensor ``name`` of the model in ``folder`` (``weights``: its saved tensors), then
    leave ``name`` out: every load raises a CheckpointError naming it (the config says the model has it, so it is
    required). Leaves the folder without ``name``."""
    path = str(folder / "weights.safetensors")
    for tensor in damaged:
        save_file({**weights, name: tensor.contiguous()}, path)
        with pytest.raises(CheckpointError, match=name):
            load_detector(folder)
    save_file({key: value for key, value in weights.items() if key != name}, path)
    with pytest.raises(CheckpointError, match=name):
        load_detector(folder)
