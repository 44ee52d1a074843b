"""Export a trained model as a self-contained bundle for ONNX Runtime or OpenVINO (``anomalens export``).

>>> from anomalens.export import export_model
>>> result = export_model("results/bottle_x", "onnx", "fp32")          # doctest: +SKIP
>>> result.folder, result.check["max_score_difference"]                # doctest: +SKIP

The bundle is read by the torch-free runtime, :class:`anomalens.inference.Inferencer`.
"""

from anomalens.export.bundle import ExportResult, export_model

__all__ = ["ExportResult", "export_model"]
