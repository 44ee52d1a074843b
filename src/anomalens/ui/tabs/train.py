"""The "Train" tab: check a dataset (a folder under the allowed roots or an uploaded zip), then train a model.

The page passes only what the user set: an empty image size or an untouched model setting means the model's
own default (a video model's frame size, for instance), exactly as on the command line.

>>> dataset = choose_dataset(settings, "bottle", None, key="tab1", expected_kind="image")   # doctest: +SKIP
>>> train_model(settings, dataset, "patchcore").run_dir                                    # doctest: +SKIP
"""

# No `from __future__ import annotations`: Gradio reads the `gr.Request` annotation of handlers at run time.

import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalens.errors import ConfigError, DataError
from anomalens.progress import SILENT, Reporter
from anomalens.ui.common import MODEL_TABLE_HEADERS, TRAIN_LANE, ModelLists, UISettings, progress_sink, request_key
from anomalens.ui.jobs import JobBoard, new_workspace, unique_run_name
from anomalens.ui.security import check_upload_size, confine_path, safe_extract_zip, user_message

# Settings that have their own widget in the tab; every other config field is "advanced".
COMMON_SETTINGS = ("image_size", "seed")


@dataclass
class DatasetChoice:
    data_dir: Path
    category: str
    kind: str  # "image" or "video"
    description: str


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


def changed_settings(model: str, advanced: dict[str, Any]) -> dict[str, Any]:
    """The entries of the settings box the user changed (the box starts out showing the model's defaults)."""
    defaults = default_settings(model)
    return {name: value for name, value in advanced.items() if name not in defaults or defaults[name] != value}


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
    image_size: int | None = None,
    validation_fraction: float | None = None,
    seed: int | None = None,
    advanced: dict[str, Any] | None = None,
    reporter: Reporter = SILENT,
) -> TrainOutcome:
    """Train one model on a checked dataset into a uniquely named run folder; None = the model's default."""
    from anomalens.errors import Cancelled
    from anomalens.models.base import detector_class
    from anomalens.models.schema import check_settings
    from anomalens.workflows.kinds import data_kind

    advanced = dict(advanced or {})
    taken = sorted(set(advanced) & set(COMMON_SETTINGS))
    if taken:
        raise ConfigError(f"set {', '.join(taken)} with its own field above, not in the model settings JSON")
    check_settings(detector_class(model).config_class, advanced, model)  # unknown keys, types and ranges by name
    started = time.monotonic()
    try:
        result = data_kind(dataset.kind).train(
            dataset.data_dir, dataset.category, model=model, results_dir=settings.results_dir,
            image_size=None if image_size is None else int(image_size),
            validation_fraction=None if validation_fraction is None else float(validation_fraction),
            seed=None if seed is None else int(seed), device=settings.device, reporter=reporter,
            run_name=unique_run_name(dataset.category, dataset.kind), **changed_settings(model, advanced or {}),
        )
    except Cancelled:
        return TrainOutcome(None, "Training cancelled before a model could be saved.", interrupted=True)
    minutes = (time.monotonic() - started) / 60
    name = Path(result.run_dir).name
    if result.interrupted:
        return TrainOutcome(Path(result.run_dir), f"Training cancelled; the best model so far was saved as `{name}`.", True)
    return TrainOutcome(Path(result.run_dir), f"Trained `{name}` ({model} on {dataset.category}) in {minutes:.1f} min.")


def _defaults_json(model: str | None) -> str:
    if not model:
        return "{}"
    try:
        return json.dumps(default_settings(model), indent=1)
    except Exception as exc:
        return f"// {user_message(exc)}"


def _given(value: Any) -> Any:
    """A number field left empty is None (the library's default)."""
    return None if value is None or value == "" else value


