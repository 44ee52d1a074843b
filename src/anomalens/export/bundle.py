"""Write a bundle: the scoring graph, its constant inputs and ``bundle.json`` (see ``anomalens.inference.bundle``).

Steps: trace the detector's scoring code to ONNX (``graph.py``); for ``int8`` quantise its convolutions on
training images (``quantize.py``); for OpenVINO convert the ONNX graph to OpenVINO IR; then score the run's
held-out normal validation images with both the checkpoint and the bundle and record the largest differences
in ``bundle.json`` (``export_check``), with the SHA-256 of every file (``files_sha256``, checked on load). At fp32
the bundle keeps the checkpoint's calibration; at a reduced precision (int8, bf16) its scores shift a little: the
bundle keeps the checkpoint's calibration (chosen from the held-out and the cross-fitted training images), moved by
how far the bundle's scores of those validation images (normal, held out from training: never the test set) stand
above the checkpoint's (:func:`quantised_calibration`).

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
from anomalens.errors import ConfigError, DataError, OutputError
from anomalens.export.graph import (INPUT_NAME, check_exportable, constant_inputs, export_onnx,
                                   export_patchcore_graphs, output_names)
from anomalens.inference.bundle import (BUNDLE_FILE, BUNDLE_FORMAT, BUNDLE_VERSION, CHECKSUMS, FORMATS, PRECISIONS,
                                        bundle_checksums, is_bundle)
from anomalens.inference.inferencer import Inferencer
from anomalens.metrics.threshold import DEFAULT_PIXEL_TARGET_FPR, Calibration, pixel_threshold, score_shift
from anomalens.models.base import BaseDetector, Detector, load_detector
from anomalens.models.schema import lowest_format
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_dir, write_json_atomic

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
    if calibration_images < 1:  # the int8 calibration takes every n-th training image: n would divide by it
        raise ConfigError(f"--calibration-images must be at least 1, got {calibration_images}")
    model_dir, run_dir, run = open_run(checkpoint)
    detector = load_detector(model_dir, device="cpu")
    if detector.kind == "video":
        return _export_video(detector, format, precision, output, run, run_dir, model_dir, reporter)
    check_exportable(detector)
    folder = Path(output) if output is not None else run_dir / EXPORT_DIR / f"{format}_{precision}"
    check_output_folder(folder, model_dir)
    validation, training = _run_images(run)
    if precision == "int8" and not training:
        raise DataError("int8 calibration needs the run's training images, which were not found (see run.json data_dir)")

    split = detector.name == "patchcore"  # the search runs between two graphs (see export/graph.py)
    constants = constant_inputs(detector)
    max_batch = int(detector.config.batch_size)
    with atomic_dir(folder) as tmp:
        reporter.log(f"tracing the {detector.name} scoring graph{'s' if split else ''} to ONNX")
        if split:
            graphs = export_patchcore_graphs(detector, tmp)
        else:
            export_onnx(detector, tmp / "model.onnx")
            graphs = {"network": {"file": "model.onnx"}}
        for name, array in constants.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        network = "features" if split else "network"  # the graph that holds the backbone (quantised for int8)
        if precision == "int8":
            from anomalens.export.quantize import quantize_int8

            paths = training[:: max(1, -(-len(training) // calibration_images))][:calibration_images]
            reporter.log(f"quantising to int8, calibrated on {len(paths)} training images")
            source = tmp / graphs[network]["file"]
            target = source.with_name(f"{source.stem}_int8.onnx")
            quantize_int8(source, target, _batches(detector, paths, {} if split else constants, max_batch))
            source.unlink()
            graphs[network]["file"] = target.name
        if format == "openvino":
            for graph in graphs.values():
                graph["file"] = _to_openvino(tmp, graph["file"])
        meta = _describe(detector, format, precision, graphs, constants, max_batch, run, model_dir)
        if split:
            meta["search"] = _save_search_index(detector, tmp)
        inferencer = Inferencer.open(tmp, meta)
        meta.update(_check_and_calibrate(detector, inferencer, validation, precision, reporter))
        meta[CHECKSUMS] = bundle_checksums(tmp)  # every file is final now; the runtime checks them on load
        write_json_atomic(tmp / BUNDLE_FILE, meta)
    reporter.log(f"wrote the {format} {precision} bundle to {folder}")
    return ExportResult(folder=folder, bundle=meta)


def check_output_folder(folder: Path, model_dir: Path) -> None:
    """Refuse a bundle folder whose replacement would lose something: export swaps the whole folder for the new
    bundle (``atomic_dir``), so everything in it goes. Allowed: a new or empty folder, or an earlier bundle (it has
    ``bundle.json``). Refused: the checkpoint's own folder or one that contains it (``--output`` = the run folder
    deleted the model being exported), any other folder with files in it (the parent of all bundles lost them
    all), and a path that is a file. An OutputError naming the folder, before any work."""
    try:
        resolved, model = folder.resolve(), model_dir.resolve()
        if resolved == model or resolved in model.parents:
            raise OutputError(f"refusing to export into the folder that holds the checkpoint being exported "
                              f"({model}): export replaces the whole folder; choose another --output", folder)
        if not folder.exists():
            return
        if not folder.is_dir():
            raise OutputError("exists and is not a folder: choose another --output for the bundle", folder)
        if is_bundle(folder) or next(folder.iterdir(), None) is None:
            return
    except OSError as exc:  # an unreadable folder, a loop of links: its own message, in one line
        raise OutputError(f"cannot use this folder for the bundle ({exc.strerror or exc})", folder) from None
    raise OutputError("refusing to export into a folder that holds other files and no earlier bundle (bundle.json): "
                      "export replaces the whole folder; choose a new or empty folder, or an earlier bundle's", folder)


def _save_search_index(detector: Detector, folder: Path) -> dict[str, Any]:
    """PatchCore's faiss index as the library built it (faiss's own binary format, never pickle): the runtime then
    finds the checkpoint's neighbours at the checkpoint's speed. The ``search`` section of bundle.json."""
    index = detector.index_  # type: ignore[attr-defined]
    name = None
    if index.cpu_search is not None and index.cpu_search.write_index(folder / "search_index.faiss"):
        name = "search_index.faiss"
    return {"index": name, "kind": index.kind, "nprobe": getattr(index.index, "nprobe", None),
            "num_neighbours": int(detector.config.num_neighbours),  # type: ignore[attr-defined]
            "without_faiss": "exact search with numpy (slower on large banks; ~99% the same neighbours as an IVF index)"}


def _export_video(detector: BaseDetector, format: str, precision: str, output: str | Path | None, run: dict[str, Any],
                  run_dir: Path, model_dir: Path, reporter: Reporter) -> ExportResult:
    """A video bundle: the graphs of :mod:`anomalens.export.video`, checked against ``analyze-video`` on the run's
    held-out normal clip(s)."""
    from anomalens.export.video import VIDEO_EXPORTABLE, export_video_graphs, video_constant_inputs

    if detector.name not in VIDEO_EXPORTABLE:
        raise ConfigError(f"export supports the video models {', '.join(VIDEO_EXPORTABLE)}; {detector.name} cannot be exported")
    if precision != "fp32":
        raise ConfigError(f"--precision {precision}: video bundles are exported at fp32 only (int8 and bf16 apply to image models)")
    if detector.calibration_ is None:
        raise ConfigError("this model has no threshold (it was never fitted with validation clips)")
    if getattr(detector.config, "flow_min_contrast", None):
        raise ConfigError("stfeatures with flow_min_contrast cannot be exported yet (the runtime's optical flow counts all vectors)")
    folder = Path(output) if output is not None else run_dir / EXPORT_DIR / f"{format}_{precision}"
    check_output_folder(folder, model_dir)
    constants = video_constant_inputs(detector)
    with atomic_dir(folder) as tmp:
        reporter.log(f"tracing the {detector.name} graphs to ONNX")
        parts = export_video_graphs(detector, tmp)
        for name, array in constants.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        if format == "openvino":
            for graph in parts["graphs"].values():
                graph["file"] = _to_openvino(tmp, graph["file"])
        meta = {
            **_header(detector, format, precision, run, model_dir),
            "runtime": {"engine": format, "precision": precision, "openvino_precision_hint": "f32" if format == "openvino" else None},
            "input": {"dtype": "uint8", "layout": "NCHW", "channels": "RGB", "image_size": [int(v) for v in detector.config.image_size]},
            "preprocessing": _preprocessing(detector),
            **parts,
            "outputs": {name: graph["outputs"] for name, graph in parts["graphs"].items()},
            "postprocessing": {"in_graph": _video_in_graph(detector), "outside_graph": _video_outside_graph(detector)},
            "constant_inputs": {name: {"file": f"{name}.npy", "shape": list(array.shape), "dtype": "float32"}
                                for name, array in constants.items()},
            "calibration": detector.calibration_.to_dict(),
            "calibration_source": "checkpoint",
            CHECKSUMS: bundle_checksums(tmp),  # every file is final now (the parity check below reads them)
        }
        write_json_atomic(tmp / BUNDLE_FILE, meta)
        meta["export_check"] = _check_video(detector, tmp, run, reporter)
        write_json_atomic(tmp / BUNDLE_FILE, meta)
    reporter.log(f"wrote the {format} {precision} video bundle to {folder}")
    return ExportResult(folder=folder, bundle=meta)


def _video_in_graph(detector: BaseDetector) -> list[str]:
    if detector.name == "convlstm":
        return ["uint8 -> float / 255", "ConvLSTM autoencoder over one window of sequence_length frames",
                "per-frame squared error, mean over channels, 4x4 average pooling, 3x3 local average"]
    matching = getattr(detector, "matches_noise_level", False)
    return ["appearance.onnx: uint8 -> float / 255, input blur, "
            + ("noise-level matching (frames noisier than the training frames' limit low-passed to it), " if matching else "")
            + "backbone patch features, exact distance to the "
            "appearance memory, 3x3 local average; grey frames area-resized to the flow size",
            "motion.onnx: per-cell orientation histograms of the flow, distance to each cell's motion memory, 3x3 "
            "local average; each cue's frame score (maximum) standardised; the standardised map (sum of both cues)"]


# what a bundle's README and manifest say of the verdict: metrics.threshold.above_threshold, the library's rule
VERDICT_RULE = "verdict = score > threshold, or score is NaN (could not be computed)"


def _video_outside_graph(detector: BaseDetector) -> list[str]:
    common = ["decoding (PyAV) and resizing (Pillow, anomalens.data.pixels)"]
    tail = ["normalised score = sigmoid((score - threshold) / scale)", VERDICT_RULE,
            "events = runs above the threshold, merged across gaps shorter than 0.2 s (anomalens.metrics.events)"]
    if detector.name == "convlstm":
        return [*common, "windows every stride frames (plus one flush with the end); each frame's map is the mean "
                "of the maps of the windows covering it; score = maximum of that map", *tail]
    return [*common, "DIS optical flow between consecutive grey frames (OpenCV, anomalens.data.flow); the first "
            "frame borrows the second's flow", "each cue's series smoothed in time: a running median of "
            "video.temporal_median frames, the Gaussian taps in video.temporal_kernel (when video.temporal_spill is "
            "set, on the part of each value up to it, the part above through a running median of 3), then no frame "
            "more than video.temporal_cap (when set) above its own median (anomalens.metrics.smoothing.smooth_scores)",
            "score = smoothed appearance + smoothed motion", *tail]


def _validation_clips(run: dict[str, Any], preprocessing: Any) -> list[Any]:
    """The run's held-out normal clips (a name, or a name and a frame range for the tail of a single clip)."""
    import re

    from anomalens.data.video_datasets import discover_video_category
    from anomalens.data.video_io import open_clip

    try:
        found = {ref.path.name: ref.path for ref in discover_video_category(run["data_dir"], run["category"]).train}
    except (KeyError, TypeError, DataError):
        return []
    clips = []
    for name in run.get("validation_clips", []):
        match = re.fullmatch(r"(.+) \[frames (\d+)-(\d+)\]", name)
        path = found.get(match.group(1) if match else name)
        if path is None:
            continue
        clip = open_clip(path, preprocessing)
        clips.append(clip.segment(int(match.group(2)), int(match.group(3)) + 1) if match else clip)
    return clips


