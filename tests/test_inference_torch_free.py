"""The runtime of exported bundles imports and runs with torch made unimportable (a line PC without it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from anomalens.workflows.runs import load_detector

SCRIPT = r"""
import json, sys
sys.modules["torch"] = None          # any `import torch` now raises ImportError
from anomalens.inference import Inferencer
inferencer = Inferencer.load(sys.argv[1])
results = inferencer.predict([sys.argv[2], open(sys.argv[2], "rb").read()])
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"scipy", "cv2", "gradio", "matplotlib", "safetensors", "av"})
print(json.dumps({
    "scores": [r.score for r in results],
    "anomalous": [r.anomalous for r in results],
    "regions": [len(r.regions) for r in results],
    "heavy_modules": heavy,
    "library_modules": sorted(m for m in sys.modules if m.startswith(("anomalens.models", "anomalens.workflows"))),
}))
"""


def test_runtime_needs_no_torch(onnx_bundle, patchcore_run, synthetic_image_dataset):
    root, category = synthetic_image_dataset
    image = sorted((root / category / "test").rglob("*.png"))[-1]
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(onnx_bundle), str(image)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # the checkpoint schema (models/schema.py checks bundle.json's calibration) loads without the library's models
    assert out["heavy_modules"] == [] and out["library_modules"] == ["anomalens.models", "anomalens.models.schema"]
    detector = load_detector(patchcore_run)
    expected = float(detector.predict(detector.preprocessing.load_images([image])).scores[0])
    assert abs(out["scores"][0] - expected) <= 1e-4 * detector.calibration_.scale
    assert out["scores"][0] == out["scores"][1]
