"""Prediction: score new images, or every frame of one video, with a trained run's own threshold.

>>> predict_images("results/bottle_20261128_120000", ["new_photo.png"]).results[0].anomalous     # doctest: +SKIP
>>> analyze_video("results/video_ucsd_ped2_20261128_120000", "line_camera.mp4").events          # doctest: +SKIP

An analysed video never sets its own threshold; output files appear only once all of them are written.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from anomalens.data.pixels import image_size_of, read_rgb
from anomalens.data.preprocessing import IMAGE_EXTENSIONS, Preprocessing
from anomalens.data.video_io import check_fps, open_clip
from anomalens.errors import ConfigError, DataError
from anomalens.metrics.drift import DriftReport, assess_drift, typical_distances
from anomalens.metrics.events import Event, attach_peak_cues, attach_peak_regions, calibrated_events
from anomalens.metrics.regions import Region, find_regions, half_excess_level, mask_at_size, size_fields
from anomalens.metrics.threshold import threshold_rule
from anomalens.models.base import BaseDetector
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_path, write_json_atomic, write_text_atomic
from anomalens.visualization.overlays import anomaly_contours, overlay, resize_map, to_hwc
from anomalens.visualization.timeline import plot_timeline
from anomalens.visualization.video_render import render_side_by_side
from anomalens.workflows.reports import scores_csv, write_prediction_tables
from anomalens.workflows.runs import (ANALYSIS_DIR, PREDICTIONS_DIR, claim_fresh_dir, load_fitted_detector,
                                       open_run, safe_name, staged_dir)
from anomalens.workflows.storage import check_writable


# ---- images -------------------------------------------------------------------------------------------
PREDICTIONS_CSV = "predictions.csv"
PREDICTIONS_JSON = "predictions.json"


@dataclass
class ImageResult:
    path: Path
    score: float
    normalized_score: float
    anomalous: bool
    overlay_path: Path | None
    image: np.ndarray | None  # preprocessed RGB uint8 (H, W, 3); None once dropped (keep_arrays=False)
    heatmap: np.ndarray | None  # normalised anomaly map (H, W) in [0, 1]; None once dropped
    reconstruction: np.ndarray | None  # model view RGB uint8, if the model has one
    relative_path: str = ""  # the input's path relative to the inputs' common folder ("good/000.png")
    mask: np.ndarray | None = None  # bool (H, W): pixels above the pixel threshold, at the model's input size
    regions: list[Region] = field(default_factory=list)  # connected parts of the mask, largest first, in image pixels
    mask_path: Path | None = None  # the mask at the image's own size
    typical_distance: float = float("nan")  # median of the raw map: what the drift check compares
    image_size: tuple[int, int] | None = None  # the input's own (height, width): regions, overlay and mask file

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "relative_path": self.relative_path,
            "score": self.score,
            "normalized_score": self.normalized_score,
            "anomalous": self.anomalous,
            "overlay": str(self.overlay_path) if self.overlay_path is not None else None,
            "mask": str(self.mask_path) if self.mask_path is not None else None,
            "regions": [r.to_dict() for r in self.regions],
            **size_fields(self.image_size),
        }


@dataclass
class PredictionReport:
    results: list[ImageResult]
    csv_path: Path | None
    json_path: Path | None
    drift: DriftReport | None = None  # do these images, as a batch, look unlike the training data?


def collect_image_paths(inputs: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files as given, folders searched recursively for images (sorted); a missing path is an error."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not found:
                raise DataError(f"folder holds no images ({', '.join(IMAGE_EXTENSIONS)})", path)
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError("file not found", path)
    if not paths:
        raise DataError("no images given")
    return paths


def predict_images(
    checkpoint_or_detector: str | Path | BaseDetector,
    inputs: str | Path | Iterable[str | Path | np.ndarray],
    output_dir: str | Path | None = None,
    *,
    device: str = "auto",
    reporter: Reporter = SILENT,
    batch_size: int = 32,
    overwrite: bool = False,
    save_masks: bool = False,
    keep_arrays: bool = True,
) -> PredictionReport:
    """Score images: raw score, normalised score (0.5 = threshold), verdict and an overlay per image.

    ``inputs``: image files, folders (searched recursively) or RGB arrays ``(H, W, 3)``. Files are written to
    ``output_dir`` (default: a new ``RUN_DIR/predictions/<YYYYmmdd_HHMMSS>/`` per call for a checkpoint; none for
    a Detector object unless given): one overlay per image at the image's own size (heatmap over the image,
    regions above the threshold outlined), named after the input's path relative to the inputs' common
    folder (``good/000.png`` -> ``good/000_overlay.png``), and ``predictions.csv`` / ``predictions.json``,
    moved in only once every image has been scored. A folder that already holds predictions is refused
    unless ``overwrite``, which then removes the earlier call's tables, overlays and masks (nothing else), but
    only once the new ones are ready: a call that fails leaves the earlier results as they were.
    Each result lists its defect regions (pixels above the model's pixel threshold, chosen on normal validation
    images); ``save_masks`` also writes each binary mask as ``<name>_mask.png`` beside its overlay.
    ``keep_arrays`` False drops each result's image, heatmap, mask and reconstruction (None) once its batch is
    written, so that memory stays one batch's however many images are scored (the command line: 0.5 MB an image
    at 256 px once held to the end, 5 GB for 10,000); scores, verdicts and regions stay.
    """
    if batch_size < 1:  # a step of 0 fails in range(), a negative one scores nothing
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    detector = load_fitted_detector(checkpoint_or_detector, "image", device)
    items = _prediction_inputs(inputs)
    # a new folder of this call's own, taken by an exclusive mkdir (two calls in one second get one each)
    created: list[Path] = []  # the folders this call makes for itself: gone again if it fails
    if output_dir is None and not isinstance(checkpoint_or_detector, BaseDetector):
        parent = open_run(checkpoint_or_detector)[1] / PREDICTIONS_DIR
        created = claim_fresh_dir(parent)
        output_dir = created[0]
    if output_dir is not None:
        _refuse_earlier_predictions(Path(output_dir), overwrite)

    results: list[ImageResult] = []
    relative = relative_names([p for p, _ in items])
    names = overlay_names([p for p, _ in items])
    with staged_dir(output_dir, created) as folder:
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            overlays = [folder / name for name in names[start : start + len(chunk)]] if folder is not None else None
            masks = [folder / name.replace("_overlay.png", "_mask.png") for name in names[start : start + len(chunk)]] \
                if folder is not None and save_masks else None
            images = read_image_batch(detector, chunk, reporter=reporter,
                                      desc=f"read images {start + 1}-{start + len(chunk)} of {len(items)}")
            scored = score_image_batch(detector, chunk, images, overlays, masks, reporter=reporter)
            if not keep_arrays:
                for r in scored:
                    r.image = r.heatmap = r.mask = r.reconstruction = None
            results.extend(scored)
        for r, name in zip(results, relative):
            r.relative_path = name
        drift = assess_drift(np.array([r.typical_distance for r in results]), detector.drift_reference_, typical=True)
        if drift is not None and drift.drifted:
            reporter.log(f"warning: {drift.message}")
        csv_path = json_path = None
        if folder is not None:
            final = Path(output_dir)  # type: ignore[arg-type]
            for r in results:  # paths as they will be once the folder is in place
                r.overlay_path = final / r.overlay_path.relative_to(folder) if r.overlay_path is not None else None
                r.mask_path = final / r.mask_path.relative_to(folder) if r.mask_path is not None else None
            write_prediction_tables(folder, results, detector, checkpoint_or_detector, drift)
            csv_path, json_path = final / PREDICTIONS_CSV, final / PREDICTIONS_JSON
            if overwrite:
                _clear_earlier_predictions(final)  # only now: everything new is written, ready to move in
    if output_dir is not None:
        reporter.log(f"wrote {len(results)} predictions to {output_dir}")
    return PredictionReport(results=results, csv_path=csv_path, json_path=json_path, drift=drift)


def read_image_batch(detector: BaseDetector, items: Sequence[tuple[Path, np.ndarray | None]], *,
                     reporter: Reporter = SILENT, desc: str = "read images") -> torch.Tensor:
    """Decode ``(path, array or None)`` items with the model's preprocessing into ``uint8`` ``(N, 3, H, W)``."""
    preprocessing = detector.preprocessing
    return torch.stack([_prepare(preprocessing, path, array) for path, array in reporter.iter(items, desc)])


