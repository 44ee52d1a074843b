"""INT8: post-training static quantisation of the graph's convolutions with ONNX Runtime, calibrated on the
training images only (never validation or test images).

Only ``Conv`` nodes are quantised (weights per channel, activations per tensor, QDQ format, which ONNX Runtime
and OpenVINO both run as int8); the distances, the upsampling and the blur stay in float, since an int8
distance would cost accuracy for little speed.

>>> quantize_int8("model.onnx", "model_int8.onnx", batches)        # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

QUANTIZED_OPS = ["Conv"]


class _Reader:
    """ONNX Runtime's calibration data reader over prepared input dicts."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]]) -> None:
        self.batches: Iterator[dict[str, np.ndarray]] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)

    def rewind(self) -> None:  # not needed by MinMax calibration
        pass


def quantize_int8(source: str | Path, target: str | Path, batches: Iterable[dict[str, np.ndarray]]) -> None:
    """Write an int8 version of the fp32 graph ``source`` to ``target``; ``batches`` are its calibration inputs."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference and graph clean-up first, as ONNX Runtime recommends before quantising
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            _Reader(batches),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
