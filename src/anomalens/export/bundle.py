"""Write a bundle: the scoring graph, its constant inputs and ``bundle.json`` (see ``anomalens.inference.bundle``).

Steps: trace the detector's scoring code to ONNX (``graph.py``); for ``int8`` quantise its convolutions on
training images (``quantize.py``); for OpenVINO convert the ONNX graph to OpenVINO IR; then score the run's
held-out normal validation images with both the checkpoint and the bundle and record the largest differences
in ``bundle.json`` (``export_check``). At fp32 the bundle keeps the checkpoint's calibration; at a reduced
precision (int8, bf16) its scores shift a little, so the threshold is chosen again by the same rule on the
bundle's own scores of those validation images (normal, held out from training: never the test set).

>>> export_model("results/bottle_x", "openvino", "bf16", "bundles/bottle_bf16")   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from anomalens import __version__
from anomalens.data.mvtec import discover_category
from anomalens.data.pixels import RESIZE_METHOD
from anomalens.errors import ConfigError, DataError
from anomalens.export.graph import INPUT_NAME, check_exportable, constant_inputs, export_onnx, output_names
from anomalens.inference.bundle import BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_VERSION, FORMATS, PRECISIONS
from anomalens.inference.engines import open_engine
from anomalens.inference.inferencer import Inferencer
from anomalens.metrics.threshold import DEFAULT_PIXEL_TARGET_FPR, calibrate, pixel_threshold
from anomalens.models.base import FORMAT_VERSION, Detector, load_detector
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_dir, write_json_atomic

# The largest distance matrix (batch x patches x bank entries, float32) one graph run may build
DISTANCE_BUDGET_BYTES = 256 << 20
DEFAULT_CALIBRATION_IMAGES = 64
EXPORT_DIR = "export"


@dataclass
class ExportResult:
    folder: Path
    bundle: dict[str, Any]

    @property
    def check(self) -> dict[str, Any]:
        return self.bundle.get("export_check") or {}


def export_model(
    checkpoint: str | Path,
    format: str = "onnx",
    precision: str = "fp32",
    output: str | Path | None = None,
    *,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
    reporter: Reporter = SILENT,
) -> ExportResult:
    """Export the model of ``checkpoint`` (a run folder or its ``model/``) to ``output`` (default
    ``RUN_DIR/export/<format>_<precision>``), atomically: the folder appears complete or not at all."""
    from anomalens.workflows.runs import open_run

    if format not in FORMATS:
        raise ConfigError(f"--format {format}: choose one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS[format]:
        raise ConfigError(f"--precision {precision} is not offered for {format}; choose one of {', '.join(PRECISIONS[format])}"
                          + (" (fp16 has no fast path on CPUs: use bf16 with OpenVINO, or int8)" if precision == "fp16" else ""))
    model_dir, run_dir, run = open_run(checkpoint)
    detector = load_detector(model_dir, device="cpu", kind="image")
    check_exportable(detector)
    use_exact_search(detector)
    folder = Path(output) if output is not None else run_dir / EXPORT_DIR / f"{format}_{precision}"
    validation, training = _run_images(run)
    if precision == "int8" and not training:
        raise DataError("int8 calibration needs the run's training images, which were not found (see run.json data_dir)")

    constants = constant_inputs(detector)
    max_batch = _max_batch(detector, constants)
    with atomic_dir(folder) as tmp:
        reporter.log(f"tracing the {detector.name} scoring graph to ONNX")
        export_onnx(detector, tmp / "model.onnx")
        for name, array in constants.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        network = "model.onnx"
        if precision == "int8":
            from anomalens.export.quantize import quantize_int8

            paths = training[:: max(1, -(-len(training) // calibration_images))][:calibration_images]
            reporter.log(f"quantising to int8, calibrated on {len(paths)} training images")
            quantize_int8(tmp / "model.onnx", tmp / "model_int8.onnx", _batches(detector, paths, constants, max_batch))
            (tmp / "model.onnx").unlink()
            network = "model_int8.onnx"
        if format == "openvino":
            network = _to_openvino(tmp, network)
        meta = _describe(detector, format, precision, network, constants, max_batch, run, model_dir)
        inferencer = Inferencer(tmp, meta, open_engine(tmp / network, format, precision), constants)
        meta.update(_check_and_calibrate(detector, inferencer, validation, precision, reporter))
        write_json_atomic(tmp / BUNDLE_FILE, meta)
    reporter.log(f"wrote the {format} {precision} bundle to {folder}")
    return ExportResult(folder=folder, bundle=meta)


def use_exact_search(detector: Detector) -> bool:
    """Make a PatchCore checkpoint search its bank exactly, as the exported graph does (large banks are searched
    approximately by default: faiss IVF finds the same neighbour for about 99% of patches); True if it changed."""
    if getattr(detector.config, "exact_search", True):
        return False
    detector.config.exact_search = True  # type: ignore[attr-defined]
    detector._build_index()  # type: ignore[attr-defined]
    return True


def _run_images(run: dict[str, Any]) -> tuple[list[Path], list[Path]]:
    """The run's validation and training images (empty when its data folder is gone)."""
    try:
        found = discover_category(run["data_dir"], run["category"])
    except (KeyError, TypeError, DataError):
        return [], []
    held_out = set(run.get("validation_files", []))
    validation = [found.root / name for name in sorted(held_out) if (found.root / name).is_file()]
    training = [p for p in found.train_paths if str(p.relative_to(found.root)) not in held_out]
    return validation, training