def score_image_batch(
    detector: BaseDetector,
    items: Sequence[tuple[Path, np.ndarray | None]],
    images: torch.Tensor,
    overlay_paths: Sequence[Path] | None = None,
    mask_paths: Sequence[Path] | None = None,
    *,
    reporter: Reporter = SILENT,
) -> list[ImageResult]:
    """Score and judge one batch of decoded ``images`` (from :func:`read_image_batch`); write an overlay PNG per
    image to ``overlay_paths`` when given, at the image's own size (decoded again from its file: the model saw
    it resized), and the defect mask to ``mask_paths``, at that size too; list each image's defect regions in its
    own pixels. The one scoring path of :func:`predict_images` and of the Ray engine."""
    cal = detector.calibration_
    assert cal is not None
    prediction = detector.predict(images, reporter=reporter)  # type: ignore[attr-defined]
    typical = typical_distances(prediction.maps)
    heatmaps = cal.normalize(prediction.maps)
    results = []
    for j, (path, array) in enumerate(items):
        image = to_hwc(images[j])
        heatmap = resize_map(heatmaps[j], image.shape[:2])
        overlay_path = None
        if overlay_paths is not None:
            overlay_path = overlay_paths[j]
            original = to_hwc(array if array is not None else read_rgb(path))
            full = resize_map(heatmaps[j], original.shape[:2])
            _write_png(overlay_path, anomaly_contours(overlay(original, full, 0.45), full))
            own_size = original.shape[:2]
        else:  # the header is enough (an array is (H, W[, C]), as the preprocessing reads it)
            own_size = np.asarray(array).shape[:2] if array is not None else image_size_of(path)
        own_size = (int(own_size[0]), int(own_size[1]))
        mask = cal.defect_mask(prediction.maps[j])
        mask_path = None
        if mask_paths is not None:
            mask_path = mask_paths[j]
            _write_png(mask_path, mask_at_size(mask, own_size).astype(np.uint8) * 255)
        score = float(prediction.scores[j])
        results.append(ImageResult(
            path=path,
            score=score,
            normalized_score=float(cal.normalize(score)),
            anomalous=bool(cal.is_anomalous(score)),
            overlay_path=overlay_path,
            image=image,
            heatmap=heatmap,
            reconstruction=to_hwc(prediction.views[j]) if prediction.views is not None else None,
            mask=mask,
            regions=find_regions(prediction.maps[j], cal.region_threshold(), image_size=own_size),
            mask_path=mask_path,
            typical_distance=float(typical[j]),
            image_size=own_size,
        ))
    return results


