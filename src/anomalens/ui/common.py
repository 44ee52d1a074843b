"""What every tab of the web UI shares: the server's settings, the model pickers, the detector cache, and the
small helpers that turn library errors and progress into Gradio's terms.

Pure functions (no Gradio at import); :class:`ModelLists` builds Gradio updates only when called from a page.

>>> settings = UISettings(results_dir="results", data_roots=["demo_data"])       # doctest: +SKIP
>>> model_choices(settings, "image")                                            # doctest: +SKIP
[('widget · patchcore · 2026-11-28 12:00 · image auroc 0.998', '/.../results/demo_image')]
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from anomalens.errors import AnomalensError, DataError
from anomalens.ui.jobs import session_key
from anomalens.ui.security import DEFAULT_MAX_UPLOAD_MB, confine_path, resolve_roots, user_message

log = logging.getLogger("anomalens.ui")

SESSIONS_FOLDER = "ui_sessions"
# Datasets unpacked from uploaded zips for training, under the results folder: the run records their folder and
# Evaluate reads it later, so they outlive the page's session (whose outputs go when it closes); the Train tab's
# prune_uploads removes one only once no run refers to it.
UPLOADS_FOLDER = "uploads"
# Heavy work shares two lanes for the whole server: training (one at a time) and analysis (two at a time).
TRAIN_LANE = ("train", 1)
ANALYSIS_LANE = ("analysis", 2)
HEADLINE_METRICS = ("image_auroc", "pixel_auroc", "aupro", "f1_max", "frame_auroc", "video_auroc")
MODEL_TABLE_HEADERS = ["run", "kind", "category", "model", "created", "test metrics"]
# a NaN score (a frame the model could not score; the sinks write it as JSON null) or an undefined metric, as the
# page shows it: Python's "nan" reads as a word, and a blank as something not loaded yet
NOT_SCORED = "—"
NOT_SCORED_NOTE = f"{NOT_SCORED} = not scored"  # in the label of every table that may show it


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


# ---- models on disk ---------------------------------------------------------------------------------------
def short_metrics(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "not evaluated"
    parts = []
    for name in HEADLINE_METRICS:
        value = metrics.get(name)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{name.replace('_', ' ')} {value:.3f}")
    return ", ".join(parts) or "not evaluated"


def created_text(created: datetime) -> str:
    return created.strftime("%Y-%m-%d %H:%M")


def list_models(settings: UISettings, kind: str | None = None) -> list[Any]:
    """Finished runs under the results folder, newest first (``RunInfo`` from :mod:`anomalens.workflows.runs`)."""
    from anomalens.workflows.runs import list_runs

    return list_runs(settings.results_dir, kind=kind)


def model_choices(settings: UISettings, kind: str) -> list[tuple[str, str]]:
    """(label, run folder) pairs for a dropdown: category · model · date · test metrics."""
    return [
        (f"{run.category} · {run.model} · {created_text(run.created)} · {short_metrics(run.metrics)}", str(run.run_dir))
        for run in list_models(settings, kind)
    ]


def model_rows(settings: UISettings) -> list[list[str]]:
    return [
        [Path(run.run_dir).name, run.kind, run.category, run.model, created_text(run.created), short_metrics(run.metrics)]
        for run in list_models(settings)
    ]


def chosen_run(settings: UISettings, run_dir: str | Path | None) -> Path:
    """A model chosen in the page must be a run under the results folder (the dropdown only offers those)."""
    if not run_dir:
        raise DataError("choose a model first (train one in the Train tab if the list is empty)")
    return confine_path(run_dir, [settings.results_dir])


EXAMPLES_PER_MODEL = 6


def examples_for_run(settings: UISettings, run_dir: str | Path | None, kind: str, limit: int = EXAMPLES_PER_MODEL) -> list[Path]:
    """Example inputs for the chosen model: test files of the data it was trained on (the first of each type,
    normal first, then the next ones), so that a click never scores widgets with a bottle model.

    None when the model's data lies outside the allowed data roots (the page never reaches beyond them) or
    its test files cannot be uploaded as files (a video dataset of frame folders).
    """
    from anomalens.data.preprocessing import IMAGE_EXTENSIONS
    from anomalens.data.video_io import VIDEO_EXTENSIONS
    from anomalens.workflows.runs import read_run_file

    if not run_dir:
        return []
    try:
        run = read_run_file(chosen_run(settings, run_dir))
    except AnomalensError:
        return []
    if not run.get("data_dir") or not run.get("category"):
        return []
    test = (Path(run["data_dir"]) / run["category"] / "test").resolve()
    if not test.is_dir() or not any(test.is_relative_to(root) for root in settings.data_roots):
        return []
    extensions = IMAGE_EXTENSIONS if kind == "image" else VIDEO_EXTENSIONS
    # no links below the test folder: a link to any file the server can read would be copied and served
    folders = sorted((d for d in test.iterdir() if _real_under(d, settings) and d.is_dir()),
                     key=lambda d: (d.name not in ("good", "normal"), d.name))
    files = [sorted(p for p in d.iterdir() if p.suffix.lower() in extensions and _real_under(p, settings) and p.is_file())
             for d in folders]
    picked: list[Path] = []
    for rank in range(max((len(f) for f in files), default=0)):  # round robin over the types
        picked += [f[rank] for f in files if rank < len(f)]
        if len(picked) >= limit:
            break
    return picked[:limit]


def _real_under(path: Path, settings: UISettings) -> bool:
    """``path`` is no symlink and lies (resolved) under an allowed data root."""
    if path.is_symlink():
        return False
    try:
        confine_path(path, settings.data_roots)
    except (AnomalensError, OSError):
        return False
    return True


def example_label(path: Path) -> str:
    """``<type>/<file>``: enough to tell MVTec's many 000.png apart."""
    return f"{path.parent.name}/{path.name}"


