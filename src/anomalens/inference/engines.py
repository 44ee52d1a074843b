"""The two engines a bundle runs on: ONNX Runtime and OpenVINO, behind one ``run(inputs) -> outputs`` call.

Each is imported only when a bundle needs it, so a line PC installs just one of them.

OpenVINO compiles to bf16 by default on CPUs that have it (AVX512-BF16, AMX), which changes scores by up to
a few percent; a bundle exported at fp32 is compiled with ``INFERENCE_PRECISION_HINT: f32`` so that it gives
the checkpoint's scores, and only a bundle exported at ``bf16`` runs at bf16.

>>> engine = open_engine("bundle/model.onnx", "onnx", "fp32")          # doctest: +SKIP
>>> engine.run({"images": batch})["scores"]                            # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from anomalens.errors import ConfigError
from anomalens.runtime import onnxruntime_session

# INFERENCE_PRECISION_HINT of OpenVINO for each bundle precision (int8 layers run int8 whatever the hint)
OPENVINO_PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class Engine(Protocol):
    # each input's name and shape as the graph declares it (None or a name for a free dimension), and the outputs'
    # names: what bundle.json's description is checked against on load (inference.bundle.check_graph_signatures)
    inputs: dict[str, list[int | str | None]]
    output_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OnnxRuntimeEngine:
    """ONNX Runtime on the CPU."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("this bundle needs ONNX Runtime: pip install onnxruntime") from None
        self.session = onnxruntime_session(path, threads)  # the library's session settings (anomalens.runtime)
        self.inputs = {i.name: list(i.shape) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.description = f"onnxruntime {ort.__version__} CPUExecutionProvider"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(self.output_names, inputs)))


class OpenVinoEngine:
    """OpenVINO on the CPU, at the precision the bundle was exported for."""

    def __init__(self, path: Path, precision: str, threads: int | None = None) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ConfigError("this bundle needs OpenVINO: pip install openvino") from None
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINTS[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs = {i.get_any_name(): _dimensions(i.get_partial_shape()) for i in self.compiled.inputs}
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        hint = hint.to_string() if hasattr(hint, "to_string") else str(hint)  # an ov.Type: "f32", "bf16"
        self.description = f"openvino {ov.__version__} CPU, inference precision {hint}"

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.request.infer(inputs)
        return {name: np.asarray(results[output]) for name, output in zip(self.output_names, self.compiled.outputs)}


def _dimensions(shape: object) -> list[int | str | None]:
    """An OpenVINO partial shape as a list: a fixed dimension's length, None for a free one (or [] for a free rank)."""
    if not getattr(shape, "rank", None) or not shape.rank.is_static:  # type: ignore[attr-defined]
        return []
    return [d.get_length() if d.is_static else None for d in shape]  # type: ignore[attr-defined]


def open_engine(path: str | Path, engine: str, precision: str, threads: int | None = None) -> Engine:
    """The engine that runs ``path`` (``onnx`` or ``openvino``)."""
    if engine == "onnx":
        return OnnxRuntimeEngine(Path(path), threads)
    if engine == "openvino":
        return OpenVinoEngine(Path(path), precision, threads)
    raise ConfigError(f"unknown engine {engine!r}: onnx or openvino")