def _prediction_inputs(inputs: Any) -> list[tuple[Path, np.ndarray | None]]:
    if isinstance(inputs, np.ndarray) and inputs.ndim == 3:
        inputs = [inputs]
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    items: list[tuple[Path, np.ndarray | None]] = []
    for i, item in enumerate(inputs):
        if isinstance(item, np.ndarray):
            items.append((Path(f"image_{i:04d}.png"), item))
        else:
            items.extend((p, None) for p in collect_image_paths([item]))
    if not items:
        raise DataError("no images given")
    return items


def _prepare(preprocessing: Preprocessing, path: Path, array: np.ndarray | None) -> torch.Tensor:
    return preprocessing.prepare_array(array) if array is not None else preprocessing.load_image(path)


def relative_names(paths: list[Path]) -> list[str]:
    """Each path relative to the folder the inputs share (``good/000.png``, ``broken_large/000.png``), so that
    same-named files from different folders stay apart and can be traced back; a lone file keeps its name."""
    resolved = [p.resolve() for p in paths]
    try:
        common = Path(os.path.commonpath([p.parent for p in resolved]))
    except ValueError:  # different drives: keep the full paths apart by their last folders
        return [f"{p.parent.name}/{p.name}" for p in resolved]
    names, used = [], set()
    for p in resolved:
        name = p.relative_to(common).as_posix()
        base, n = name, 2
        while name in used:  # the same file given twice
            stem = Path(base)
            name, n = (stem.parent / f"{stem.stem}_{n}{stem.suffix}").as_posix(), n + 1
        used.add(name)
        names.append(name)
    return names


