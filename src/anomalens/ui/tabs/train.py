"""The "Train" tab: check a dataset (a folder under the allowed roots or an uploaded zip), then train a model.

The page passes only what the user set: an empty image size or an untouched model setting means the model's
own default (a video model's frame size, for instance), exactly as on the command line.

>>> dataset = choose_dataset(settings, "bottle", None, key="tab1", expected_kind="image")   # doctest: +SKIP
>>> train_model(settings, dataset, "patchcore").run_dir                                    # doctest: +SKIP
"""

# No `from __future__ import annotations`: Gradio reads the `gr.Request` annotation of handlers at run time.

import contextlib
import functools
import json
import math
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalens.errors import AnomalensError, ConfigError, DataError
from anomalens.progress import SILENT, Reporter
from anomalens.ui.common import (MODEL_TABLE_HEADERS, TRAIN_LANE, UPLOADS_FOLDER, ModelLists, UISettings, log,
                                 progress_sink, request_key)
from anomalens.ui.jobs import (JobBoard, NotStarted, hold_workspace, is_held, new_workspace, not_started_text,
                                unique_run_name, wire_run)
from anomalens.ui.security import check_upload_size, confine_path, safe_extract_zip, user_message

# Settings that have their own widget in the tab; every other config field is "advanced".
COMMON_SETTINGS = ("image_size", "seed", "score_region")
# An uploaded dataset no run refers to is removed once it is this old: younger, it may be one that a training (of
# another server on the same results folder) is still learning from, whose run.json is not written yet.
UPLOAD_MIN_AGE_DAYS = 7.0


@dataclass
class DatasetChoice:
    data_dir: Path
    category: str
    kind: str  # "image" or "video"
    description: str
    unpacked: Path | None = None  # the folder an uploaded zip was unpacked into, if any


def _layout_kind(folder: Path) -> str | None:
    from anomalens.workflows.kinds import detect_kind

    kind = detect_kind(folder.parent, folder.name)
    return kind.name if kind else None


def _find_category(root: Path) -> Path | None:
    """The category folder: ``root`` itself, or its only child with a known layout."""
    if _layout_kind(root):
        return root
    candidates = [child for child in sorted(root.iterdir()) if child.is_dir() and _layout_kind(child)]
    return candidates[0] if len(candidates) == 1 else None


def choose_dataset(
    settings: UISettings, folder: str | None, upload: str | Path | None, key: str, expected_kind: str,
    keep: bool = False,
) -> DatasetChoice:
    """A dataset folder under the allowed roots, or an uploaded zip unpacked safely; layout checked.

    ``keep``: the upload is for a training, whose model will need it again (Evaluate): it is unpacked into a
    folder of its own under ``<results>/uploads/`` that outlives the session; a check alone unpacks into the
    session's outputs. What was unpacked from a refused upload is removed; the upload itself only when the zip is
    refused as such (over the size limit, unsafe, unreadable): one refused for its contents (another data type, an
    unknown layout) stays, so that the page can check it again once the user followed the message.
    """
    if upload:
        try:  # before any folder is made: a file gone, or one over the limit (never accepted: it goes)
            archive = check_upload_size(upload, settings.max_upload_bytes)
        except DataError:
            Path(upload).unlink(missing_ok=True)
            raise
        if keep:
            target = settings.results_dir / UPLOADS_FOLDER / unique_run_name(Path(upload).stem, expected_kind)
            target.mkdir(parents=True, exist_ok=False)
        else:
            target = new_workspace(settings.sessions_dir, key, "upload")
        try:
            try:
                root = safe_extract_zip(archive, target)
            except DataError:  # no retry makes this zip acceptable: it goes with its unpacked part
                Path(upload).unlink(missing_ok=True)
                raise
            choice = _dataset_in(root, Path(archive).name, expected_kind)
            choice.unpacked = target
            return choice
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # the session's folder, if this was all it held
            raise
    if folder and folder.strip():
        root = confine_path(folder, settings.data_roots)
        shown = folder.strip()
        if not root.is_dir():
            raise DataError("no such folder", shown)
        return _dataset_in(root, shown, expected_kind)
    raise DataError("give a dataset folder or upload a zip")


