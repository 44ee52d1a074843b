"""The "Evaluate" tab: evaluate a model on the test split of the data it was trained on; metrics, tables, figures.

>>> view = evaluate_model(settings, run_dir)        # doctest: +SKIP
>>> view.metric_rows[:2]                            # doctest: +SKIP
[['image auroc', 0.9981], ['pixel auroc', 0.9712]]
"""

# No `from __future__ import annotations`: Gradio reads the `gr.Request` annotation of handlers at run time.

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalens.errors import DataError
from anomalens.progress import SILENT, Reporter, format_duration
from anomalens.ui.common import (
    ANALYSIS_LANE,
    HEADLINE_METRICS,
    UPLOADS_FOLDER,
    ModelLists,
    UISettings,
    chosen_run,
    progress_sink,
    request_key,
    rounded,
)
from anomalens.ui.jobs import JobBoard, new_workspace, run_cancellable, wire_run
from anomalens.ui.security import user_message

# The per-type table of each kind's metrics.json, and the entries that are tables or curves, not numbers.
TYPE_TABLES = {"image": "per_defect_type", "video": "per_type"}
SKIPPED_METRICS = ("roc_curve", "per_defect_type", "per_type", "per_clip", "warnings", "config", "settings", "hardest_cases")


@dataclass
class EvaluationView:
    metric_rows: list[list[Any]]
    type_rows: list[list[Any]]
    type_headers: list[str]
    figures: dict[str, str]
    report_path: str | None
    timelines: list[tuple[str, str]] = field(default_factory=list)  # (image, clip name), video models only
    downloads: list[str] = field(default_factory=list)  # per-image or per-frame scores and the report