def overlay_names(paths: list[Path]) -> list[str]:
    """``<relative path without suffix>_overlay.png`` (``good/000_overlay.png``), see :func:`relative_names`; a
    file whose stem an earlier input already took keeps its suffix in the name (``a.png``, ``a.jpg`` ->
    ``a_overlay.png``, ``a_jpg_overlay.png``), so that no overlay or mask overwrites another's."""
    return _overlay_names_of(relative_names(paths))


def _overlay_names_of(relative: list[str]) -> list[str]:
    """:func:`overlay_names` of inputs already named relative to their common folder (a table's relative_path)."""
    names, used = [], set()
    for name in relative:
        stem = Path(name).with_suffix("").as_posix()
        if stem.casefold() in used:  # casefold: a.PNG and a.png are one file on case-insensitive disks
            stem = f"{stem}_{Path(name).suffix.lstrip('.')}"
            n = 2
            while stem.casefold() in used:
                stem, n = f"{Path(name).with_suffix('').as_posix()}_{Path(name).suffix.lstrip('.')}_{n}", n + 1
        used.add(stem.casefold())
        names.append(stem + "_overlay.png")
    return names


def _refuse_earlier_predictions(folder: Path, overwrite: bool) -> None:
    """Refuse to mix two calls' results in one folder, before any work (``overwrite`` replaces them later)."""
    if not overwrite and any((folder / table).exists() for table in (PREDICTIONS_CSV, PREDICTIONS_JSON)):
        raise ConfigError("already holds predictions of an earlier call; choose another output folder or "
                          "pass --overwrite to replace them", folder)