def prune_uploads(results_dir: str | Path, min_age_days: float = UPLOAD_MIN_AGE_DAYS) -> int:
    """Remove the datasets unpacked from uploaded zips (``<results>/uploads/<name>/``) that no run refers to any
    more (its run folders were deleted) and that are older than ``min_age_days``; returns how many went.

    Kept: every upload a run's ``run.json`` names as its data (Evaluate reads it again), also in the hidden folders
    of unfinished runs, which the next training recovers; one a training of this server holds now
    (:func:`~anomalens.ui.jobs.hold_workspace`); a young one; and all of them when a ``run.json`` cannot be read
    (which upload it names is then unknown).
    """
    from anomalens.workflows.runs import read_run_file

    results_dir = Path(results_dir)
    uploads = results_dir / UPLOADS_FOLDER
    if not uploads.is_dir() or uploads.is_symlink():
        return 0
    used: list[Path] = []
    for folder in results_dir.iterdir():  # linked run folders too (list_runs shows them): reading deletes nothing
        if not folder.is_dir() or folder == uploads:
            continue
        try:
            record = read_run_file(folder)
        except (AnomalensError, OSError):
            return 0
        if record.get("data_dir"):  # the category's folder: a zip without a top folder is the category itself
            used.append((Path(record["data_dir"]) / str(record.get("category") or "")).resolve())
    cutoff = time.time() - min_age_days * 86400
    removed = 0
    for upload in uploads.iterdir():
        if not upload.is_dir() or upload.is_symlink():
            continue
        real = upload.resolve()
        if any(path == real or path.is_relative_to(real) for path in used) or is_held(upload):
            continue
        if upload.stat().st_mtime >= cutoff:
            continue
        shutil.rmtree(upload, ignore_errors=True)
        removed += 1
    return removed


def _dataset_in(root: Path, shown: str, expected_kind: str) -> DatasetChoice:
    from anomalens.workflows.kinds import layout_help

    category_dir = _find_category(root)
    if category_dir is None:
        raise DataError(layout_help(), shown)
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
    from anomalens.workflows.kinds import model_names

    return model_names(kind)


def default_settings(model: str) -> dict[str, Any]:
    """A model's own settings and their defaults (from its config class), minus those with their own widget.

    Fractions such as 2/3 are shown to 4 significant digits; :func:`changed_settings` reads them back as unchanged.
    """
    from anomalens.models.base import detector_class

    config = detector_class(model).config_class()
    return {k: (float(f"{v:.4g}") if isinstance(v, float) else v)
            for k, v in config.to_dict().items() if k not in COMMON_SETTINGS}


# Gradio calls handlers from several worker threads, and CPython 3.11's ast.parse (under inspect.getsource) can fail
# with "AST constructor recursion depth mismatch" when two threads parse at once: the help is built under a lock,
# once per model.
_HELP_LOCK = threading.Lock()


def settings_help(model: str | None) -> str:
    """What each setting of ``model`` means, from the comments beside its config fields (the one place they are
    written), as a short Markdown list under the settings box."""
    if not model:
        return ""
    with _HELP_LOCK:
        return _settings_help(model)


@functools.lru_cache(maxsize=None)
def _settings_help(model: str) -> str:
    import inspect
    import re

    from anomalens.models.base import DetectorConfig, detector_class

    notes: dict[str, str] = {}
    for cls in reversed(detector_class(model).config_class.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, DetectorConfig)):
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        for name, note in re.findall(r"^\s+(\w+): [^=\n]+=[^#\n]+#\s*(.+)$", source, flags=re.M):
            notes[name] = note.strip()  # a comment beside the field
        for name, note in re.findall(r"``(\w+)``: ([^.]+(?:\.[^\s`][^.]*)*)\.", cls.__doc__ or ""):
            notes.setdefault(name, " ".join(note.split()))  # or a line of the class docstring
    shown = [f"`{name}`: {notes[name]}" for name in default_settings(model) if name in notes]
    return "Settings: " + "; ".join(shown) + "." if shown else ""


