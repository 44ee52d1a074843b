"""Score images with an exported bundle, using only numpy, Pillow and ONNX Runtime or OpenVINO (no torch).

Images are decoded and resized by the library's own functions (``anomalens.data.pixels``), fed to the graph as
``uint8`` in batches no larger than the bundle allows, and the graph's raw scores and maps are turned into
verdicts, normalised heatmaps and regions with the checkpoint's calibration, saved in ``bundle.json``.

>>> inferencer = Inferencer.load("bundles/bottle_onnx")                      # doctest: +SKIP
>>> [r.anomalous for r in inferencer.predict(["a.png", open("b.png", "rb").read(), frame])]   # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from anomalens.data.pixels import ImageSource, prepare_rgb
from anomalens.errors import CheckpointError, DataError
from anomalens.inference.bundle import check_graph_signatures, load_constants, open_graphs, read_bundle
from anomalens.inference.engines import Engine
from anomalens.inference.results import InferenceResult, results_from_outputs
from anomalens.inference.search import BankSearch, image_weights
from anomalens.metrics.threshold import Calibration
from anomalens.runtime import run_ahead


class Inferencer:
    """A loaded bundle. ``predict`` takes paths, encoded bytes or RGB ``uint8`` arrays ``(H, W, 3)``."""

    def __init__(self, folder: Path, meta: dict[str, Any], engines: dict[str, Engine], constants: dict[str, np.ndarray]) -> None:
        self.folder = folder
        self.meta = meta
        self.engines = engines
        self.engine = engines.get("network") or engines["features"]  # the one that runs the network (its description)
        self.constants = constants
        self.search: BankSearch | None = None
        if "features" in engines:  # PatchCore: the search runs between the two graphs
            spec = meta["search"]
            index = folder / spec["index"] if spec.get("index") else None
            try:
                self.search = BankSearch(constants["memory_bank"], index_path=index, nprobe=spec.get("nprobe"))
            except (KeyError, ValueError, RuntimeError):  # faiss raises RuntimeError for a damaged index
                raise CheckpointError("the memory bank or its search index cannot be read (damaged, or not what "
                                      "bundle.json describes); export the model again", index or folder) from None
            self.neighbours = int(spec["num_neighbours"])
        self.calibration = Calibration.from_dict(meta["calibration"])
        self.image_size: tuple[int, int] = tuple(meta["input"]["image_size"])  # type: ignore[assignment]
        self.max_batch = int(meta["input"].get("max_batch", 16))
        self.input_name = meta["input"]["name"]
        self.outputs = meta["outputs"]

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> "Inferencer":
        """Open ``folder`` (written by ``anomalens export``) on the engine it was exported for."""
        folder = Path(folder)
        meta = read_bundle(folder)
        if meta["model"].get("kind") == "video":
            raise CheckpointError("this bundle holds a video model: use anomalens.inference.VideoInferencer", folder)
        return cls.open(folder, meta, threads)

    @classmethod
    def open(cls, folder: Path, meta: dict[str, Any], threads: int | None = None) -> "Inferencer":
        """The bundle in ``folder`` as ``meta`` (its checked ``bundle.json``) describes it."""
        runtime = meta["runtime"]
        files = {name: graph["file"] for name, graph in meta["graphs"].items()} if "graphs" in meta else {"network": runtime["network"]}
        engines = open_graphs(folder, files, runtime, threads)
        check_graph_signatures(meta, engines, folder)
        return cls(folder, meta, engines, load_constants(folder, meta))

    @property
    def model_name(self) -> str:
        return self.meta["model"]["name"]

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` shows: model, engine, precision, input size, thresholds."""
        return {
            "model": self.meta["model"]["name"],
            "model_version": self.meta["model"].get("format_version"),
            "anomalens_version": self.meta["anomalens_version"],
            "engine": self.meta["runtime"]["engine"],
            "precision": self.meta["runtime"]["precision"],
            "engine_details": self.engine.description,  # type: ignore[attr-defined]
            "image_size": list(self.image_size),
            "threshold": self.calibration.threshold,
            "pixel_threshold": self.calibration.region_threshold(),
            "max_batch": self.max_batch,
            **({"search": self.search.kind} if self.search is not None else {}),
        }

    def prepare(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        """One image -> RGB ``uint8`` ``(H, W, 3)`` at the model's size, exactly as the library prepares it."""
        return self.prepare_sized(source, name)[0]

    def prepare_sized(self, source: ImageSource, name: str | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """:meth:`prepare`, and the image's own ``(height, width)`` for :meth:`predict_prepared`."""
        return prepare_rgb(source, self.image_size, name)

    def predict(self, images: ImageSource | Sequence[ImageSource]) -> list[InferenceResult]:
        """Score images (one or a list); one :class:`InferenceResult` each, in order."""
        if isinstance(images, (str, Path, bytes, bytearray, memoryview)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            images = [images]  # type: ignore[list-item]
        if len(images) == 0:  # type: ignore[arg-type]
            raise DataError("no images given")
        return list(self.iter_predict(images))  # type: ignore[arg-type]

    def iter_predict(self, images: Iterable[ImageSource]) -> Iterator[InferenceResult]:
        """Score many images in batches of ``max_batch``, in order; the next batch is decoded in a background
        thread while the current one is scored (``anomalens.runtime.run_ahead``, as the library decodes)."""
        batches = ([self.prepare_sized(source) for source in chunk] for chunk in _chunks(iter(images), self.max_batch))
        for prepared in run_ahead(batches):
            yield from self.predict_prepared(np.stack([array for array, _ in prepared]), [size for _, size in prepared])

    def predict_prepared(self, batch: np.ndarray, image_sizes: Sequence[tuple[int, int]] | None = None) -> list[InferenceResult]:
        """``uint8`` ``(N, H, W, 3)`` already at the model's size (see :meth:`prepare_sized`) -> results, with
        regions in pixels of each image's own ``image_sizes`` (of the model's input without them)."""
        scores, maps, views = self.run(batch)
        return results_from_outputs(scores, maps, views, self.calibration, image_sizes=image_sizes)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Raw scores ``(N,)``, maps ``(N, H, W)`` and views (or None) of a prepared ``(N, H, W, 3)`` batch."""
        if batch.ndim != 4 or batch.shape[1:] != (*self.image_size, 3) or batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 images (N, {self.image_size[0]}, {self.image_size[1]}, 3), got {batch.dtype} {batch.shape}")
        scores, maps, views = [], [], []
        for start in range(0, len(batch), self.max_batch):
            chunk = np.ascontiguousarray(batch[start : start + self.max_batch].transpose(0, 3, 1, 2))
            out = self._run_searched(chunk) if self.search is not None else \
                self.engines["network"].run({self.input_name: chunk, **self.constants})
            scores.append(out[self.outputs["scores"]].astype(np.float32).reshape(-1))
            maps.append(out[self.outputs["maps"]].astype(np.float32))
            if self.outputs.get("views"):
                views.append(out[self.outputs["views"]].astype(np.float32))
        return np.concatenate(scores), np.concatenate(maps), (np.concatenate(views) if views else None)

    def _run_searched(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        """PatchCore: features graph, nearest-neighbour search and image weights, maps graph."""
        assert self.search is not None
        features = self.engines["features"].run({self.input_name: chunk})["features"]
        n, channels, h, w = features.shape
        queries = np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(-1, channels))
        distances, indices = self.search.search(queries, k=1)
        distances, indices = distances[:, 0].reshape(n, h * w), indices[:, 0].reshape(n, h * w)
        weights = image_weights(self.search, queries.reshape(n, h * w, channels), distances, indices, self.neighbours)
        inputs = {"distances": distances.reshape(n, h, w), "weights": weights, self.input_name: chunk}
        return self.engines["maps"].run({name: inputs[name] for name in self.meta["graphs"]["maps"]["inputs"]})


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk
