"""What the web UI's buttons do, as plain functions over the library API (no Gradio in here).

Each function takes plain values (paths, strings, numbers) and returns plain values or small dataclasses that
:mod:`anomalens.ui.app` puts on the page, so every one of them is testable without a browser. Outputs go to a
fresh per-tab folder under ``<results-dir>/ui_sessions/`` (two tabs never overwrite each other); new models get a
unique run name under ``<results-dir>/``.

>>> settings = UISettings(results_dir="results", data_roots=["demo_data"])          # doctest: +SKIP
>>> view = inspect_images(settings, run_dir, ["part.png"], key="tab1")             # doctest: +SKIP
>>> inspection_rows(view, threshold=0.5)                                          # doctest: +SKIP
[['part.png', 1.234, 0.873, 'ANOMALY']]
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import math
import shutil
import threading
import time
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from anomalens.errors import ConfigError, DataError
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_path
from anomalens.ui.jobs import new_workspace, unique_run_name
from anomalens.ui.security import DEFAULT_MAX_UPLOAD_MB, check_upload_size, confine_path, resolve_roots, safe_extract_zip

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")
SESSIONS_FOLDER = "ui_sessions"
# Settings that have their own widget in the Train view; every other config field is "advanced".
COMMON_SETTINGS = ("image_size", "seed")


@dataclass
class UISettings:
    """Where the UI reads and writes, fixed when the server starts."""

    results_dir: Path
    data_roots: list[Path] = field(default_factory=list)
    device: str = "auto"
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
    image_examples: list[Path] = field(default_factory=list)
    video_examples: list[Path] = field(default_factory=list)
    # where each session's outputs go; the server sets a private folder outside the results folder
    sessions_root: Path | None = None

    def __post_init__(self) -> None:
        self.results_dir = Path(self.results_dir).resolve()
        self.data_roots = resolve_roots(self.data_roots)
        self.image_examples = [Path(p) for p in self.image_examples]
        self.video_examples = [Path(p) for p in self.video_examples]

    @property
    def sessions_dir(self) -> Path:
        return Path(self.sessions_root) if self.sessions_root is not None else self.results_dir / SESSIONS_FOLDER

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


# ---- models --------------------------------------------------------------------------------------------
HEADLINE_METRICS = ("image_auroc", "pixel_auroc", "aupro", "f1_max", "frame_auroc", "video_auroc")


def _short_metrics(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "not evaluated"
    parts = []
    for name in HEADLINE_METRICS:
        value = metrics.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{name.replace('_', ' ')} {value:.3f}")
    return ", ".join(parts) or "not evaluated"


def _created_text(created: Any) -> str:
    if isinstance(created, datetime):
        return created.strftime("%Y-%m-%d %H:%M")
    if isinstance(created, (int, float)):
        return datetime.fromtimestamp(created).strftime("%Y-%m-%d %H:%M")
    return str(created or "")


def list_models(settings: UISettings, kind: str | None = None) -> list[Any]:
    """Finished runs under the results folder, newest first (``RunInfo`` from :mod:`anomalens.workflows.runs`)."""
    from anomalens.workflows.runs import list_runs

    if not settings.results_dir.is_dir():
        return []
    return list(list_runs(settings.results_dir, kind=kind))


def model_choices(settings: UISettings, kind: str) -> list[tuple[str, str]]:
    """(label, run folder) pairs for a dropdown: category · model · date · test metrics."""
    return [
        (f"{run.category} · {run.model} · {_created_text(run.created)} · {_short_metrics(run.metrics)}", str(run.run_dir))
        for run in list_models(settings, kind)
    ]


MODEL_TABLE_HEADERS = ["run", "kind", "category", "model", "created", "test metrics"]


def model_rows(settings: UISettings) -> list[list[str]]:
    return [
        [Path(run.run_dir).name, run.kind, run.category, run.model, _created_text(run.created), _short_metrics(run.metrics)]
        for run in list_models(settings)
    ]


def _run_dir(settings: UISettings, run_dir: str | Path | None) -> Path:
    """A model chosen in the page must be a run under the results folder (the dropdown only offers those)."""
    if not run_dir:
        raise DataError("choose a model first (train one in the Train tab if the list is empty)")
    return confine_path(run_dir, [settings.results_dir])


def threshold_text(run_dir: str | Path) -> str:
    """How the model's threshold was chosen, in one sentence for the page."""
    from anomalens.models.base import read_model_config

    calibration = read_model_config(run_dir).get("calibration") or {}
    if not calibration:
        return "This model has no calibrated threshold."
    return (
        f"Threshold {calibration['threshold']:.4g} (raw score) = normalised 0.5, chosen on "
        f"{calibration['validation_count']} held-out normal samples for a {calibration['target_fpr']:.0%} false-alarm rate."
    )


class _DetectorCache:
    """Keeps the last few loaded models so that repeated clicks do not reload weights."""

    def __init__(self, size: int = 3) -> None:
        self._items: OrderedDict[tuple[str, float, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, run_dir: Path, device: str, kind: str) -> Any:
        from anomalens.models.base import load_detector, resolve_model_dir

        model_dir = resolve_model_dir(run_dir)
        weights = model_dir / "weights.safetensors"
        key = (str(model_dir), weights.stat().st_mtime if weights.exists() else 0.0, device, kind)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        detector = load_detector(model_dir, device=device, kind=kind)
        with self._lock:
            self._items[key] = detector
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return detector


DETECTORS = _DetectorCache()


# ---- 1. inspect images ---------------------------------------------------------------------------------
@dataclass
class ImageItem:
    name: str
    score: float
    normalized_score: float
    overlay_path: Path | None
    reconstruction_path: Path | None = None


@dataclass
class ImageInspection:
    run_dir: Path
    output_dir: Path
    items: list[ImageItem]
    threshold_note: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)

    def raw_threshold(self, normalized: float) -> float | None:
        """The raw score that a normalised threshold stands for (inverse of the model's sigmoid)."""
        if not self.calibration:
            return None
        p = min(max(float(normalized), 1e-6), 1 - 1e-6)
        return self.calibration["threshold"] + self.calibration["scale"] * math.log(p / (1 - p))


def _save_rgb(array: Any, target: Path) -> Path | None:
    """Write an RGB array (HWC or CHW; uint8 or float in [0, 1]) as PNG."""
    if array is None:
        return None
    data = np.asarray(array)
    if data.ndim == 3 and data.shape[0] == 3 and data.shape[-1] != 3:
        data = data.transpose(1, 2, 0)
    if data.dtype != np.uint8:
        data = np.clip(data * 255.0 + 0.5, 0, 255).astype(np.uint8)
    with atomic_path(target) as tmp:
        Image.fromarray(data).save(tmp, format="PNG")
    return target


def inspect_images(
    settings: UISettings, run_dir: str | Path | None, files: Sequence[str | Path] | None, key: str, reporter: Reporter = SILENT
) -> ImageInspection:
    """Score uploaded images with a trained image model; overlays go to a fresh per-tab folder."""
    from anomalens.models.base import read_model_config
    from anomalens.workflows.image import predict_images

    run = _run_dir(settings, run_dir)
    paths = [check_upload_size(p, settings.max_upload_bytes) for p in (files or [])]
    if not paths:
        raise DataError("upload one or more images first (or click an example)")
    detector = DETECTORS.get(run, settings.device, "image")
    output_dir = new_workspace(settings.sessions_dir, key, "inspect")
    report = predict_images(detector, paths, output_dir, device=settings.device, reporter=reporter)
    items = []
    seen: dict[str, int] = {}
    for index, result in enumerate(report.results):
        name = Path(result.path).name
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # browsers send bare file names: keep same-named uploads apart
            name = f"{name} #{seen[name]}"
        reconstruction = getattr(result, "reconstruction", None)
        recon_path = _save_rgb(reconstruction, output_dir / "reconstructions" / f"{index:03d}_{Path(name).stem}.png")
        overlay = Path(result.overlay_path) if getattr(result, "overlay_path", None) else None
        items.append(ImageItem(name, float(result.score), float(result.normalized_score), overlay, recon_path))
    calibration = read_model_config(run).get("calibration") or {}
    return ImageInspection(run, output_dir, items, threshold_text(run), calibration)


INSPECTION_HEADERS = ["image", "raw score", "normalised score", "verdict"]


def verdict(normalized_score: float, threshold: float) -> str:
    return "ANOMALY" if normalized_score > threshold else "normal"


def inspection_rows(inspection: ImageInspection, threshold: float = 0.5) -> list[list[Any]]:
    """The results table at a normalised ``threshold``; relabelling never rescores."""
    return [
        [item.name, round(item.score, 5), round(item.normalized_score, 4), verdict(item.normalized_score, threshold)]
        for item in inspection.items
    ]


def inspection_gallery(inspection: ImageInspection, threshold: float = 0.5) -> list[tuple[str, str]]:
    """(overlay, caption) pairs, the verdict first so that it survives a short caption."""
    return [
        (str(item.overlay_path), f"{verdict(item.normalized_score, threshold)} {item.normalized_score:.2f} · {item.name}")
        for item in inspection.items
        if item.overlay_path is not None
    ]


def reconstruction_gallery(inspection: ImageInspection) -> list[tuple[str, str]]:
    """What the model rebuilt (autoencoder), empty for models without a reconstruction."""
    return [(str(item.reconstruction_path), item.name) for item in inspection.items if item.reconstruction_path is not None]


def inspection_summary(inspection: ImageInspection, threshold: float = 0.5) -> str:
    flagged = sum(item.normalized_score > threshold for item in inspection.items)
    raw = inspection.raw_threshold(threshold)
    raw_text = f" (raw score {raw:.4g})" if raw is not None else ""
    return (
        f"**{flagged} of {len(inspection.items)} images flagged** at threshold {threshold:.2f}{raw_text}. "
        f"{inspection.threshold_note}"
    )