def image_size_hint(model: str | None) -> str:
    """The placeholder of the image-size field: what an empty field trains at. An image model takes the training
    images' aspect at the library's pixel budget (:func:`~anomalens.data.preprocessing.default_input_size`, chosen
    when training starts, so the hint names the budget, not a size); a video model its config's frame size, e.g.
    ``240 360`` for stfeatures."""
    from anomalens.data.preprocessing import DEFAULT_PIXEL_BUDGET
    from anomalens.models.base import detector_class

    if not model:
        return ""
    detector = detector_class(model)
    if detector.kind == "image":
        side = math.isqrt(DEFAULT_PIXEL_BUDGET)
        return f"auto: the training images' aspect at about {side}x{side}"
    height, width = detector.config_class().image_size
    return f"{height} {width}"


def parse_size_field(text: Any) -> tuple[int, int] | None:
    """The image-size field: empty = the model's default; ``256`` = square; ``240 360`` or ``240x360`` = H W."""
    from anomalens.data.preprocessing import parse_image_size

    if text is None or not str(text).strip():
        return None
    parts = str(text).lower().replace("x", " ").replace("×", " ").replace(",", " ").split()
    try:
        return parse_image_size([int(p) for p in parts])
    except ValueError:
        raise DataError(f"image size {text!r}: give one number (square) or two (height width), e.g. 240 360") from None


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


def changed_settings(model: str, advanced: dict[str, Any]) -> dict[str, Any]:
    """The entries of the settings box the user changed (the box starts out showing the model's defaults)."""
    defaults = default_settings(model)
    return {name: value for name, value in advanced.items() if name not in defaults or not _same(defaults[name], value)}


def _same(default: Any, value: Any) -> bool:
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return math.isclose(default, value, rel_tol=1e-3)
    return default == value


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
    image_size: int | tuple[int, int] | None = None,
    validation_fraction: float | None = None,
    seed: int | None = None,
    advanced: dict[str, Any] | None = None,
    score_region: str | None = None,
    reporter: Reporter = SILENT,
) -> TrainOutcome:
    """Train one model on a checked dataset into a uniquely named run folder; None = the model's default.
    ``score_region`` only reaches models that have the setting (PatchCore, PaDiM: :func:`score_regions`)."""
    from anomalens.errors import Cancelled
    from anomalens.progress import format_duration
    from anomalens.models.base import detector_class
    from anomalens.models.schema import check_settings
    from anomalens.workflows.kinds import data_kind

    advanced = dict(advanced or {})
    taken = sorted(set(advanced) & set(COMMON_SETTINGS))
    if taken:
        raise ConfigError(f"set {', '.join(taken)} with its own field above, not in the model settings JSON")
    check_settings(detector_class(model).config_class, advanced, model)  # unknown keys, types and ranges by name
    if score_region is not None and score_regions(model):
        check_settings(detector_class(model).config_class, {"score_region": score_region}, model)
        advanced["score_region"] = score_region
    started = time.monotonic()
    try:
        result = data_kind(dataset.kind).train(
            dataset.data_dir, dataset.category, model=model, results_dir=settings.results_dir,
            image_size=None if image_size is None else (int(image_size) if isinstance(image_size, int) else tuple(image_size)),
            validation_fraction=None if validation_fraction is None else float(validation_fraction),
            seed=None if seed is None else int(seed), device=settings.device, reporter=reporter,
            run_name=unique_run_name(dataset.category, dataset.kind), **changed_settings(model, advanced),
        )
    except Cancelled:
        took = format_duration(time.monotonic() - started)
        return TrainOutcome(None, f"Training cancelled after {took}. Nothing was saved: {model} builds its model in one "
                                  "pass at the end (memories, threshold), so there is no earlier model to keep; "
                                  "models trained in epochs (autoencoder, convlstm) keep their best epoch.", interrupted=True)
    took = format_duration(time.monotonic() - started)
    name = Path(result.run_dir).name
    summary = _threshold_summary(result.detector)
    if result.interrupted:
        return TrainOutcome(Path(result.run_dir), f"Training cancelled after {took}; the best model so far was saved as "
                                                  f"`{name}`. {summary}", True)
    return TrainOutcome(Path(result.run_dir), f"Trained `{name}` ({model} on {dataset.category}) in {took}. {summary}")