def _check_video(detector: BaseDetector, folder: Path, run: dict[str, Any], reporter: Reporter) -> dict[str, Any] | None:
    """Score the run's held-out normal clips with the checkpoint and the bundle; the largest differences."""
    from anomalens.inference.video import VideoInferencer

    clips = _validation_clips(run, detector.preprocessing)
    if not clips:
        reporter.log("warning: the run's validation clips were not found: no parity check")
        return None
    inferencer = VideoInferencer.load(folder)
    cal = detector.calibration_
    assert cal is not None
    scores, reference, maps, reference_maps = [], [], [], []
    for clip in clips:
        expected = detector.predict_clip(clip)  # type: ignore[attr-defined]
        got = inferencer.predict_video(clip.iter_native(), fps=clip.stated_fps)
        scores.append(got.scores)
        reference.append(np.asarray(expected.scores, dtype=np.float32))
        maps.append(cal.normalize(got.maps))
        reference_maps.append(cal.normalize(np.asarray(expected.maps, dtype=np.float32)))
    scores_all, reference_all = np.concatenate(scores), np.concatenate(reference)
    difference = float(np.abs(scores_all - reference_all).max())
    check = {
        "clips": len(clips), "frames": int(scores_all.size),
        "max_score_difference": difference,
        "max_score_difference_over_scale": difference / cal.scale,
        "max_heatmap_difference": float(max(np.abs(a - b).max() for a, b in zip(maps, reference_maps))),
        "same_verdicts": bool((cal.is_anomalous(scores_all) == cal.is_anomalous(reference_all)).all()),
    }
    reporter.log(f"bundle vs checkpoint on {check['frames']} frames of {len(clips)} validation clip(s): largest score "
                 f"difference {difference:.3g} ({check['max_score_difference_over_scale']:.2g} of the calibration's scale)")
    return check


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
    name = f"{Path(onnx_name).stem}.xml"  # model.xml, features.xml, ... (+ .bin beside it)
    # read_model, not convert_model: on the int8 (QDQ) graph convert_model's conversion tripled the features'
    # error (mean relative error 0.32 against 0.093 for ONNX Runtime and read_model, bottle validation images)
    model = ov.Core().read_model(str(folder / onnx_name))
    ov.save_model(model, str(folder / name), compress_to_fp16=False)  # keep fp32 weights: parity
    (folder / onnx_name).unlink()
    return name


