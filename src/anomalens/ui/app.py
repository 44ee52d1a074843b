"""The Gradio page: layout and wiring only. Every button calls a function of :mod:`anomalens.ui.handlers`.

>>> app = build_app(UISettings(results_dir="results", data_roots=["demo_data"]))   # doctest: +SKIP
>>> launch(app, settings, host="127.0.0.1", port=7860)                             # doctest: +SKIP
"""


import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

from anomalens.ui import handlers as h
from anomalens.ui.jobs import JobBoard, prune_workspaces, session_key
from anomalens.ui.security import user_message

log = logging.getLogger("anomalens.ui")

# Heavy work shares two lanes for the whole server: training (one at a time) and analysis (two at a time).
TRAIN_LANE = ("train", 1)
ANALYSIS_LANE = ("analysis", 2)

HELP_MARKDOWN = """
### How anomalens decides
- **Training data defines normal.** A model learns only from images (or videos) of good parts. Anything that
  looks different from them is flagged, whether it is a defect or just something the training set never showed
  (new lighting, another product variant). Train on strictly defect-free examples that cover the normal variation.
- **The score** says how unlike the training data an image is (the strongest region of its anomaly map, so a small
  defect is not averaged away). Raw scores are on each model's own scale.
- **The threshold** is chosen when training ends, on normal images held out from training, so that about the target
  share of normal parts (1% by default) would be flagged. Test images never influence it.
- **Normalised score**: the raw score mapped to 0..1 with **0.5 exactly at the threshold**. Above 0.5 = ANOMALY.
  Heatmaps use the same scale for every image, so a normal part stays cold.
- **The threshold slider** in *Inspect images* relabels the results at once (no rescoring): move it up for fewer
  false alarms, down to miss fewer defects. The CSV you download uses the threshold set at that moment.
- **Video**: every frame gets a score; runs of frames above the threshold become the intervals in the table.

### Dataset layouts
- Images (MVTec AD): `<category>/train/good/*.png`, `test/good/*`, `test/<defect_type>/*`,
  optional `ground_truth/<defect_type>/<name>_mask.png`.
- Video: `<category>/train/normal/*.mp4`, `test/normal/*`, `test/<anomaly_type>/*`, or frame folders
  `<category>/training/frames/<clip>/` and `testing/frames/<clip>/` (UCSD Ped2).
- For *Train*, give a folder under the server's allowed data folders, or upload a zip with the same layout.
"""

CSS = """
.gradio-container {max-width: 1480px !important}
#al-header h1 {margin-bottom: 0}
#al-header p {margin-top: 2px; opacity: .75}
.al-summary {font-size: 1.05em}
#train-status {min-height: 96px}
"""


def _ui_error(exc: BaseException) -> Exception:
    import gradio as gr

    return gr.Error(user_message(exc), print_exception=False)


def _key(request: Any) -> str:
    return session_key(getattr(request, "session_hash", None))


def _sink(progress: Any) -> Callable[[float | None, str], None]:
    def sink(fraction: float | None, text: str) -> None:
        progress(fraction if fraction is not None else 0.0, desc=text)

    return sink


def _defaults_json(model: str | None) -> str:
    if not model:
        return "{}"
    try:
        return json.dumps(h.default_settings(model), indent=1)
    except Exception as exc:
        return f"// {user_message(exc)}"


