"""The frozen patch-feature extractor through ONNX Runtime: the same features, faster on a CPU.

The backbone of PatchCore, PaDiM and the video model's appearance cue never trains, so on a CPU it runs through
ONNX Runtime, which is several times faster than PyTorch for these depthwise-convolution networks (NOTES.md;
README, "Scale"). The extractor (normalisation, backbone stages, neighbourhood pooling, upsampling, projection)
is exported once per backbone weights, settings and input size with ``torch.onnx.export(..., dynamo=True)``,
batch size left free, into a cache folder (``$ANOMALENS_CACHE/onnx``, default ``~/.cache/anomalens/onnx``),
written atomically. The file name is a hash of the weights, the settings and the versions of anomalens and
torch, so a changed backbone or a new release never reuses a stale export.

Which runtime runs: :func:`set_feature_runtime` (CLI ``--feature-runtime``; environment variable
``ANOMALENS_FEATURE_RUNTIME``): ``auto`` (ONNX Runtime on CPU, PyTorch on GPUs, PyTorch again if the export
fails), ``torch``, ``onnx`` or ``openvino`` (the same exported graph compiled by OpenVINO at fp32, an optional
extra: ``pip install anomalens[openvino]``; on this CPU 6.4 against 7.9 ms of CPU per 240x360 frame at batch 1 on
one thread, features within 1.4e-5 of ONNX Runtime's on values up to 25). ONNX Runtime's threads do not spin
while waiting (fair on a shared CPU) and number as many as torch's, OpenVINO's too.

>>> extractor = PatchFeatureExtractor("lite0")                           # doctest: +SKIP
>>> runner = OnnxFeatureRunner.for_extractor(extractor, (256, 256))      # doctest: +SKIP
>>> runner(torch.rand(4, 3, 256, 256)).shape                             # doctest: +SKIP
torch.Size([4, 152, 32, 32])
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from anomalens import __version__
from anomalens.errors import ConfigError
from anomalens.runtime import onnxruntime_session

if TYPE_CHECKING:
    from anomalens.models.components.features import PatchFeatureExtractor

RUNTIMES = ("auto", "torch", "onnx", "openvino")
RUNTIME_ENVIRONMENT = "ANOMALENS_FEATURE_RUNTIME"
CACHE_ENVIRONMENT = "ANOMALENS_CACHE"
_runtime: str | None = None


def set_feature_runtime(runtime: str) -> None:
    """Choose how feature extractors run from now on, in this process: ``auto``, ``torch`` or ``onnx``."""
    global _runtime
    if runtime not in RUNTIMES:
        raise ConfigError(f"--feature-runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    _runtime = runtime


def feature_runtime() -> str:
    """The runtime chosen with :func:`set_feature_runtime`, else ``$ANOMALENS_FEATURE_RUNTIME``, else ``auto``."""
    runtime = _runtime or os.environ.get(RUNTIME_ENVIRONMENT, "auto")
    if runtime not in RUNTIMES:
        raise ConfigError(f"{RUNTIME_ENVIRONMENT} must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return runtime


def cache_dir() -> Path:
    """Where exported extractors are kept: ``$ANOMALENS_CACHE/onnx`` or ``~/.cache/anomalens/onnx``."""
    root = os.environ.get(CACHE_ENVIRONMENT)
    return (Path(root) if root else Path.home() / ".cache" / "anomalens") / "onnx"


def export_key(extractor: "PatchFeatureExtractor", image_size: tuple[int, int]) -> str:
    """A hash of everything the exported graph depends on: weights, settings, input size and versions."""
    digest = hashlib.sha256()
    for name, tensor in sorted(extractor.backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    if extractor.projection is not None:
        digest.update(extractor.projection.detach().cpu().contiguous().numpy().tobytes())
    settings = (extractor.stages, extractor.neighbourhood, tuple(image_size), __version__, torch.__version__)
    digest.update(repr(settings).encode())
    return digest.hexdigest()[:24]


MAX_EXPORT_BATCH = 4096


def export_onnx_graph(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
                      dynamic_shapes: tuple) -> None:
    """The one way anomalens writes an ONNX graph (here for the feature cache, in ``anomalens.export`` for bundles):
    ``torch.onnx.export`` with the dynamo exporter, one self-contained file, the exporter's chatter silenced."""
    # the exporter reports each torchvision operator it skips and some deprecations: not the user's concern
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(path), dynamo=True, dynamic_shapes=dynamic_shapes, input_names=input_names,
                output_names=output_names, verbose=False,
                external_data=False,  # one self-contained file (the weights are a few MB)
            )
    finally:
        quiet.setLevel(level)


def export_extractor(extractor: "PatchFeatureExtractor", image_size: tuple[int, int], path: Path) -> Path:
    """Export ``extractor`` (on the CPU) for ``(B, 3, *image_size)`` inputs (any B) to ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(2, 3, *image_size, generator=torch.Generator().manual_seed(0))  # not the global stream: a
    # first training, which exports, would otherwise draw other random numbers afterwards than the next, which does not
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        export_onnx_graph(_TorchFeatures(extractor), (example,), tmp, ["images"], ["features"], ({0: batch},))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class _TorchFeatures(torch.nn.Module):
    """The extractor's PyTorch computation as a module of its own (its ``forward`` would call the runner)."""

    def __init__(self, extractor: "PatchFeatureExtractor") -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self.extractor.torch_forward(x01)


class OnnxFeatureRunner:
    """The exported extractor run by ONNX Runtime (``engine="onnx"``) or OpenVINO at fp32 (``"openvino"``):
    ``(B, 3, H, W)`` in [0, 1] -> ``(B, C, h, w)``."""

    def __init__(self, model_path: Path, threads: int | None = None, engine: str = "onnx", keep_buffers: bool = False) -> None:
        self.path, self.engine = model_path, engine
        threads = max(1, threads if threads is not None else torch.get_num_threads())
        if engine == "openvino":
            if importlib.util.find_spec("openvino") is None:
                raise ConfigError("--feature-runtime openvino needs OpenVINO: pip install anomalens[openvino]")
            from anomalens.inference.engines import OpenVinoEngine

            # compiled at f32: OpenVINO's default on CPUs with bf16 units changes the features by up to 0.5
            self.run = OpenVinoEngine(model_path, "fp32", threads).run
        elif engine == "onnx":
            self.session = session = onnxruntime_session(model_path, threads, arena=keep_buffers)
            self.run = lambda inputs: {"features": session.run(None, inputs)[0]}
        else:
            raise ConfigError(f"feature engine must be onnx or openvino, got {engine!r}")

    @classmethod
    def for_extractor(cls, extractor: "PatchFeatureExtractor", image_size: tuple[int, int], engine: str = "onnx",
                      keep_buffers: bool = False) -> "OnnxFeatureRunner":
        """The cached export of ``extractor`` at ``image_size`` (exported now if missing), run by ``engine``
        (``keep_buffers``: ONNX Runtime keeps its buffers between calls, see :func:`anomalens.runtime.onnxruntime_session`)."""
        path = cache_dir() / f"{type(extractor.backbone).__name__.lower()}-{export_key(extractor, image_size)}.onnx"
        if not path.is_file():
            export_extractor(extractor, image_size, path)
        return cls(path, engine=engine, keep_buffers=keep_buffers)

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        images = np.ascontiguousarray(x01.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.run({"images": images})["features"])
