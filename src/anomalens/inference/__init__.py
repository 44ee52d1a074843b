"""The torch-free runtime of exported bundles: ``numpy``, ``Pillow`` and ``onnxruntime`` or ``openvino`` only.

On a line PC::

    pip install --no-deps anomalens && pip install numpy pillow onnxruntime

>>> from anomalens.inference import Inferencer
>>> inferencer = Inferencer.load("bundles/bottle_onnx")                 # doctest: +SKIP
>>> result = inferencer.predict("part_17.png")[0]                       # doctest: +SKIP
>>> result.score, result.normalized_score, result.anomalous, result.regions   # doctest: +SKIP
>>> VideoInferencer.load("bundles/conveyor_onnx").predict_video("line.mp4").events   # doctest: +SKIP

Video bundles also need PyAV (to decode video files) and, for ``stfeatures``, ``opencv-python-headless`` (the
optical flow of its motion cue).

Nothing here imports torch, scipy or the training stack (a test checks it with ``torch`` made unimportable).
"""

from anomalens.inference.bundle import BUNDLE_FILE, is_bundle, read_bundle
from anomalens.inference.inferencer import Inferencer
from anomalens.inference.results import InferenceResult, results_from_outputs
from anomalens.inference.video import VideoInferencer, VideoInferenceResult

__all__ = ["BUNDLE_FILE", "InferenceResult", "Inferencer", "is_bundle", "read_bundle", "results_from_outputs",
           "VideoInferencer", "VideoInferenceResult"]
