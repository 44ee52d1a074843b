"""The data kinds anomalens handles (image, video): one table that says, per kind, how its dataset looks on
disk, which model it uses by default and which workflow functions train, evaluate and benchmark it.

The CLI, the UI and the benchmark all dispatch through this table, so adding a kind (or changing a default
model) happens here and nowhere else. Workflow functions are named as ``"module:function"`` and imported on
first use, so reading the table imports no model.

>>> kind = detect_kind("../shared/data", "ucsd_ped2")       # doctest: +SKIP
>>> kind.name, kind.default_model
('video', 'stfeatures')
>>> run = kind.train("../shared/data", "ucsd_ped2")          # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


def _has_image_layout(data_dir: str | Path, category: str) -> bool:
    return (Path(data_dir) / category / "train" / "good").is_dir()


def _has_video_layout(data_dir: str | Path, category: str) -> bool:
    from anomalens.data.video_datasets import is_video_category

    return bool(is_video_category(data_dir, category))


@dataclass(frozen=True)
class DataKind:
    """One kind of data and everything that depends on it."""

    name: str  # "image" or "video"; also the ``kind`` of its detectors and runs
    default_model: str
    unit: str  # what one scored sample is called in messages: "images", "frames"
    layout: str  # the expected folder layout, for error messages
    has_layout: Callable[[str | Path, str], bool]
    workflows: dict[str, str]  # "train" | "evaluate" | "benchmark" -> "module:function"

    def workflow(self, action: str) -> Callable[..., Any]:
        module, function = self.workflows[action].split(":")
        return getattr(importlib.import_module(module), function)

    @property
    def train(self) -> Callable[..., Any]:
        return self.workflow("train")

    @property
    def evaluate(self) -> Callable[..., Any]:
        return self.workflow("evaluate")

    @property
    def benchmark(self) -> Callable[..., Any]:
        return self.workflow("benchmark")


DATA_KINDS: dict[str, DataKind] = {
    kind.name: kind
    for kind in (
        DataKind(
            name="image",
            default_model="patchcore",
            unit="images",
            layout="an image dataset <category>/train/good/*.png (MVTec AD layout)",
            has_layout=_has_image_layout,
            workflows={
                "train": "anomalens.workflows.train:train_image_model",
                "evaluate": "anomalens.workflows.evaluate:evaluate_image_model",
                "benchmark": "anomalens.workflows.benchmark:benchmark_image_model",
            },
        ),
        DataKind(
            name="video",
            default_model="stfeatures",
            unit="frames",
            layout="a video dataset <category>/train/normal/*.mp4 or <category>/training/frames/<clip>/ (UCSD Ped2 layout)",
            has_layout=_has_video_layout,
            workflows={
                "train": "anomalens.workflows.train:train_video_model",
                "evaluate": "anomalens.workflows.evaluate:evaluate_video_model",
                "benchmark": "anomalens.workflows.benchmark:benchmark_video_model",
            },
        ),
    )
}


def data_kind(name: str) -> DataKind:
    """The table entry of ``name`` (``"image"`` or ``"video"``)."""
    from anomalens.errors import ConfigError

    if name not in DATA_KINDS:
        raise ConfigError(f"unknown data kind {name!r}; known: {', '.join(DATA_KINDS)}")
    return DATA_KINDS[name]


def detect_kind(data_dir: str | Path, category: str) -> DataKind | None:
    """The kind whose layout ``data_dir/category`` has (images first), or None."""
    for kind in DATA_KINDS.values():
        if kind.has_layout(data_dir, category):
            return kind
    return None


def layout_help() -> str:
    """What the known layouts look like, for 'no dataset here' messages."""
    return "expected " + " or ".join(kind.layout for kind in DATA_KINDS.values())


def model_names(kind: str) -> list[str]:
    """Registered model names of one kind that this build ships, the kind's default first."""
    from anomalens.models.base import MODEL_REGISTRY, detector_class

    names = []
    for name, target in MODEL_REGISTRY.items():
        try:
            if importlib.util.find_spec(target.split(":")[0]) is None:
                continue  # registered but not shipped in this build
        except ModuleNotFoundError:
            continue
        if detector_class(name).kind == kind:
            names.append(name)
    default = data_kind(kind).default_model
    return sorted(names, key=lambda n: (n != default, n))