def example_samples(paths: list[Path]) -> list[list[str]]:
    """The rows of an examples list: one per file, and "all" when there are several."""
    return [[example_label(p)] for p in paths] + ([[f"all {len(paths)} examples"]] if len(paths) > 1 else [])


def stage_examples(settings: UISettings, run_dir: str | Path | None, kind: str, index: int, key: str) -> list[Path]:
    """Copy the clicked example (or all of them, the last row) into a fresh folder of this browser tab, which the
    page may serve; the data roots themselves are never served. Files are named ``<type>_<file>``: the browser
    upload keeps only file names, and MVTec's 000.png of every type must stay apart."""
    import shutil

    from anomalens.ui.jobs import new_workspace

    paths = examples_for_run(settings, run_dir, kind)
    if not paths or not 0 <= int(index) <= len(paths):
        raise DataError("this example is no longer available: choose the model again")
    chosen = paths if int(index) == len(paths) else [paths[int(index)]]
    folder = new_workspace(settings.sessions_dir, key, "examples")
    staged = []
    for path in chosen:
        target = folder / f"{path.parent.name}_{path.name}"
        # O_NOFOLLOW: a file replaced by a link since it was listed fails to open instead of being copied
        try:
            source = os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb")
        except OSError:
            raise DataError("this example is no longer available: choose the model again") from None
        with source, open(target, "wb") as sink:
            shutil.copyfileobj(source, sink)
        staged.append(target)
    return staged


def calibration_of(run_dir: str | Path) -> Any:
    """The saved :class:`~anomalens.metrics.threshold.Calibration` of a run, or None."""
    from anomalens.metrics.threshold import Calibration
    from anomalens.workflows.runs import read_model_config

    data = read_model_config(run_dir).get("calibration")
    return Calibration.from_dict(data) if data else None


def threshold_text(run_dir: str | Path) -> str:
    """How the model's threshold was chosen, in one sentence for the page."""
    calibration = calibration_of(run_dir)
    if calibration is None:
        return "This model has no calibrated threshold."
    return f"Threshold {calibration.threshold:.4g} (raw score) = normalised 0.5; {calibration.false_alarm_text()}."


def drift_note(drift: Any) -> str:
    """A bold warning line when what was scored looks unlike the training data as a whole, else nothing."""
    return f"**Warning, {drift.message}.**" if drift is not None and drift.drifted else ""