def _flatten_scalars(metrics: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    """Numbers (and one level of nested numbers, such as the confusion at the threshold) as metric rows."""
    rows: list[list[Any]] = []
    for name, value in metrics.items():
        label = f"{prefix}{name.replace('_', ' ')}"
        if name in SKIPPED_METRICS or isinstance(value, bool):
            continue
        if value is None and name in HEADLINE_METRICS:
            from anomalens.workflows.reports import format_number

            rows.append([label, format_number(None)])
        elif isinstance(value, (int, float)):
            rows.append([label, rounded(value, 4)])
        elif isinstance(value, dict) and not prefix:
            rows.extend(_flatten_scalars(value, prefix=f"{label} · "))
    return rows


def _type_table(table: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """Per defect (or anomaly) type: whatever the evaluation measured for each, as one table."""
    columns: list[str] = []
    for values in table.values():
        columns.extend(column for column in values if column not in columns)
    rows = [[name] + [rounded(values.get(column), 4) for column in columns] for name, values in table.items()]
    return ["type"] + [column.replace("_", " ") for column in columns], rows


def evaluate_model(settings: UISettings, run_dir: str | Path | None, reporter: Reporter = SILENT,
                   key: str = "evaluate") -> EvaluationView:
    """Evaluate a model on the test split of the data it was trained on (read only here, never in training).

    The figures are copied into the session's own folder: the page never serves files from the run folder.
    A stop through ``reporter`` (the tab's Cancel) raises :class:`~anomalens.errors.Cancelled`; the library swaps
    the run's ``evaluation/`` folder in whole only at the end, so an earlier evaluation stays as it was.
    """
    from anomalens.workflows.kinds import data_kind
    from anomalens.workflows.runs import read_model_config

    run = chosen_run(settings, run_dir)
    kind = read_model_config(run)["kind"]
    check_training_data(settings, run)
    result = data_kind(kind).evaluate(run, device=settings.device, reporter=reporter)
    # headline metrics first, then everything else in the evaluation's own order
    metrics = {**{k: result.metrics[k] for k in HEADLINE_METRICS if k in result.metrics}, **result.metrics}
    headers, type_rows = _type_table(metrics.get(TYPE_TABLES[kind]) or {})
    served = new_workspace(settings.sessions_dir, key, "evaluate")
    figures = {name: str(shutil.copy2(path, served / f"{name}{Path(path).suffix}"))
               for name, path in result.figures.items() if Path(path).is_file()}
    timelines = [(path, name.removeprefix("timeline_")) for name, path in sorted(figures.items()) if name.startswith("timeline")]
    tables = [result.output_dir / name for name in ("image_scores.csv", "frame_scores.csv", "metrics.json", "report.md")]
    # served from the session workspace like the figures: the results folder itself is never exposed
    downloads = [str(shutil.copy2(path, served / path.name)) for path in tables if path.is_file()]
    return EvaluationView(_flatten_scalars(metrics), type_rows, headers, figures, str(result.report_path), timelines, downloads)


def check_training_data(settings: UISettings, run: Path) -> None:
    """The dataset the run was trained on must still be there; a missing one is named, with how to bring it back
    (a dataset uploaded as a zip was unpacked under ``<results>/uploads/``, where it may have been removed by hand).
    """
    from anomalens.workflows.runs import read_run_file

    record = read_run_file(run)
    if not record.get("data_dir") or not record.get("category"):
        return  # the library names what it needs
    data_dir = Path(record["data_dir"])
    if (data_dir / record["category"]).is_dir():
        return
    uploads = (settings.results_dir / UPLOADS_FOLDER).resolve()
    dataset = (data_dir / record["category"]).resolve()  # a zip without a top folder: data_dir is uploads/ itself
    if dataset.is_relative_to(uploads) and dataset != uploads:
        upload = uploads / dataset.relative_to(uploads).parts[0]
        raise DataError(f"the dataset this model was trained on is gone: it came from an uploaded zip, unpacked into "
                        f"{upload}, and that folder was removed. Unpack the same zip into that folder again to "
                        f"evaluate this model, or train a new model on it")
    raise DataError(f"the dataset this model was trained on is gone (no folder {data_dir / record['category']}): "
                    "put it back there to evaluate this model")


def kept_after_cancel(run_dir: str | Path) -> str:
    """What a cancelled evaluation left: nothing new, and the run's earlier evaluation (if any) as it was."""
    from anomalens.workflows.runs import EVALUATION_DIR, METRICS_FILE

    if (Path(run_dir) / EVALUATION_DIR / METRICS_FILE).is_file():
        return "nothing was saved: the model's earlier evaluation stays as it was"
    return "nothing was saved: the model is still not evaluated"


def read_report(view: EvaluationView) -> str:
    if view.report_path and Path(view.report_path).is_file():
        return Path(view.report_path).read_text(encoding="utf-8")
    return ""


def build(settings: UISettings, board: JobBoard, lists: ModelLists) -> None:
    """The tab's layout and wiring (inside a ``gr.Blocks``)."""
    import gradio as gr

    from anomalens.ui.tabs.controls import enqueue_for, wire_cancel_button

    with gr.Tab("Evaluate", id="evaluate"):
        with gr.Row():
            model = gr.Dropdown(label="Model (evaluated on the test split of its dataset)", choices=[], scale=5, elem_id="eval-model")
            button = gr.Button("Evaluate", variant="primary", scale=1, elem_id="eval-button")
            cancel_button = gr.Button("Cancel", variant="stop", scale=1, elem_id="eval-cancel")
            ticket = gr.Number(visible=False, precision=0)  # of the run pressed last (JobBoard.enqueue)
        status = gr.Markdown(elem_classes="al-summary", elem_id="eval-status")
        # each table on its own full-width row, so that its last column stays visible on a laptop screen
        types = gr.Dataframe(label="Per defect / anomaly type", interactive=False, wrap=True, elem_id="eval-types")
        with gr.Row():
            metrics = gr.Dataframe(headers=["metric", "value"], label="Metrics", interactive=False, wrap=True,
                                   scale=2, elem_id="eval-metrics")
            downloads = gr.File(label="Downloads: per-image (or per-frame) scores, metrics.json, report.md",
                                file_count="multiple", interactive=False, scale=1, elem_id="eval-downloads")
        with gr.Row():
            roc = gr.Image(label="ROC curve", show_label=False, interactive=False)
            distribution = gr.Image(label="Score distribution", show_label=False, interactive=False)
        # a heading, not an image label: a label would cover the figure's column titles
        hardest_title = gr.Markdown("### Hardest cases: the highest-scoring normal images and the lowest-scoring "
                                    "defective ones (look here before trusting the model)", visible=False)
        hardest = gr.Image(label="Hardest cases", show_label=False, interactive=False, visible=False, elem_id="eval-hardest")
        samples = gr.Image(label="Samples", show_label=False, interactive=False, visible=True)
        # one wide plot per row, shown whole: a grid of square thumbnails cut off the axes and the legend
        timelines = gr.Gallery(label="Test clips: score per frame (ground truth shaded)", columns=1, height="auto",
                               object_fit="contain", show_label=True, visible=False, elem_id="eval-timelines")
        with gr.Accordion("Full report", open=False):
            report = gr.Markdown()
    lists.pickers["any"] = model

    def run(run_dir, ticket_value, request: gr.Request, progress=gr.Progress()):
        key = request_key(request)
        try:
            outcome = run_cancellable(board, f"{key}:evaluate",
                                      lambda reporter: evaluate_model(settings, run_dir, reporter, key=key),
                                      progress_sink(progress), "Evaluation",
                                      kept=lambda: kept_after_cancel(chosen_run(settings, run_dir)), ticket=ticket_value)
            if outcome.value is None:  # cancelled, or a repeated press: the earlier results stay on the page
                return (outcome.message or gr.update(),) + (gr.update(),) * 11
            view = outcome.value
            figures = view.figures
            done = f"**Done.** Evaluated `{Path(run_dir).name}` in {format_duration(outcome.seconds)}."
            return (done, view.metric_rows, gr.update(value=view.type_rows, headers=view.type_headers),
                    gr.update(value=figures.get("roc_curve"), visible="roc_curve" in figures),
                    gr.update(value=figures.get("score_distribution"), visible="score_distribution" in figures),
                    gr.update(value=figures.get("samples"), visible="samples" in figures),
                    gr.update(value=view.timelines, visible=bool(view.timelines)),
                    read_report(view),
                    gr.update(value=figures.get("hardest_cases"), visible="hardest_cases" in figures),
                    gr.update(visible="hardest_cases" in figures),
                    view.downloads) + lists.refresh(None, None, run_dir)[3:]
        except Exception as exc:  # one clear line in the status, as in the other tabs; the earlier results stay
            return (f"**Error:** {user_message(exc)}",) + (gr.update(),) * 11

    lists.wire_later(lambda: wire_run(
        button, enqueue_for(board, "evaluate"), ticket, run, [model],
        [status, metrics, types, roc, distribution, samples, timelines, report, hardest, hardest_title, downloads,
         lists.table],
        concurrency_id=ANALYSIS_LANE[0], concurrency_limit=ANALYSIS_LANE[1]))
    wire_cancel_button(cancel_button, board, "evaluate", "evaluation", status)
