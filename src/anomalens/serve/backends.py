"""What the server scores with: an exported bundle (torch-free runtime) or a run folder (the PyTorch library).

Both give the same :class:`~anomalens.inference.InferenceResult` per image, from the same decoding and
resizing (``anomalens.data.pixels``) and the same verdict, normalisation and regions
(``anomalens.inference.results``).

>>> predictor = load_predictor("bundles/bottle_onnx")           # or a run folder  # doctest: +SKIP
>>> array, size = predictor.prepare_sized(png_bytes)                              # doctest: +SKIP
>>> predictor.predict_prepared(np.stack([array]), [size])                          # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from anomalens.data.pixels import ImageSource, prepare_rgb
from anomalens.inference.bundle import is_bundle
from anomalens.inference.results import InferenceResult, results_from_outputs


class Predictor(Protocol):
    max_batch: int
    image_size: tuple[int, int]

    def prepare_sized(self, source: ImageSource, name: str | None = None) -> tuple[np.ndarray, tuple[int, int]]: ...

    def predict_prepared(self, batch: np.ndarray, image_sizes: Sequence[tuple[int, int]] | None = None) -> list[InferenceResult]: ...

    def describe(self) -> dict[str, Any]: ...


class CheckpointPredictor:
    """A run folder scored by the library (PyTorch), for serving without exporting first."""

    def __init__(self, checkpoint: str | Path, device: str = "auto") -> None:
        from anomalens.workflows.runs import load_fitted_detector

        self.detector = load_fitted_detector(checkpoint, "image", device=device)
        self.calibration = self.detector.calibration_
        self.image_size = tuple(self.detector.config.image_size)
        self.max_batch = int(self.detector.config.batch_size)

    def prepare(self, source: ImageSource, name: str | None = None) -> np.ndarray:
        return self.prepare_sized(source, name)[0]

    def prepare_sized(self, source: ImageSource, name: str | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        return prepare_rgb(source, self.image_size, name)  # type: ignore[arg-type]

    def predict_prepared(self, batch: np.ndarray, image_sizes: Sequence[tuple[int, int]] | None = None) -> list[InferenceResult]:
        import torch

        prediction = self.detector.predict(torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))))
        return results_from_outputs(prediction.scores, prediction.maps, prediction.views, self.calibration,
                                    image_sizes=image_sizes)

    def describe(self) -> dict[str, Any]:
        from anomalens import __version__

        return {"model": self.detector.name, "anomalens_version": __version__, "engine": "pytorch",
                "precision": "fp32", "engine_details": f"anomalens library on {self.detector.device}",
                "image_size": list(self.image_size), "threshold": self.calibration.threshold,
                "pixel_threshold": self.calibration.region_threshold(), "max_batch": self.max_batch}


def load_predictor(path: str | Path, device: str = "auto", threads: int | None = None) -> Predictor:
    """A bundle folder (``bundle.json``) -> the torch-free runtime; a run or model folder -> the library."""
    if is_bundle(path):
        from anomalens.inference import Inferencer

        return Inferencer.load(path, threads=threads)
    return CheckpointPredictor(path, device=device)