def _max_batch(detector: Detector, constants: dict[str, np.ndarray]) -> int:
    """Images per graph run: the model's batch size, fewer when PatchCore's distance matrix would be too big."""
    batch = int(detector.config.batch_size)
    if "memory_bank" in constants:
        h, w = detector.feature_grid()  # type: ignore[attr-defined]
        per_image = h * w * len(constants["memory_bank"]) * 4
        batch = min(batch, max(1, DISTANCE_BUDGET_BYTES // per_image))
    return batch


def _prepared(detector: Detector, paths: list[Path]) -> np.ndarray:
    """Images as the runtime feeds them: ``uint8`` ``(N, H, W, 3)`` at the model's size (library preprocessing)."""
    return detector.preprocessing.load_images(paths).permute(0, 2, 3, 1).numpy()


def _batches(detector: Detector, paths: list[Path], constants: dict[str, np.ndarray], size: int) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(paths), size):
        images = _prepared(detector, paths[start : start + size]).transpose(0, 3, 1, 2)
        yield {INPUT_NAME: np.ascontiguousarray(images), **constants}


def _to_openvino(folder: Path, onnx_name: str) -> str:
    try:
        import openvino as ov
    except ImportError:
        raise ConfigError("--format openvino needs OpenVINO: pip install openvino") from None
    model = ov.convert_model(str(folder / onnx_name))
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)  # keep fp32 weights: parity
    (folder / onnx_name).unlink()
    return "model.xml"