def _clear_earlier_predictions(folder: Path) -> None:
    """Remove the earlier call's tables, overlays and masks from ``folder``, nothing else.

    The tables store overlay paths as the earlier call was given its folder (relative to its working directory),
    so the files are found from each entry's ``relative_path``, named the way :func:`overlay_names` names them.
    """
    try:
        earlier = json.loads((folder / PREDICTIONS_JSON).read_text(encoding="utf-8")).get("results", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    inside = folder.resolve()
    entries = [e for e in earlier if isinstance(e, dict)] if isinstance(earlier, list) else []
    relative = [e["relative_path"] for e in entries if isinstance(e.get("relative_path"), str) and e["relative_path"]]
    named = dict(zip(relative, _overlay_names_of(relative)))  # as that call named them, collisions included
    for entry in entries:
        candidates = [Path(entry[key]) for key in ("overlay", "mask") if isinstance(entry.get(key), str)]
        if isinstance(entry.get("relative_path"), str) and entry["relative_path"] in named:
            overlay = named[entry["relative_path"]]
            candidates += [folder / overlay, folder / overlay.replace("_overlay.png", "_mask.png")]
        for path in candidates:
            # only our own file names, never outside the folder nor in a hidden one (the new results wait in one;
            # the table may have been edited)
            resolved = path.resolve()
            if (path.name.endswith(("_overlay.png", "_mask.png")) and path.is_file() and inside in resolved.parents
                    and not any(part.startswith(".") for part in resolved.relative_to(inside).parts)):
                path.unlink()
    for table in (PREDICTIONS_CSV, PREDICTIONS_JSON):
        (folder / table).unlink(missing_ok=True)


def _write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


# ---- one video ----------------------------------------------------------------------------------------
ANALYSIS_FILES = ("side_by_side.mp4", "timeline.png", "scores.csv", "events.json")


def _check_analysis_dir(folder: Path, checkpoint: str | Path | BaseDetector, overwrite: bool) -> None:
    """Refuse the run or model folder itself, and (unless ``overwrite``) a folder holding an earlier analysis."""
    if not isinstance(checkpoint, BaseDetector):
        model_dir, run_dir, _ = open_run(checkpoint)
        if folder.resolve() in (model_dir.resolve(), run_dir.resolve()):
            raise ConfigError("is the model's own run or model folder; choose another output folder", folder)
    if not overwrite and any((folder / name).exists() for name in ANALYSIS_FILES):
        raise ConfigError("already holds an analysis of an earlier call; choose another output folder or "
                          "pass --overwrite to replace it", folder)


@dataclass
class VideoAnalysis:
    """What :func:`analyze_video` wrote and found."""

    output_dir: Path
    side_by_side_path: Path
    timeline_path: Path
    scores_csv: Path
    events_json: Path
    scores: np.ndarray
    normalized_scores: np.ndarray
    anomalous: np.ndarray
    events: list[Event]
    fps: float
    fps_stated: bool  # false: nothing stated the rate; ``fps`` (25) is assumed for timing, motion measured per frame
    drift: DriftReport | None = None  # None for models saved before drift was recorded


def analyze_video(
    checkpoint_or_detector: str | Path | BaseDetector,
    video: str | Path,
    output_dir: str | Path | None = None,
    *,
    device: str = "auto",
    reporter: Reporter = SILENT,
    fps: float | None = None,
    overwrite: bool = False,
) -> VideoAnalysis:
    """Score every frame of ``video`` (file or frame folder) with the model's own threshold and write the outputs.

    ``output_dir`` defaults to ``RUN_DIR/analysis/<video>_<timestamp>/`` (``results/analysis/...`` for a
    detector object). ``fps`` states the rate of a folder of frames or a video that states none (else 25 is assumed
    for timing and motion is measured per frame). Files appear only once all of them are written. An
    ``output_dir`` that already holds an analysis is refused unless ``overwrite``; its files are then replaced only
    once the new ones are all written.
    """
    fps = check_fps(fps)  # before the model is loaded
    started_at = datetime.now()  # the default folder's name: when the analysis began
    if output_dir is not None:  # before the video is read and scored, not after
        _check_analysis_dir(Path(output_dir), checkpoint_or_detector, overwrite)
    detector = load_fitted_detector(checkpoint_or_detector, "video", device)
    cal = detector.calibration_
    assert cal is not None
    clip = open_clip(video, detector.preprocessing, reporter, fps=fps)
    if clip.stated_fps is None:
        reporter.log(f"{clip.name}: no frame rate stated: times assume {clip.fps:g} fps and motion is measured per "
                     "frame (--fps states the rate)")
    fresh = output_dir is None
    if fresh:
        base = Path("results")
        if not isinstance(checkpoint_or_detector, BaseDetector):
            base = open_run(checkpoint_or_detector)[1]
        analyses = check_writable(base / ANALYSIS_DIR)  # before scoring, not after it (and creating nothing yet)
    else:
        output_dir = check_writable(output_dir)
    started = time.perf_counter()
    prediction = detector.predict_clip(clip, reporter)  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    scores = np.asarray(prediction.scores, dtype=np.float64)
    count = clip.num_frames
    if count is not None and count != scores.size:
        raise RuntimeError(f"{detector.name} returned {scores.size} scores for {count} frames")
    normalized = cal.normalize(scores)
    anomalous = cal.is_anomalous(scores)
    times = clip.frame_times()  # a variable frame rate's own times (read in the pass just done); None: t / fps
    if times is not None:
        gaps = np.diff(times)
        uneven = f" (frames {gaps.min() * 1000:.0f}-{gaps.max() * 1000:.0f} ms apart)" if gaps.size else ""
        # motion is compared per frame at one rate: a frame after a long gap moved further than one after a short
        reporter.log(f"warning: {clip.name}: variable frame rate{uneven}: times are the file's own timestamps, but "
                     "motion is measured between consecutive frames, so frames after long gaps can score high")
    repaired = clip.timestamp_note()  # broken timestamps repaired in the pass just done, counted
    if repaired:
        reporter.log(f"warning: {clip.name}: broken timestamps: {repaired}")
    events = calibrated_events(scores, cal, clip.fps, normalized_scores=normalized, times=times)
    cues = {name: np.asarray(values, dtype=np.float64) for name, values in getattr(prediction, "cues", {}).items()}
    attach_peak_cues(events, cues)  # which cue made each peak
    if getattr(detector, "map_places_events", False):  # and where, in the video's own pixels
        attach_peak_regions(events, prediction.maps, cal.region_threshold(), clip.frame_size)
    reporter.log(
        f"{clip.name}: {scores.size} frames scored in {seconds:.1f} s ({scores.size / max(seconds, 1e-9):.1f} frames/s); "
        f"{int(anomalous.sum())} above the threshold, {len(events)} interval(s)"
    )
    drift = assess_drift(prediction, detector.drift_reference_)  # its typical cells, as fitted
    if drift is not None and drift.drifted:
        reporter.log(f"warning: {clip.name}: {drift.message}")
    view_label = getattr(detector, "view_label", "Reconstruction" if detector.name == "convlstm" else "Model view")
    maps = (cal.normalize(m.astype(np.float32)) for m in prediction.maps)
    # the overlay outlines what an event's regions hold: half the map's excess over the threshold, frame by frame
    levels = ((float(cal.normalize(half_excess_level(m, cal.region_threshold()))) for m in prediction.maps)
              if getattr(detector, "map_places_events", False) else None)
    created: list[Path] = []  # the folders this call makes for itself: gone again if it fails
    if fresh:  # a folder of this call's own, taken by an exclusive mkdir, so that the same video analysed twice in
        # one second (two processes, several Ray tasks) gets two; named by when the analysis began, gone if it fails
        created = claim_fresh_dir(analyses, safe_name(clip.name), now=started_at)
        output_dir = created[0]
    with staged_dir(output_dir, created) as tmp:
        assert tmp is not None
        render_side_by_side(
            tmp / "side_by_side.mp4", clip.iter_native(), clip.frame_size, scores, normalized, maps, prediction.views,
            clip.fps, view_label=view_label, reporter=reporter, contour_levels=levels, times=times, anomalous=anomalous,
        )
        plot_timeline(scores, cal.threshold, clip.fps, tmp / "timeline.png", events=events,
                      title=f"{clip.name}: anomaly score per frame", times=times)
        write_text_atomic(tmp / "scores.csv", scores_csv(scores, normalized, anomalous, clip.fps, cues, times))
        write_json_atomic(
            tmp / "events.json",
            {
                "video": str(Path(video)),
                "model": detector.name,
                "fps": clip.fps,
                "fps_stated": clip.stated_fps is not None,
                "variable_frame_rate": times is not None,  # times from the file's timestamps, not frame / fps
                "frames": int(scores.size),
                "threshold": cal.threshold,
                "threshold_rule": threshold_rule("video", getattr(detector.config, "threshold_from_folds", False), cal.target_fpr),
                "truncated": clip.truncated,
                "drift": drift.to_dict() if drift is not None else None,
                "events": events,
            },
        )
    return VideoAnalysis(
        output_dir=output_dir,
        side_by_side_path=output_dir / "side_by_side.mp4",
        timeline_path=output_dir / "timeline.png",
        scores_csv=output_dir / "scores.csv",
        events_json=output_dir / "events.json",
        scores=scores,
        normalized_scores=normalized,
        anomalous=anomalous,
        events=[Event.from_dict(event) for event in events],
        fps=clip.fps,
        fps_stated=clip.stated_fps is not None,
        drift=drift,
    )