def _verdict_table(rows: list[list[Any]], headers: list[str]) -> Any:
    """The results as a table whose ANOMALY verdicts stand out in red."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=headers)
    return frame.style.map(lambda v: "color: #b91c1c; font-weight: 700" if v == "ANOMALY" else "", subset=["verdict"])


def build_app(settings: h.UISettings) -> Any:
    """The whole page as a ``gr.Blocks``; nothing runs until it is launched."""
    import gradio as gr

    board = JobBoard()

    def choices(kind: str | None) -> list[tuple[str, str]]:
        if kind is None:
            return h.model_choices(settings, "image") + h.model_choices(settings, "video")
        return h.model_choices(settings, kind)

    def dropdown_update(kind: str | None, keep: str | None = None) -> Any:
        options = choices(kind)
        values = [value for _, value in options]
        value = keep if keep in values else (values[0] if values else None)
        return gr.update(choices=options, value=value)

    with gr.Blocks(title="anomalens", analytics_enabled=False) as app:
        with gr.Row(elem_id="al-header"):
            gr.Markdown(
                "# anomalens\nAnomaly inspection for industrial images and video, learned from normal examples only. "
                f"Models: `{settings.results_dir}`"
            )

        # ---- 1. inspect images ----------------------------------------------------------------------
        with gr.Tab("Inspect images", id="inspect"):
            inspection_state = gr.State(None)
            with gr.Row():
                image_model = gr.Dropdown(label="Image model (category · type · trained · test metrics)", choices=[], scale=5, elem_id="image-model")
                image_refresh = gr.Button("↻ Refresh list", scale=1, size="sm")
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    image_files = gr.File(label="Images (one or many)", file_count="multiple", file_types=["image"], elem_id="image-files")
                    if settings.image_examples:
                        gr.Examples(
                            examples=[[[str(p)]] for p in settings.image_examples] + [[[str(p) for p in settings.image_examples]]],
                            inputs=[image_files],
                            example_labels=[p.parent.name + "/" + p.name for p in settings.image_examples] + ["all examples"],
                            label="Examples (click one)",
                        )
                    inspect_button = gr.Button("Inspect", variant="primary", elem_id="inspect-button")
                    threshold = gr.Slider(0.01, 0.99, value=0.5, step=0.01, label="Threshold on the normalised score (0.5 = the model's calibrated threshold)", elem_id="threshold")
                    image_downloads = gr.File(label="Downloads: results.csv (at this threshold) and overlays.zip", file_count="multiple", interactive=False)
                with gr.Column(scale=5):
                    image_summary = gr.Markdown(elem_classes="al-summary", elem_id="image-summary")
                    image_gallery = gr.Gallery(label="Heatmap overlays (red = unlike the training data; outlined = above the model's threshold)", columns=4, height=440, object_fit="contain", elem_id="image-gallery")
                    image_table = gr.Dataframe(headers=h.INSPECTION_HEADERS, label="Results", interactive=False, wrap=True, elem_id="image-table")
                    image_reconstructions = gr.Gallery(label="Reconstructions (what the model expected to see)", columns=6, height=220, object_fit="contain", visible=False, elem_id="image-reconstructions")

        # ---- 2. analyse video -----------------------------------------------------------------------
        with gr.Tab("Analyse video", id="video"):
            with gr.Row():
                video_model = gr.Dropdown(label="Video model", choices=[], scale=5, elem_id="video-model")
                video_refresh = gr.Button("↻ Refresh list", scale=1, size="sm")
            with gr.Row():
                with gr.Column(scale=2, min_width=320):
                    video_file = gr.File(label="Video (mp4, avi, mov, mkv)", file_types=list(h.VIDEO_EXTENSIONS), elem_id="video-file")
                    if settings.video_examples:
                        gr.Examples(examples=[[str(p)] for p in settings.video_examples], inputs=[video_file],
                                    example_labels=[f"{p.parent.name}/{p.name}" for p in settings.video_examples], label="Examples (click one)")
                    video_button = gr.Button("Analyse", variant="primary", elem_id="video-button")
                    video_downloads = gr.File(label="Downloads: scores.csv, events.json, side-by-side video", file_count="multiple", interactive=False)
                with gr.Column(scale=5):
                    video_summary = gr.Markdown(elem_classes="al-summary", elem_id="video-summary")
                    video_player = gr.Video(label="Original | model view | heatmap", interactive=False, elem_id="video-player")
                    video_timeline = gr.Image(label="Score per frame", show_label=False, interactive=False, elem_id="video-timeline")
                    video_events = gr.Dataframe(headers=h.EVENT_HEADERS, label="Detected intervals", interactive=False, elem_id="video-events")

        # ---- 3. train -------------------------------------------------------------------------------
        with gr.Tab("Train", id="train"):
            roots = ", ".join(f"`{r}`" for r in settings.data_roots) or "none (start the server with --data-root DIR)"
            gr.Markdown(f"Train on **normal examples only**. Allowed data folders: {roots}. Or upload a zip with the same layout.")
            with gr.Row():
                with gr.Column(scale=3):
                    train_kind = gr.Radio(["image", "video"], value="image", label="Data type", elem_id="train-kind")
                    train_folder = gr.Textbox(label="Dataset folder (the category folder, e.g. …/bottle)", placeholder=str(settings.data_roots[0]) if settings.data_roots else "", elem_id="train-folder")
                    train_zip = gr.File(label="…or upload a zip", file_types=[".zip"], elem_id="train-zip")
                    check_button = gr.Button("Check dataset", size="sm", elem_id="check-button")
                with gr.Column(scale=3):
                    train_model_type = gr.Dropdown(label="Model type", choices=h.model_types("image"), value=(h.model_types("image") or [None])[0], elem_id="train-model-type")
                    with gr.Row():
                        train_size = gr.Number(value=256, label="Image size (px)", precision=0, minimum=32, maximum=1024, elem_id="train-size")
                        train_validation = gr.Slider(0.05, 0.5, value=0.1, step=0.05, label="Held-out normal share (threshold)")
                        train_seed = gr.Number(value=0, label="Seed", precision=0)
                    train_advanced = gr.Code(value=_defaults_json((h.model_types("image") or [None])[0]), language="json", label="Model settings (defaults of this model type; edit to change)", lines=6, elem_id="train-advanced")
            with gr.Row():
                train_button = gr.Button("Train", variant="primary", elem_id="train-button")
                cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
            train_status = gr.Markdown("Pick a dataset, check it, then press **Train**. Progress shows here.", elem_classes="al-summary", elem_id="train-status")
            models_table = gr.Dataframe(headers=h.MODEL_TABLE_HEADERS, label="Trained models", interactive=False, elem_id="models-table")

        # ---- 4. evaluate ----------------------------------------------------------------------------
        with gr.Tab("Evaluate", id="evaluate"):
            with gr.Row():
                eval_model = gr.Dropdown(label="Model (evaluated on the test split of its dataset)", choices=[], scale=5, elem_id="eval-model")
                eval_button = gr.Button("Evaluate", variant="primary", scale=1, elem_id="eval-button")
            with gr.Row():
                eval_metrics = gr.Dataframe(headers=["metric", "value"], label="Metrics", interactive=False, elem_id="eval-metrics")
                eval_types = gr.Dataframe(label="Per defect / anomaly type", interactive=False, elem_id="eval-types")
            with gr.Row():
                eval_roc = gr.Image(label="ROC curve", show_label=False, interactive=False)
                eval_distribution = gr.Image(label="Score distribution", show_label=False, interactive=False)
            eval_samples = gr.Image(label="Samples", show_label=False, interactive=False, visible=True)
            eval_timelines = gr.Gallery(label="Test clips: score per frame (ground truth shaded)", columns=2, height="auto", visible=False, elem_id="eval-timelines")
            with gr.Accordion("Full report", open=False):
                eval_report = gr.Markdown()

        # ---- 5. help --------------------------------------------------------------------------------
        with gr.Tab("Help", id="help"):
            gr.Markdown(HELP_MARKDOWN)

        # ---- wiring ---------------------------------------------------------------------------------
        def refresh_all(image_value: str | None = None, video_value: str | None = None, eval_value: str | None = None):
            try:
                return (dropdown_update("image", image_value), dropdown_update("video", video_value),
                        dropdown_update(None, eval_value), h.model_rows(settings))
            except Exception as exc:  # an unreadable run must not break the page
                log.warning("could not list models: %s", exc)
                return gr.update(), gr.update(), gr.update(), gr.update()

        refresh_outputs = [image_model, video_model, eval_model, models_table]
        app.load(refresh_all, None, refresh_outputs)
        for button in (image_refresh, video_refresh):
            button.click(refresh_all, [image_model, video_model, eval_model], refresh_outputs)

        def run_inspection(run_dir, files, threshold_value, request: gr.Request, progress=gr.Progress()):
            key = _key(request)
            try:
                with board.job(f"{key}:inspect") as job:
                    inspection = h.inspect_images(settings, run_dir, files, key, job.reporter(_sink(progress)))
                views = h.reconstruction_gallery(inspection)
                return relabel(inspection, threshold_value) + (gr.update(value=views, visible=bool(views)), inspection)
            except Exception as exc:
                raise _ui_error(exc) from None

        def relabel(inspection, threshold_value):
            if inspection is None:
                return gr.update(), gr.update(), gr.update(), gr.update()
            try:
                return (h.inspection_summary(inspection, threshold_value), h.inspection_gallery(inspection, threshold_value),
                        _verdict_table(h.inspection_rows(inspection, threshold_value), h.INSPECTION_HEADERS),
                        h.inspection_downloads(inspection, threshold_value))
            except Exception as exc:
                raise _ui_error(exc) from None

        inspect_outputs = [image_summary, image_gallery, image_table, image_downloads]
        inspect_button.click(run_inspection, [image_model, image_files, threshold], inspect_outputs + [image_reconstructions, inspection_state],
                             concurrency_id=ANALYSIS_LANE[0], concurrency_limit=ANALYSIS_LANE[1])
        threshold.change(relabel, [inspection_state, threshold], inspect_outputs, show_progress="hidden", trigger_mode="always_last")

        def run_video(run_dir, video, request: gr.Request, progress=gr.Progress()):
            key = _key(request)
            try:
                with board.job(f"{key}:video") as job:
                    view = h.analyze_video_file(settings, run_dir, video, key, job.reporter(_sink(progress)))
                return view.summary, str(view.video_path), str(view.timeline_path), view.event_rows, view.downloads
            except Exception as exc:
                raise _ui_error(exc) from None

        video_button.click(run_video, [video_model, video_file], [video_summary, video_player, video_timeline, video_events, video_downloads],
                           concurrency_id=ANALYSIS_LANE[0], concurrency_limit=ANALYSIS_LANE[1])

        def on_kind(kind):
            names = h.model_types(kind)
            first = names[0] if names else None
            return gr.update(choices=names, value=first), _defaults_json(first)

        train_kind.change(on_kind, [train_kind], [train_model_type, train_advanced])
        train_model_type.input(_defaults_json, [train_model_type], [train_advanced])

        def check_dataset(kind, folder, upload, request: gr.Request):
            try:
                choice = h.choose_dataset(settings, folder, upload, _key(request), kind)
                return f"**Dataset OK:** {choice.description} (`{choice.data_dir / choice.category}`)"
            except Exception as exc:
                return f"**Error:** {user_message(exc)}"

        check_button.click(check_dataset, [train_kind, train_folder, train_zip], [train_status])

        def run_training(kind, folder, upload, model, size, validation, seed, advanced, request: gr.Request, progress=gr.Progress()):
            key = _key(request)
            run_dir = None
            try:
                with board.job(f"{key}:train") as job:
                    progress(0.0, desc="checking the dataset")
                    dataset = h.choose_dataset(settings, folder, upload, key, kind)
                    outcome = h.train_model(
                        settings, dataset, model, image_size=int(size or 256), validation_fraction=float(validation),
                        seed=int(seed or 0), advanced=h.parse_advanced(advanced), reporter=job.reporter(_sink(progress)),
                    )
                message = ("**Stopped.** " if outcome.interrupted else "**Done.** ") + outcome.message
                run_dir = str(outcome.run_dir) if outcome.run_dir else None
            except Exception as exc:
                message = f"**Error:** {user_message(exc)}"
            image_value = run_dir if kind == "image" else None
            video_value = run_dir if kind == "video" else None
            return (message,) + refresh_all(image_value, video_value, run_dir)

        train_button.click(run_training, [train_kind, train_folder, train_zip, train_model_type, train_size, train_validation, train_seed, train_advanced],
                           [train_status] + refresh_outputs, concurrency_id=TRAIN_LANE[0], concurrency_limit=TRAIN_LANE[1],
                           show_progress_on=[train_status])

        def cancel(request: gr.Request):
            if board.cancel(f"{_key(request)}:train"):
                return "**Stopping** at the next step…"
            return "No training is running in this tab."

        cancel_button.click(cancel, None, [train_status], concurrency_limit=None, show_progress="hidden")

        def run_evaluation(run_dir, request: gr.Request, progress=gr.Progress()):
            key = _key(request)
            try:
                with board.job(f"{key}:evaluate") as job:
                    view = h.evaluate_model(settings, run_dir, job.reporter(_sink(progress)), key=key)
                figures = view.figures
                return (view.metric_rows, gr.update(value=view.type_rows, headers=view.type_headers),
                        gr.update(value=figures.get("roc_curve"), visible="roc_curve" in figures),
                        gr.update(value=figures.get("score_distribution"), visible="score_distribution" in figures),
                        gr.update(value=figures.get("samples"), visible="samples" in figures),
                        gr.update(value=view.timelines, visible=bool(view.timelines)),
                        h.read_report(view)) + refresh_all(None, None, run_dir)[3:]
            except Exception as exc:
                raise _ui_error(exc) from None

        eval_button.click(run_evaluation, [eval_model], [eval_metrics, eval_types, eval_roc, eval_distribution, eval_samples, eval_timelines, eval_report, models_table],
                          concurrency_id=ANALYSIS_LANE[0], concurrency_limit=ANALYSIS_LANE[1])
    return app


def allowed_paths(settings: h.UISettings) -> list[str]:
    """Files the page may serve beyond what its views return: the example inputs, one by one.

    Never a folder: not the results folder (weights, configs, logs), not the per-session outputs (Gradio
    copies what a view returns into its own cache and serves that copy), not the data folders.
    """
    return sorted({str(Path(p).resolve()) for p in settings.image_examples + settings.video_examples})


def launch(
    settings: h.UISettings,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    block: bool = True,
) -> Any:
    """Start the server (queue on, errors shown as one line, upload limit, no outgoing network).

    Files: each session's outputs go to a private folder outside the results folder, removed when its page
    closes (and all of them kept under a size cap); Gradio serves only the copies it makes of what a view
    returned. Login: failed attempts are slowed down (:class:`LoginThrottle`) and Gradio's routes that
    answer without a login are closed (:class:`LoginGate`); no run history is recorded.
    """
    for name, value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
        os.environ.setdefault(name, value)
    import atexit
    import shutil

    import gradio as gr
    from starlette.middleware import Middleware

    from anomalens.ui.jobs import remove_session
    from anomalens.ui.security import LoginGate, LoginThrottle, served_sessions_root

    if settings.sessions_root is None:
        settings = dataclasses.replace(settings, sessions_root=served_sessions_root())
        atexit.register(shutil.rmtree, settings.sessions_root, ignore_errors=True)
    settings.sessions_dir.mkdir(parents=True, exist_ok=True)
    removed = prune_workspaces(settings.sessions_dir)
    if removed:
        log.info("removed %d UI output folders older than a week", removed)
    app = build_app(settings)
    with app:
        def end_session(request: gr.Request) -> None:  # the page was closed: its outputs go with it
            remove_session(settings.sessions_dir, _key(request))

        app.unload(end_session)
    app.delete_cache = (3600, 6 * 3600)  # Gradio's served copies: removed after six hours, and on shutdown
    app.queue(default_concurrency_limit=2, max_size=64)
    blocked = [str(settings.results_dir), *map(str, settings.data_roots)]
    app.launch(
        server_name=host,
        server_port=port,
        auth=LoginThrottle(*auth).check if auth else None,
        auth_message="anomalens: sign in" if auth else None,
        show_error=True,
        max_file_size=f"{settings.max_upload_mb}mb",
        allowed_paths=allowed_paths(settings),
        blocked_paths=[p for p in blocked if not settings.sessions_dir.is_relative_to(p)
                       and not any(Path(e).resolve().is_relative_to(p) for e in allowed_paths(settings))],
        app_kwargs={"middleware": [Middleware(LoginGate)], "openapi_url": None, "docs_url": None, "redoc_url": None},
        run_history=False,
        prevent_thread_lock=not block,
        quiet=not block,
        footer_links=[],
        ssr_mode=False,
        theme=gr.themes.Soft(),  # its fonts ship with Gradio: the page requests nothing from other hosts (tested)
        css=CSS,
    )
    return app
