"""A detector's own scoring code as one ONNX graph: ``uint8`` images in, raw scores and anomaly maps out.

The graph is traced from the detector's ``_score_batch`` (the code the library runs), so the exported model
does every step the checkpoint does: ``uint8 -> [0, 1]``, the backbone's input normalisation, patch features,
the nearest-neighbour distances and PatchCore's reweighting (or PaDiM's Mahalanobis distances, or the
autoencoder's reconstruction error and normal reference), the aligned bilinear upsampling and the Gaussian
blur, and the image score as the map's maximum. What stays outside: decoding and resizing (Pillow, shared
code in ``anomalens.data.pixels``) and turning raw scores into verdicts and regions (numpy, shared code).

PatchCore is the exception: its nearest-neighbour search is the most expensive step, and the library runs it with
faiss (an IVF index above 4,096 entries, 3.7x faster than an exact search on bottle), which no graph can express.
So PatchCore becomes two graphs with the search between them, in the runtime: ``features.onnx`` (``uint8``
images -> patch features) and ``maps.onnx`` (patch distances and PatchCore's image weights -> aligned upsampling,
blur, weighting, image score), traced from the detector's own ``features`` and ``scores_to_maps``. The bank is
``memory_bank.npy`` and the library's faiss index ``search_index.faiss`` (see ``anomalens.inference.search``).

>>> export_onnx(load_detector("results/padim_x"), "model.onnx")         # doctest: +SKIP
>>> export_patchcore_graphs(load_detector("results/bottle_x"), folder)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from anomalens.data.preprocessing import to_float
from anomalens.errors import ConfigError
from anomalens.models.base import Detector
from anomalens.models.components.onnx_backbone import MAX_EXPORT_BATCH, export_onnx_graph
from anomalens.models.components.search import exact_search_block

INPUT_NAME = "images"
# detector attribute -> graph input name, for learned arrays that stay files of their own in the bundle
CONSTANT_INPUTS: dict[str, dict[str, str]] = {"patchcore": {"memory_bank": "memory_bank_"}}
EXPORTABLE = ("patchcore", "padim", "autoencoder")


def check_exportable(detector: Detector) -> None:
    """Refuse what the graph cannot express yet, with the reason."""
    if detector.name not in EXPORTABLE:
        raise ConfigError(f"export supports the image models {', '.join(EXPORTABLE)}; {detector.name} cannot be exported yet")
    if getattr(detector.config, "tile", None):
        raise ConfigError("a tiled model (--tile) cannot be exported yet: export a model trained without tiling")
    if detector.calibration_ is None:
        raise ConfigError("this model has no threshold (it was never fitted with validation images)")


def constant_inputs(detector: Detector) -> dict[str, np.ndarray]:
    """The learned arrays fed to the graph as inputs (PatchCore's memory bank), as float32 numpy arrays."""
    return {name: getattr(detector, attr).detach().float().cpu().numpy()
            for name, attr in CONSTANT_INPUTS.get(detector.name, {}).items()}


def output_names(detector: Detector) -> list[str]:
    return ["scores", "maps", "views"] if detector.name == "autoencoder" else ["scores", "maps"]


class _GraphSearch:
    """A nearest-neighbour index as a graph computes it: exact, over the bank that is a graph input (an index of
    the library, such as faiss, cannot be traced)."""

    kind = "exact (in the graph)"

    def __init__(self, bank: torch.Tensor) -> None:
        self.bank = bank

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        return exact_search_block(queries, self.bank, min(k, self.bank.shape[0]))


class ScoringGraph(nn.Module):
    """Wraps ``detector._score_batch`` with ``uint8`` input and the constant inputs as arguments."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector
        self.attributes = list(CONSTANT_INPUTS.get(detector.name, {}).values())

    def forward(self, images: torch.Tensor, *constants: torch.Tensor):  # type: ignore[override]
        swapped = {attribute: value for attribute, value in zip(self.attributes, constants)}
        if "memory_bank_" in swapped and hasattr(self.detector, "index_"):
            swapped["index_"] = _GraphSearch(swapped["memory_bank_"])
        saved = {attribute: getattr(self.detector, attribute) for attribute in swapped}
        try:
            for attribute, value in swapped.items():
                setattr(self.detector, attribute, value)
            scores, maps, views = self.detector._score_batch(to_float(images))
        finally:
            for attribute, value in saved.items():
                setattr(self.detector, attribute, value)
        return (scores, maps) if views is None else (scores, maps, views)


class FeaturesGraph(nn.Module):
    """PatchCore, first graph: ``uint8`` images ``(B, 3, H, W)`` -> patch features ``(B, C, h, w)``."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.detector.features(to_float(images))  # type: ignore[attr-defined]


class MapsGraph(nn.Module):
    """PatchCore, second graph: nearest-neighbour distances ``(B, h, w)`` and image weights ``(B,)`` -> image
    scores ``(B,)`` and anomaly maps ``(B, H, W)``, as ``PatchCore._score_batch`` computes them."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, distances: torch.Tensor, weights: torch.Tensor):  # type: ignore[override]
        return self.scores(distances, weights, None)

    def scores(self, distances: torch.Tensor, weights: torch.Tensor, batch: torch.Tensor | None):
        d = self.detector
        maps = d.scores_to_maps(distances, tuple(d.config.image_size))  # type: ignore[attr-defined]
        return d.scores_and_maps(maps * weights[:, None, None], batch)  # type: ignore[attr-defined]


class PartMapsGraph(MapsGraph):
    """:class:`MapsGraph` for ``score_region`` "part": the images are an input too (the part is found in them)."""

    def forward(self, distances: torch.Tensor, weights: torch.Tensor, images: torch.Tensor):  # type: ignore[override]
        return self.scores(distances, weights, to_float(images))


def export_patchcore_graphs(detector: Detector, folder: Path) -> dict[str, dict]:
    """Write ``features.onnx`` and ``maps.onnx`` of a PatchCore ``detector``; their ``graphs`` entry of bundle.json."""
    detector.device = torch.device("cpu")
    height, width = detector.config.image_size
    grid = detector.feature_grid()  # type: ignore[attr-defined]
    detector.scores_to_maps(torch.zeros((1, *grid)), (height, width))  # type: ignore[attr-defined]  (built before tracing)
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    export_onnx_graph(FeaturesGraph(detector).eval(), (torch.zeros((2, 3, height, width), dtype=torch.uint8),),
                      folder / "features.onnx", [INPUT_NAME], ["features"], ({0: batch},))
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    with_images = getattr(detector.config, "score_region", "image") == "part"
    inputs = ["distances", "weights", *([INPUT_NAME] if with_images else [])]
    example = (torch.zeros((2, *grid)), torch.ones(2), *([torch.zeros((2, 3, height, width), dtype=torch.uint8)] if with_images else []))
    graph = PartMapsGraph(detector) if with_images else MapsGraph(detector)
    export_onnx_graph(graph.eval(), example, folder / "maps.onnx", inputs, ["scores", "maps"],
                      tuple({0: batch} for _ in inputs))
    return {"features": {"file": "features.onnx", "inputs": [INPUT_NAME], "outputs": ["features"]},
            "maps": {"file": "maps.onnx", "inputs": inputs, "outputs": ["scores", "maps"]}}


def export_onnx(detector: Detector, path: str | Path) -> None:
    """Write the scoring graph of ``detector`` (on the CPU) to ``path`` (the library's one ONNX export path)."""
    check_exportable(detector)
    detector.device = torch.device("cpu")
    height, width = detector.config.image_size
    example = torch.zeros((2, 3, height, width), dtype=torch.uint8)
    constants = {name: torch.from_numpy(array) for name, array in constant_inputs(detector).items()}
    if hasattr(detector, "scores_to_maps"):
        # what the model builds on first use (the map operator of PatchCore and PaDiM) must hold real tensors,
        # not the tracer's: build it now, and the graph gets it as constants
        detector.scores_to_maps(torch.zeros((1, *detector.feature_grid())), (height, width))  # type: ignore[attr-defined]
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    dynamic = ({0: batch}, tuple({} for _ in constants)) if constants else ({0: batch},)  # (images, *constants)
    export_onnx_graph(ScoringGraph(detector).eval(), (example, *constants.values()), Path(path),
                      [INPUT_NAME, *constants], output_names(detector), dynamic)