def _threshold_summary(detector: Any) -> str:
    """One sentence on the threshold just chosen: the calibration's own false-alarm text, which carries the
    rate measured on validation and the warning when the validation set was too small to measure it."""
    cal = detector.calibration_
    if cal is None:
        return ""
    return f"Threshold {cal.threshold:.4g} (raw score); {cal.false_alarm_text().rstrip('.')}."


def score_regions(model: str | None) -> tuple[str, ...]:
    """The choices of ``model``'s ``score_region`` (where the image score is taken), or () when it has none."""
    from dataclasses import fields

    from anomalens.models.base import detector_class

    if not model or "score_region" not in {f.name for f in fields(detector_class(model).config_class)}:
        return ()
    from anomalens.models.image.feature_detector import SCORE_REGIONS

    return SCORE_REGIONS


def _score_region_state(model: str | None) -> dict[str, Any]:
    """The score-region radio for ``model``: its choices and the config's default, hidden where it has none."""
    from anomalens.models.base import detector_class

    choices = score_regions(model)
    if not choices:
        return {"visible": False, "choices": [], "value": None}
    return {"visible": True, "choices": list(choices), "value": detector_class(model).config_class().score_region}


def _defaults_json(model: str | None) -> str:
    if not model:
        return "{}"
    try:
        return json.dumps(default_settings(model), indent=1)
    except Exception as exc:
        return f"// {user_message(exc)}"


def _folder_example(settings: UISettings) -> str:
    """The folder field's placeholder: a category folder under the first data root (what the field wants)."""
    if not settings.data_roots:
        return "…/mvtec_ad/bottle"
    root = settings.data_roots[0]
    try:
        for candidate in sorted(root.rglob("train"))[:50]:
            if candidate.is_dir():
                return str(candidate.parent)
    except OSError:
        pass
    return str(root / "<category>")


def _given(value: Any) -> Any:
    """A number field left empty is None (the library's default)."""
    return None if value is None or value == "" else value