def build(settings: UISettings, board: JobBoard, lists: ModelLists) -> None:
    """The tab's layout and wiring (inside a ``gr.Blocks``)."""
    import gradio as gr

    from anomalens.workflows.train import TrainOptions

    first_model = (model_types("image") or [None])[0]
    with gr.Tab("Train", id="train"):
        roots = ", ".join(f"`{r}`" for r in settings.data_roots) or "none (start the server with --data-root DIR)"
        gr.Markdown(f"Train on **normal examples only**. Allowed data folders: {roots}. Or upload a zip with the same layout.")
        with gr.Row():
            with gr.Column(scale=3):
                kind = gr.Radio(["image", "video"], value="image", label="Data type", elem_id="train-kind")
                folder = gr.Textbox(label="Dataset folder (the category folder, e.g. …/bottle)", placeholder=str(settings.data_roots[0]) if settings.data_roots else "", elem_id="train-folder")
                upload = gr.File(label="…or upload a zip", file_types=[".zip"], elem_id="train-zip")
                check_button = gr.Button("Check dataset", size="sm", elem_id="check-button")
            with gr.Column(scale=3):
                model = gr.Dropdown(label="Model type", choices=model_types("image"), value=first_model, elem_id="train-model-type")
                with gr.Row():
                    size = gr.Number(value=None, label="Image size (px, square; empty = the model's default)", precision=0, minimum=32, maximum=1024, elem_id="train-size")
                    validation = gr.Slider(0.05, 0.5, value=TrainOptions.validation_fraction, step=0.05, label="Held-out normal share (threshold)")
                    seed = gr.Number(value=None, label="Seed (empty = the model's default)", precision=0)
                advanced = gr.Code(value=_defaults_json(first_model), language="json", label="Model settings (defaults of this model type; edit to change)", lines=6, elem_id="train-advanced")
        with gr.Row():
            train_button = gr.Button("Train", variant="primary", elem_id="train-button")
            cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
        status = gr.Markdown("Pick a dataset, check it, then press **Train**. Progress shows here.", elem_classes="al-summary", elem_id="train-status")
        lists.table = gr.Dataframe(headers=MODEL_TABLE_HEADERS, label="Trained models", interactive=False, elem_id="models-table")

    def on_kind(kind_value):
        names = model_types(kind_value)
        first = names[0] if names else None
        return gr.update(choices=names, value=first), _defaults_json(first)

    kind.change(on_kind, [kind], [model, advanced])
    model.input(_defaults_json, [model], [advanced])

    def check_dataset(kind_value, folder_value, upload_value, request: gr.Request):
        try:
            choice = choose_dataset(settings, folder_value, upload_value, request_key(request), kind_value)
            return f"**Dataset OK:** {choice.description} (`{choice.data_dir / choice.category}`)"
        except Exception as exc:
            return f"**Error:** {user_message(exc)}"

    check_button.click(check_dataset, [kind, folder, upload], [status])

    def run(kind_value, folder_value, upload_value, model_value, size_value, validation_value, seed_value, advanced_value,
            request: gr.Request, progress=gr.Progress()):
        key = request_key(request)
        run_dir = None
        try:
            with board.job(f"{key}:train") as job:
                progress(0.0, desc="checking the dataset")
                dataset = choose_dataset(settings, folder_value, upload_value, key, kind_value)
                outcome = train_model(
                    settings, dataset, model_value, image_size=_given(size_value), validation_fraction=validation_value,
                    seed=_given(seed_value), advanced=parse_advanced(advanced_value), reporter=job.reporter(progress_sink(progress)),
                )
            message = ("**Stopped.** " if outcome.interrupted else "**Done.** ") + outcome.message
            run_dir = str(outcome.run_dir) if outcome.run_dir else None
        except Exception as exc:
            message = f"**Error:** {user_message(exc)}"
        return (message,) + lists.refresh(run_dir if kind_value == "image" else None,
                                          run_dir if kind_value == "video" else None, run_dir)

    def cancel(request: gr.Request):
        if board.cancel(f"{request_key(request)}:train"):
            return "**Stopping** at the next step…"
        return "No training is running in this tab."

    cancel_button.click(cancel, None, [status], concurrency_limit=None, show_progress="hidden")
    lists.wire_later(lambda: train_button.click(
        run, [kind, folder, upload, model, size, validation, seed, advanced], [status] + lists.outputs,
        concurrency_id=TRAIN_LANE[0], concurrency_limit=TRAIN_LANE[1], show_progress_on=[status]))