def inspection_downloads(inspection: ImageInspection, threshold: float = 0.5) -> list[str]:
    """A CSV at the current threshold and a zip of the overlays (and reconstructions)."""
    csv_path = inspection.output_dir / "results.csv"
    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "score", "normalized_score", "threshold_normalized", "anomalous"])
            for item in inspection.items:
                writer.writerow([item.name, f"{item.score:.6g}", f"{item.normalized_score:.6f}", f"{threshold:.4f}", int(item.normalized_score > threshold)])
    zip_path = inspection.output_dir / "overlays.zip"
    if not zip_path.exists():
        with atomic_path(zip_path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
                for item in inspection.items:
                    for path in (item.overlay_path, item.reconstruction_path):
                        if path is not None and Path(path).is_file():
                            bundle.write(path, arcname=f"{Path(path).parent.name}/{Path(path).name}")
    return [str(csv_path), str(zip_path)]


# ---- 2. analyse video ----------------------------------------------------------------------------------
@dataclass
class VideoView:
    output_dir: Path
    video_path: Path
    timeline_path: Path
    event_rows: list[list[Any]]
    downloads: list[str]
    summary: str


EVENT_HEADERS = ["#", "start (s)", "end (s)", "start frame", "end frame", "duration (s)", "peak (normalised)", "peak frame",
                 "main cue"]


def _get(entry: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(entry, dict) and name in entry:
            return entry[name]
        if hasattr(entry, name):
            return getattr(entry, name)
    return default


def _num(value: Any, digits: int = 2) -> Any:
    return round(float(value), digits) if isinstance(value, (int, float, np.floating, np.integer)) else value


def analyze_video_file(
    settings: UISettings, run_dir: str | Path | None, video: str | Path | None, key: str, reporter: Reporter = SILENT
) -> VideoView:
    """Run a video model over one uploaded video; side-by-side, timeline, scores and events per tab."""
    from anomalens.workflows.video import analyze_video

    run = _run_dir(settings, run_dir)
    if not video:
        raise DataError("upload a video first (mp4, avi, mov or mkv) or click an example")
    video = check_upload_size(video, settings.max_upload_bytes)
    if video.suffix.lower() not in VIDEO_EXTENSIONS:
        raise DataError(f"not a video type this page takes ({', '.join(VIDEO_EXTENSIONS)})", video.name)
    detector = DETECTORS.get(run, settings.device, "video")
    output_dir = new_workspace(settings.sessions_dir, key, "video")
    analysis = analyze_video(detector, video, output_dir, device=settings.device, reporter=reporter)
    rows = []
    for index, event in enumerate(analysis.events or [], start=1):
        rows.append([
            index,
            _num(_get(event, "start_time", "start_seconds")),
            _num(_get(event, "end_time", "end_seconds")),
            _get(event, "start_frame"),
            _get(event, "end_frame"),
            _num(_get(event, "duration"), 2),
            _num(_get(event, "peak_normalized_score", "peak_score"), 3),
            _get(event, "peak_frame"),
            _get(event, "main_cue", default=""),  # appearance or motion, for models that add cues
        ])
    frames = len(analysis.scores)
    flagged = int(np.sum(analysis.anomalous)) if analysis.anomalous is not None else 0
    summary = (
        f"**{len(rows)} anomalous interval(s)**; {flagged} of {frames} frames above the threshold "
        f"({frames / analysis.fps:.1f} s at {analysis.fps:g} fps). {threshold_text(run)}"
    )
    downloads = [str(p) for p in (analysis.scores_csv, analysis.events_json, analysis.side_by_side_path) if p]
    return VideoView(output_dir, Path(analysis.side_by_side_path), Path(analysis.timeline_path), rows, downloads, summary)


# ---- 3. train ------------------------------------------------------------------------------------------
@dataclass
class DatasetChoice:
    data_dir: Path
    category: str
    kind: str  # "image" or "video"
    description: str


def _layout_kind(folder: Path) -> str | None:
    from anomalens.data.video_datasets import is_video_category

    if (folder / "train" / "good").is_dir():
        return "image"
    if is_video_category(folder.parent, folder.name):
        return "video"
    return None


def _find_category(root: Path) -> Path | None:
    """The category folder: ``root`` itself, or its only child with a known layout."""
    if _layout_kind(root):
        return root
    candidates = [child for child in sorted(root.iterdir()) if child.is_dir() and _layout_kind(child)]
    return candidates[0] if len(candidates) == 1 else None


LAYOUT_HELP = (
    "expected an image dataset <category>/train/good/*.png (MVTec AD layout) or a video dataset "
    "<category>/train/normal/*.mp4 or <category>/training/frames/<clip>/ (UCSD Ped2 layout)"
)


def choose_dataset(
    settings: UISettings, folder: str | None, upload: str | Path | None, key: str, expected_kind: str
) -> DatasetChoice:
    """A dataset folder under the allowed roots, or an uploaded zip unpacked safely; layout checked.

    A refused upload is deleted, with whatever was unpacked from it.
    """
    if upload:
        target = new_workspace(settings.sessions_dir, key, "upload")
        try:
            archive = check_upload_size(upload, settings.max_upload_bytes)
            root = safe_extract_zip(archive, target)
            return _dataset_in(root, Path(archive).name, expected_kind)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # the session's folder, if this was all it held
            Path(upload).unlink(missing_ok=True)
            raise
    if folder and folder.strip():
        root = confine_path(folder, settings.data_roots)
        shown = folder.strip()
        if not root.is_dir():
            raise DataError("no such folder", shown)
        return _dataset_in(root, shown, expected_kind)
    raise DataError("give a dataset folder or upload a zip")


def _dataset_in(root: Path, shown: str, expected_kind: str) -> DatasetChoice:
    category_dir = _find_category(root)
    if category_dir is None:
        raise DataError(LAYOUT_HELP, shown)
    kind = _layout_kind(category_dir)
    if kind != expected_kind:
        raise DataError(f"this is {'an image' if kind == 'image' else 'a video'} dataset: set the data type to {kind}", shown)
    if kind == "image":
        from anomalens.data.mvtec import discover_category

        found = discover_category(category_dir.parent, category_dir.name, require_test=False)
        description = f"{len(found.train_paths)} normal training images"
    else:
        from anomalens.data.video_datasets import discover_video_category

        clips = discover_video_category(category_dir.parent, category_dir.name)
        description = f"{len(clips.train)} normal training clips"
    return DatasetChoice(category_dir.parent, category_dir.name, kind, f"{category_dir.name}: {description}")


def model_types(kind: str) -> list[str]:
    """Registered model names of one kind, the default first."""
    from anomalens.models.base import DEFAULT_IMAGE_MODEL, DEFAULT_VIDEO_MODEL, MODEL_REGISTRY

    default = DEFAULT_IMAGE_MODEL if kind == "image" else DEFAULT_VIDEO_MODEL
    names = []
    for name, target in MODEL_REGISTRY.items():
        try:
            if importlib.util.find_spec(target.split(":")[0]) is None:
                continue  # registered but not shipped in this build
        except ModuleNotFoundError:
            continue
        if _model_kind(name) == kind:
            names.append(name)
    return sorted(names, key=lambda n: (n != default, n))


def _model_kind(name: str) -> str:
    from anomalens.models.base import detector_class

    return getattr(detector_class(name), "kind", "image")


def default_settings(model: str) -> dict[str, Any]:
    """A model's own settings and their defaults (from its config class), minus those with their own widget."""
    from anomalens.models.base import detector_class

    config = detector_class(model).config_class()
    return {k: v for k, v in config.to_dict().items() if k not in COMMON_SETTINGS}


def parse_advanced(text: str | None) -> dict[str, Any]:
    if not text or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"model settings are not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise DataError('model settings must be a JSON object such as {"epochs": 5}')
    return data


@dataclass
class TrainOutcome:
    run_dir: Path | None
    message: str
    interrupted: bool = False


def train_model(
    settings: UISettings,
    dataset: DatasetChoice,
    model: str,
    *,
    image_size: int = 256,
    validation_fraction: float = 0.1,
    seed: int = 0,
    advanced: dict[str, Any] | None = None,
    reporter: Reporter = SILENT,
) -> TrainOutcome:
    """Train one model on a checked dataset into a uniquely named run folder."""
    from anomalens.errors import Cancelled

    from anomalens.models.base import detector_class
    from anomalens.models.schema import check_settings

    advanced = dict(advanced or {})
    taken = sorted(set(advanced) & set(COMMON_SETTINGS))
    if taken:
        raise ConfigError(f"set {', '.join(taken)} with its own field above, not in the model settings JSON")
    check_settings(detector_class(model).config_class, advanced, model)  # unknown keys, types and ranges by name
    run_name = unique_run_name(dataset.category, dataset.kind)
    kwargs: dict[str, Any] = dict(
        results_dir=settings.results_dir, image_size=int(image_size), validation_fraction=float(validation_fraction),
        seed=int(seed), device=settings.device, reporter=reporter, run_name=run_name,
    )
    started = time.monotonic()
    try:
        if dataset.kind == "image":
            from anomalens.workflows.image import train_image_model

            result = train_image_model(dataset.data_dir, dataset.category, model=model, **kwargs, **(advanced or {}))
        else:
            from anomalens.workflows.video import train_video_model

            result = train_video_model(dataset.data_dir, dataset.category, model=model, **kwargs, **(advanced or {}))
    except Cancelled:
        return TrainOutcome(None, "Training cancelled before a model could be saved.", interrupted=True)
    minutes = (time.monotonic() - started) / 60
    if result.interrupted:
        return TrainOutcome(Path(result.run_dir), f"Training cancelled; the best model so far was saved as `{Path(result.run_dir).name}`.", True)
    return TrainOutcome(Path(result.run_dir), f"Trained `{Path(result.run_dir).name}` ({model} on {dataset.category}) in {minutes:.1f} min.")


# ---- 4. evaluate ---------------------------------------------------------------------------------------
@dataclass
class EvaluationView:
    metric_rows: list[list[Any]]
    type_rows: list[list[Any]]
    type_headers: list[str]
    figures: dict[str, str]
    report_path: str | None
    timelines: list[tuple[str, str]] = field(default_factory=list)  # (image, clip name), video models only


SKIPPED_METRICS = ("roc_curve", "per_defect_type", "per_type", "per_clip", "warnings", "config", "settings")


def _flatten_scalars(metrics: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    """Numbers (and one level of nested numbers, such as the confusion at the threshold) as metric rows."""
    rows: list[list[Any]] = []
    for name, value in metrics.items():
        label = f"{prefix}{name.replace('_', ' ')}"
        if name in SKIPPED_METRICS or isinstance(value, bool):
            continue
        if value is None and name in HEADLINE_METRICS:
            rows.append([label, "n/a"])
        elif isinstance(value, (int, float, np.floating, np.integer)):
            rows.append([label, _num(value, 4)])
        elif isinstance(value, dict) and not prefix:
            rows.extend(_flatten_scalars(value, prefix=f"{label} · "))
    return rows


def _type_table(metrics: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """Per defect (or anomaly) type: whatever the evaluation measured for each, as one table."""
    for key in ("per_type", "per_defect_type", "defect_types", "per_clip", "types"):
        table = metrics.get(key)
        if isinstance(table, dict) and table:
            entries = [(name, values) for name, values in table.items()]
        elif isinstance(table, list) and table and isinstance(table[0], dict):
            entries = [(entry.get("type", entry.get("name", str(i))), entry) for i, entry in enumerate(table)]
        else:
            continue
        columns: list[str] = []
        for _, values in entries:
            for column in values if isinstance(values, dict) else []:
                if column not in columns and column not in ("type", "name"):
                    columns.append(column)
        rows = [[name] + [_num(values.get(c), 4) if isinstance(values, dict) else values for c in columns] for name, values in entries]
        return ["type"] + [c.replace("_", " ") for c in columns], rows
    return ["type"], []


def evaluate_model(settings: UISettings, run_dir: str | Path | None, reporter: Reporter = SILENT,
                   key: str = "evaluate") -> EvaluationView:
    """Evaluate a model on the test split of the data it was trained on (read only here, never in training).

    The figures are copied into the session's own folder: the page never serves files from the run folder.
    """
    from anomalens.models.base import read_model_config

    run = _run_dir(settings, run_dir)
    kind = read_model_config(run).get("kind", "image")
    if kind == "video":
        from anomalens.workflows.video import evaluate_video_model as evaluate
    else:
        from anomalens.workflows.image import evaluate_image_model as evaluate
    result = evaluate(run, device=settings.device, reporter=reporter)
    # headline metrics first, then everything else in the evaluation's own order
    metrics = dict(result.metrics or {})
    metrics = {**{k: metrics[k] for k in HEADLINE_METRICS if k in metrics}, **metrics}
    headers, type_rows = _type_table(metrics)
    served = new_workspace(settings.sessions_dir, key, "evaluate")
    figures = {}
    for name, path in (result.figures or {}).items():
        if path and Path(path).is_file():
            figures[name] = str(shutil.copy2(path, served / f"{name}{Path(path).suffix}"))
    report = str(result.report_path) if getattr(result, "report_path", None) else None
    timelines = [(path, name.removeprefix("timeline_")) for name, path in sorted(figures.items()) if name.startswith("timeline")]
    return EvaluationView(_flatten_scalars(metrics), type_rows, headers, figures, report, timelines)


def read_report(view: EvaluationView) -> str:
    if view.report_path and Path(view.report_path).is_file():
        return Path(view.report_path).read_text(encoding="utf-8")
    return ""


__all__ = [
    "UISettings", "list_models", "model_choices", "model_rows", "threshold_text", "inspect_images", "inspection_rows",
    "inspection_gallery", "reconstruction_gallery", "inspection_summary", "inspection_downloads", "analyze_video_file", "choose_dataset",
    "model_types", "default_settings", "parse_advanced", "train_model", "evaluate_model", "read_report",
]