def _describe(detector: Detector, format: str, precision: str, graphs: dict[str, dict[str, Any]],
              constants: dict[str, np.ndarray], max_batch: int, run: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    config = detector.config
    split = "network" not in graphs
    in_graph = ["uint8 -> float / 255", "the model's scoring code, traced from Detector._score_batch"
                + (" (features.onnx: up to the patch features; maps.onnx: from the patch distances)" if split else "")]
    if detector.name in ("patchcore", "padim"):
        in_graph += [
            f"backbone {config.backbone} input normalisation (x * 255 - 127) / 128",  # type: ignore[attr-defined]
            f"patch features of stages {list(config.stages)}, {config.neighbourhood}x{config.neighbourhood} average",  # type: ignore[attr-defined]
            "maps.onnx: PatchCore's image weight applied to the map" if detector.name == "patchcore" else "Mahalanobis distance per position",
            "bilinear upsampling aligned on the backbone's cell centres",
            f"Gaussian blur sigma {config.blur_sigma}",  # type: ignore[attr-defined]
        ]
    else:
        in_graph += ["reconstruction, per-pixel error", f"Gaussian blur sigma {config.smoothing_sigma}",  # type: ignore[attr-defined]
                     f"normal reference '{config.normal_reference}'"]  # type: ignore[attr-defined]
    in_graph.append("image score = maximum of the map" + (" (off the part capped at the map's typical level, "
                     "score_region 'part')" if getattr(config, "score_region", "image") == "part" else ""))
    return {
        **_header(detector, format, precision, run, model_dir),
        "runtime": {"engine": format, "precision": precision, "network": None if split else graphs["network"]["file"],
                    "openvino_precision_hint": {"fp32": "f32", "bf16": "bf16", "int8": "f32"}[precision] if format == "openvino" else None},
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NCHW", "channels": "RGB",
                  "image_size": [int(v) for v in config.image_size], "max_batch": max_batch},
        "preprocessing": _preprocessing(detector),
        **({"graphs": {name: {**graph, "outputs": ["features"] if name == "features" else output_names(detector)}
                       for name, graph in graphs.items()}} if split else {}),
        "outputs": {name: name for name in output_names(detector)},
        "postprocessing": {
            "in_graph": in_graph,
            "outside_graph": (["between the graphs: nearest-neighbour search of every patch in the memory bank with "
                               "the library's faiss index (search_index.faiss), and PatchCore's image weight "
                               "1 - softmax(distances to the b neighbours of m*)[0] (anomalens.inference.search)"] if split else []) + ["normalised score = sigmoid((score - threshold) / scale)",
                              VERDICT_RULE, "mask = map > pixel_threshold",
                              "regions = 8-connected components of the mask, in pixels of the image given (anomalens.metrics.regions)"],
        },
        "constant_inputs": {name: {"file": f"{name}.npy", "shape": list(array.shape), "dtype": "float32"}
                            for name, array in constants.items()},
        "calibration": detector.calibration_.to_dict(),  # type: ignore[union-attr]  (may be replaced after the check)
    }