def rounded(value: Any, digits: int = 2) -> Any:
    """Numbers rounded for a table, NaN as :data:`NOT_SCORED`; anything else as it is."""
    if not isinstance(value, (int, float, np.floating, np.integer)):
        return value
    return NOT_SCORED if math.isnan(value) else round(float(value), digits)


def score_text(value: float, digits: int = 2) -> str:
    """A score in running text (a caption): ``0.73``, or :data:`NOT_SCORED` for NaN."""
    return NOT_SCORED if math.isnan(value) else f"{value:.{digits}f}"


class DetectorCache:
    """Keeps the last few loaded models so that repeated clicks do not reload weights."""

    def __init__(self, size: int = 3) -> None:
        self._items: OrderedDict[tuple[str, float, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, run_dir: Path, device: str, kind: str) -> Any:
        from anomalens.models.base import WEIGHTS_FILE
        from anomalens.workflows.runs import load_detector, resolve_model_dir

        model_dir = resolve_model_dir(run_dir)
        weights = model_dir / WEIGHTS_FILE
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


DETECTORS = DetectorCache()


# ---- Gradio glue ------------------------------------------------------------------------------------------
def ui_error(exc: BaseException) -> Exception:
    import gradio as gr

    return gr.Error(user_message(exc), print_exception=False)


def request_key(request: Any) -> str:
    return session_key(getattr(request, "session_hash", None))


def progress_sink(progress: Any) -> Callable[[float | None, str], None]:
    def sink(fraction: float | None, text: str) -> None:
        progress(fraction if fraction is not None else 0.0, desc=text)

    return sink


class ModelLists:
    """The model pickers of every tab and the models table, refreshed together (after training, say).

    Tabs register their pickers while they are built and queue the wiring that needs other tabs' components
    with :meth:`wire_later`; :meth:`wire` runs it once every tab exists.
    """

    def __init__(self, settings: UISettings) -> None:
        self.settings = settings
        self.pickers: dict[str, Any] = {}  # "image", "video" or "any" -> dropdown
        self.table: Any = None
        self._wiring: list[Callable[[], None]] = []

    @property
    def outputs(self) -> list[Any]:
        return [self.pickers["image"], self.pickers["video"], self.pickers["any"], self.table]

    def refresh(self, image: str | None = None, video: str | None = None, any_kind: str | None = None) -> tuple:
        """Updates for :attr:`outputs`, keeping each picker's value if it still exists."""
        import gradio as gr

        def update(kind: str | None, keep: str | None) -> Any:
            if kind is None:
                options = model_choices(self.settings, "image") + model_choices(self.settings, "video")
            else:
                options = model_choices(self.settings, kind)
            values = [value for _, value in options]
            return gr.update(choices=options, value=keep if keep in values else (values[0] if values else None))

        try:
            return update("image", image), update("video", video), update(None, any_kind), model_rows(self.settings)
        except Exception as exc:  # an unreadable run must not break the page
            log.warning("could not list models: %s", exc)
            return gr.update(), gr.update(), gr.update(), gr.update()

    def wire_later(self, wiring: Callable[[], None]) -> None:
        self._wiring.append(wiring)

    def wire(self) -> None:
        for wiring in self._wiring:
            wiring()


def regions_text(regions: Sequence[Any]) -> str:
    """``none``, or how many and where the largest lies: ``2; largest 80x71 px at x 173, y 11``. ``regions``: an
    image's :class:`~anomalens.metrics.regions.Region` objects or an event's ``peak_regions`` dicts, largest first
    (as ``find_regions`` sorts them)."""
    if not regions:
        return "none"
    largest = regions[0]
    box = largest if isinstance(largest, dict) else vars(largest)
    return f"{len(regions)}; largest {box['width']}x{box['height']} px at x {box['x']}, y {box['y']}"


def event_where_text(event: dict[str, Any]) -> str:
    """A video event's regions in the frame's pixels, worded as :func:`regions_text` (the Analyse video and Live
    tabs); empty for an event of a model whose map cannot place events (no ``image_width``)."""
    if event.get("image_width") is None:
        return ""
    return regions_text(event.get("peak_regions") or [])