def _describe(detector: Detector, format: str, precision: str, network: str, constants: dict[str, np.ndarray],
              max_batch: int, run: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    config = detector.config
    in_graph = ["uint8 -> float / 255", "the model's scoring code, traced from Detector._score_batch"]
    if detector.name in ("patchcore", "padim"):
        in_graph += [
            f"backbone {config.backbone} input normalisation (x * 255 - 127) / 128",  # type: ignore[attr-defined]
            f"patch features of stages {list(config.stages)}, {config.neighbourhood}x{config.neighbourhood} average",  # type: ignore[attr-defined]
            "exact nearest-neighbour distance to the memory bank and the image-score reweighting (PatchCore's b = "
            f"{getattr(config, 'num_neighbours', '')})" if detector.name == "patchcore" else "Mahalanobis distance per position",
            "bilinear upsampling aligned on the backbone's cell centres",
            f"Gaussian blur sigma {config.blur_sigma}",  # type: ignore[attr-defined]
        ]
    else:
        in_graph += ["reconstruction, per-pixel error", f"Gaussian blur sigma {config.smoothing_sigma}",  # type: ignore[attr-defined]
                     f"normal reference '{config.normal_reference}'"]  # type: ignore[attr-defined]
    in_graph.append("image score = maximum of the map")
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "anomalens_version": __version__,
        "created": datetime.now().isoformat(timespec="seconds"),
        "model": {"name": detector.name, "kind": detector.kind, "format_version": FORMAT_VERSION,
                  "trained_with": run.get("anomalens_version"), "config": config.to_dict(),
                  "checkpoint": str(model_dir.resolve()), "category": run.get("category")},
        "runtime": {"engine": format, "precision": precision, "network": network,
                    "openvino_precision_hint": {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision] if format == "openvino" else None},
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NCHW", "channels": "RGB",
                  "image_size": [int(v) for v in config.image_size], "max_batch": max_batch},
        "preprocessing": {
            "decode": "Pillow; 16-bit and float images scaled to 8 bits, transparency composited on black, "
                      "grey repeated to RGB (anomalens.data.pixels)",
            "resize": RESIZE_METHOD,
            "image_size": [int(v) for v in config.image_size],
        },
        "outputs": {name: name for name in output_names(detector)},
        "postprocessing": {
            "in_graph": in_graph,
            "outside_graph": ["normalised score = sigmoid((score - threshold) / scale)",
                              "verdict = score > threshold", "mask = map > pixel_threshold",
                              "regions = 8-connected components of the mask (anomalens.metrics.regions)"],
        },
        "constant_inputs": {name: {"file": f"{name}.npy", "shape": list(array.shape), "dtype": "float32"}
                            for name, array in constants.items()},
        "calibration": detector.calibration_.to_dict(),  # type: ignore[union-attr]  (may be replaced after the check)
    }


def _check_and_calibrate(detector: Detector, inferencer: Inferencer, validation: list[Path], precision: str,
                         reporter: Reporter) -> dict[str, Any]:
    """Compare bundle and checkpoint on the validation images; choose the calibration the bundle runs with."""
    calibration = detector.calibration_
    assert calibration is not None
    if not validation:
        reporter.log("warning: the run's validation images were not found: no parity check, checkpoint calibration kept")
        return {"calibration": calibration.to_dict(), "calibration_source": "checkpoint", "export_check": None}
    images = _prepared(detector, validation)
    reference = detector.predict(_tensor(images))
    scores, maps, _ = inferencer.run(images)
    source = "checkpoint"
    if precision != "fp32":
        calibration = calibrate(scores, calibration.target_fpr, normal_maps=maps)
        source = f"recomputed at {precision} on the run's {len(validation)} validation images (normal, held out)"
    elif calibration.pixel_threshold is None:  # a model saved before pixel thresholds: add one, same rule
        calibration = dataclasses.replace(calibration, pixel_threshold=pixel_threshold(reference.maps, calibration.threshold),
                                          pixel_target_fpr=DEFAULT_PIXEL_TARGET_FPR)
        source = "checkpoint; pixel threshold added from the validation maps at export"
    ref_cal = detector.calibration_
    check = {
        "images": len(validation),
        "max_score_difference": float(np.abs(scores - reference.scores).max()),
        "max_score_difference_over_threshold": float(np.abs(scores - reference.scores).max() / abs(ref_cal.threshold)),
        "max_heatmap_difference": float(np.abs(ref_cal.normalize(maps) - ref_cal.normalize(reference.maps)).max()),
        "same_verdicts": bool((calibration.is_anomalous(scores) == ref_cal.is_anomalous(reference.scores)).all()),
    }
    reporter.log(f"bundle vs checkpoint on {len(validation)} validation images: largest score difference "
                 f"{check['max_score_difference']:.3g} ({check['max_score_difference_over_threshold']:.2g} of the threshold)")
    return {"calibration": calibration.to_dict(), "calibration_source": source, "export_check": check}


def _tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