def _header(detector: BaseDetector, format: str, precision: str, run: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """What every bundle says about itself and the model it holds."""
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "anomalens_version": __version__,
        "created": datetime.now().isoformat(timespec="seconds"),
        "model": {"name": detector.name, "kind": detector.kind, "format_version": lowest_format(detector.name),
                  "trained_with": run.get("anomalens_version"), "config": detector.config.to_dict(),
                  "checkpoint": str(model_dir.resolve()), "category": run.get("category")},
    }


def _preprocessing(detector: BaseDetector) -> dict[str, Any]:
    return {
        "decode": "Pillow; 16-bit and float images scaled to 8 bits, transparency composited on black, "
                  "grey repeated to RGB (anomalens.data.pixels)" + ("; video frames decoded by PyAV "
                  "(anomalens.data.video_io)" if detector.kind == "video" else ""),
        "resize": RESIZE_METHOD,
        "image_size": [int(v) for v in detector.config.image_size],
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
        calibration, source = quantised_calibration(calibration, reference.scores, reference.maps, scores, maps, precision)
        reporter.log(f"calibration: {source}")
    elif calibration.pixel_threshold is None:  # a model saved before pixel thresholds: add one, same rule
        calibration = dataclasses.replace(calibration, pixel_threshold=pixel_threshold(reference.maps, calibration.threshold),
                                          pixel_target_fpr=DEFAULT_PIXEL_TARGET_FPR)
        source = "checkpoint; pixel threshold added from the validation maps at export"
    ref_cal = detector.calibration_
    check = {
        "images": len(validation),
        "max_score_difference": float(np.abs(scores - reference.scores).max()),
        "max_score_difference_over_scale": float(np.abs(scores - reference.scores).max() / ref_cal.scale),
        "max_heatmap_difference": float(np.abs(ref_cal.normalize(maps) - ref_cal.normalize(reference.maps)).max()),
        "same_verdicts": bool((calibration.is_anomalous(scores) == ref_cal.is_anomalous(reference.scores)).all()),
    }
    reporter.log(f"bundle vs checkpoint on {len(validation)} validation images: largest score difference "
                 f"{check['max_score_difference']:.3g} ({check['max_score_difference_over_scale']:.2g} of the calibration's scale)")
    return {"calibration": calibration.to_dict(), "calibration_source": source, "export_check": check}


def quantised_calibration(calibration: Calibration, reference_scores: np.ndarray, reference_maps: np.ndarray,
                          scores: np.ndarray, maps: np.ndarray, precision: str) -> tuple[Calibration, str]:
    """The checkpoint's ``calibration`` carried over to a quantised graph, and what ``calibration_source`` says.

    The checkpoint's threshold heard every normal score the fit had (held-out images, and the training images
    scored by memories without them); the bundle cannot re-score those, only the run's few validation images. So
    rather than choosing a threshold again from those alone, the checkpoint's is moved by the quantised graph's
    score shift measured on them (the paired mean difference, :func:`~anomalens.metrics.threshold.score_shift`):
    the same promise at the graph's own scale. The pixel threshold moves by the shift of the same rule's quantile
    on the validation maps (:func:`~anomalens.metrics.threshold.pixel_threshold`), capped at the image threshold.
    """
    shift = score_shift(np.asarray(scores)[None], reference_scores, what=f"{precision} scores")
    moved = {"threshold": calibration.threshold + shift.shift, "validation_mean": calibration.validation_mean + shift.shift,
             "validation_max": calibration.validation_max + shift.shift}
    pixel_note = ""
    if calibration.pixel_threshold is not None:
        rule = lambda m: pixel_threshold(m, np.inf, calibration.pixel_target_fpr or DEFAULT_PIXEL_TARGET_FPR)  # noqa: E731
        pixel_shift = rule(maps) - rule(reference_maps)
        moved["pixel_threshold"] = min(calibration.pixel_threshold + pixel_shift, moved["threshold"])
        pixel_note = f", pixel threshold by {pixel_shift:+.3g}"
    source = (f"checkpoint, threshold moved by {shift.shift:+.3g}{pixel_note} for {precision}: on the run's "
              f"{len(reference_scores)} validation images (normal, held out) the {precision} scores stood "
              f"{shift.measured:+.3g} above the checkpoint's" + ("" if shift.shift else " (too few or too varied to move it)"))
    return dataclasses.replace(calibration, **moved), source


def _tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