def build(settings: UISettings, board: JobBoard, lists: ModelLists) -> None:
    """The tab's layout and wiring (inside a ``gr.Blocks``)."""
    import gradio as gr

    from anomalens.ui.tabs.controls import enqueue_for, wire_cancel_button

    from anomalens.workflows.train import TrainOptions

    first_model = (model_types("image") or [None])[0]
    with gr.Tab("Train", id="train"):
        roots = ", ".join(f"`{r}`" for r in settings.data_roots) or "none (start the server with --data-root DIR)"
        gr.Markdown(f"Train on **normal examples only**. Allowed data folders: {roots}. Or upload a zip with the same layout.")
        # first, so that the live progress and the result are seen without scrolling
        status = gr.Markdown("Pick a dataset, check it, then press **Train**. Progress shows here.", elem_classes="al-summary", elem_id="train-status")
        with gr.Row():
            with gr.Column(scale=3):
                kind = gr.Radio(["image", "video"], value="image", label="Data type", elem_id="train-kind")
                folder = gr.Textbox(label="Dataset folder (the category folder, e.g. …/bottle)",
                                    placeholder=_folder_example(settings), elem_id="train-folder")
                upload = gr.File(label="…or upload a zip", file_types=[".zip"], elem_id="train-zip")
                check_button = gr.Button("Check dataset", size="sm", elem_id="check-button")
            with gr.Column(scale=3):
                model = gr.Dropdown(label="Model type", choices=model_types("image"), value=first_model, elem_id="train-model-type")
                with gr.Row():
                    size = gr.Textbox(value="", label="Image size in px: H W (empty = the default shown)",
                                      placeholder=image_size_hint(first_model), elem_id="train-size")
                    validation = gr.Slider(0.05, 0.5, value=TrainOptions.validation_fraction, step=0.05, label="Held-out normal share (threshold)")
                    seed = gr.Number(value=None, label="Seed (empty = the model's default)", precision=0)
                region = gr.Radio(label="Image score taken on", **_score_region_state(first_model),
                                  info="auto: chosen at training (the part when the background gives the highest "
                                       "normal scores); image: the whole map; part: the part and a small margin",
                                  elem_id="train-score-region")
                advanced = gr.Code(value=_defaults_json(first_model), language="json", label="Model settings (defaults of this model type; edit to change)", lines=6, elem_id="train-advanced")
                with gr.Accordion("What these settings mean", open=False):
                    explained = gr.Markdown(settings_help(first_model), elem_id="train-settings-help")
        with gr.Row():
            train_button = gr.Button("Train", variant="primary", elem_id="train-button")
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
            ticket = gr.Number(visible=False, precision=0)  # of the run pressed last (JobBoard.enqueue)
        lists.table = gr.Dataframe(headers=MODEL_TABLE_HEADERS, label="Trained models", interactive=False, wrap=True, elem_id="models-table")

    def on_model(model_value):
        return (_defaults_json(model_value), settings_help(model_value), gr.update(placeholder=image_size_hint(model_value)),
                gr.update(**_score_region_state(model_value)))

    def on_kind(kind_value):
        names = model_types(kind_value)
        first = names[0] if names else None
        return (gr.update(choices=names, value=first),) + on_model(first)

    kind.change(on_kind, [kind], [model, advanced, explained, size, region])
    model.input(on_model, [model], [advanced, explained, size, region])

    def check_dataset(kind_value, folder_value, upload_value, request: gr.Request):
        try:
            choice = choose_dataset(settings, folder_value, upload_value, request_key(request), kind_value)
            return f"**Dataset OK:** {choice.description} (`{choice.data_dir / choice.category}`)"
        except Exception as exc:
            return f"**Error:** {user_message(exc)}"

    check_button.click(check_dataset, [kind, folder, upload], [status])

    def run(kind_value, folder_value, upload_value, model_value, size_value, validation_value, seed_value, region_value,
            advanced_value, image_choice, video_choice, ticket_value, request: gr.Request, progress=gr.Progress()):
        key = request_key(request)
        run_dir, dataset = None, None
        try:
            # the model outlives the page: closing it does not cancel the training (Cancel does)
            with board.job(f"{key}:train", outlives_page=True, ticket=ticket_value) as job:
                progress(0.0, desc="checking the dataset")
                dataset = choose_dataset(settings, folder_value, upload_value, key, kind_value, keep=True)
                if dataset.unpacked is not None:  # prune_uploads passes it by while the model learns from it
                    hold_workspace(dataset.unpacked)
                    job.folders.append(dataset.unpacked)
                outcome = train_model(
                    settings, dataset, model_value, image_size=parse_size_field(size_value), validation_fraction=validation_value,
                    seed=_given(seed_value), advanced=parse_advanced(advanced_value),
                    score_region=region_value if score_regions(model_value) else None,
                    reporter=job.reporter(progress_sink(progress)),
                )
            message = ("**Stopped.** " if outcome.interrupted else "**Done.** ") + outcome.message
            run_dir = str(outcome.run_dir) if outcome.run_dir else None
        except NotStarted as exc:
            if exc.repeat:  # a second press of Train: the page stays as the training before it left it
                return (gr.update(),) * (1 + len(lists.outputs))
            message = not_started_text(exc, "Training")
        except Exception as exc:
            message = f"**Error:** {user_message(exc)}"
        if dataset is not None and dataset.unpacked is not None and not run_dir:
            shutil.rmtree(dataset.unpacked, ignore_errors=True)  # an upload no saved model uses
        try:
            prune_uploads(settings.results_dir)  # those of models deleted since
        except OSError as exc:
            log.warning("could not prune the uploaded datasets: %s", exc)
        if run_dir:
            message += (" It is listed in the Inspect and Video tabs (the models chosen there stay selected) and "
                        "is chosen in the Evaluate tab: evaluate it before you rely on it.")
        # the Inspect and Video tabs keep their choice: a new, not yet evaluated model is never swapped in silently
        return (message,) + lists.refresh(image_choice, video_choice, run_dir)

    wire_cancel_button(cancel_button, board, "train", "training", status)
    lists.wire_later(lambda: wire_run(
        train_button, enqueue_for(board, "train"), ticket, run,
        [kind, folder, upload, model, size, validation, seed, region, advanced, lists.pickers["image"], lists.pickers["video"]],
        [status] + lists.outputs,
        concurrency_id=TRAIN_LANE[0], concurrency_limit=TRAIN_LANE[1], show_progress_on=[status]))
