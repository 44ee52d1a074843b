"""The "Inspect images" tab: score uploaded images with a trained image model, then relabel at any threshold.

Relabelling never rescores: the slider is a threshold on the normalised score, mapped back to the model's raw
scale by the model's own calibration (:meth:`~anomalens.metrics.threshold.Calibration.denormalize`), where the
library's one rule (:meth:`~anomalens.metrics.threshold.Calibration.is_anomalous`) gives the verdicts: an image
that could not be scored (NaN) is ANOMALOUS at every threshold, as in the CLI and the live watch.

>>> view = inspect_images(settings, run_dir, ["part.png"], key="tab1")             # doctest: +SKIP
>>> inspection_rows(view, threshold=0.5)                                          # doctest: +SKIP
[['part.png', 1.234, 0.873, 'ANOMALOUS']]
"""

# No `from __future__ import annotations`: Gradio reads the `gr.Request` annotation of handlers at run time.

import csv
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from anomalens.errors import DataError
from anomalens.metrics.classification import ANOMALOUS, verdict_word
from anomalens.metrics.regions import Region
from anomalens.metrics.threshold import Calibration
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_path
from anomalens.ui.common import (
    ANALYSIS_LANE,
    DETECTORS,
    NOT_SCORED_NOTE,
    ModelLists,
    UISettings,
    chosen_run,
    example_samples,
    examples_for_run,
    stage_examples,
    progress_sink,
    regions_text,
    request_key,
    rounded,
    score_text,
    drift_note,
    threshold_text,
    ui_error,
)
from anomalens.ui.jobs import JobBoard, JobOutcome, ProgressSink, new_workspace, run_cancellable, wire_run
from anomalens.ui.security import check_upload_size, user_message
from anomalens.workflows.reports import score_cell

INSPECTION_HEADERS = ["image", "raw score", "normalised score", "verdict", "defect regions"]


@dataclass
class ImageItem:
    name: str
    score: float
    normalized_score: float
    overlay_path: Path | None
    reconstruction_path: Path | None = None
    # where: connected parts above the model's pixel threshold, in the image's own pixels (the slider does not move
    # them: it relabels images, the pixel threshold is the model's)
    regions: list[Region] = field(default_factory=list)


@dataclass
class ImageInspection:
    run_dir: Path
    output_dir: Path
    items: list[ImageItem]
    calibration: Calibration  # the one that normalised the scores: the slider relabels through it
    threshold_note: str = ""
    drift_note: str = ""  # set when the uploaded images, as a batch, look unlike the training data

    def raw_threshold(self, normalized: float) -> float:
        """The raw score that a normalised threshold stands for (the model's own inverse normalisation)."""
        return float(self.calibration.denormalize(normalized))

    def verdicts(self, normalized: float) -> list[str]:
        """Each image's verdict at a normalised threshold, by the library's rule at the raw score it stands for
        (not a comparison here: a NaN score compares false and would pass as normal)."""
        moved = self.calibration.with_threshold(self.raw_threshold(normalized))
        return [verdict_word(bool(flag)) for flag in moved.is_anomalous(np.array([item.score for item in self.items]))]


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
    """Score uploaded images with a trained image model; overlays go to a fresh per-tab folder.

    A stop through ``reporter`` (the tab's Cancel) raises :class:`~anomalens.errors.Cancelled` and, like any
    failure, leaves no output folder behind (the library writes nothing until every image is scored)."""
    from anomalens.workflows.predict import predict_images

    run = chosen_run(settings, run_dir)
    paths = [check_upload_size(p, settings.max_upload_bytes) for p in (files or [])]
    if not paths:
        raise DataError("upload one or more images first (or click an example)")
    detector = DETECTORS.get(run, settings.device, "image")
    output_dir = new_workspace(settings.sessions_dir, key, "inspect")
    try:
        report = predict_images(detector, paths, output_dir, device=settings.device, reporter=reporter)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)  # an empty folder would only count against the size cap
        raise
    items = []
    seen: dict[str, int] = {}
    for index, result in enumerate(report.results):
        name = display_name(result.relative_path or Path(result.path).name)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:  # browsers send bare file names: keep same-named uploads apart
            name = f"{name} #{seen[name]}"
        recon_path = _save_rgb(result.reconstruction, output_dir / "reconstructions" / f"{index:03d}_{Path(name).stem}.png")
        items.append(ImageItem(name, result.score, result.normalized_score, result.overlay_path, recon_path,
                               result.regions))
    return ImageInspection(run, output_dir, items, detector.calibration_, threshold_text(run), drift_note(report.drift))


def display_name(relative_path: str) -> str:
    """An image's name on the page: its path relative to the other inputs (``broken_large/000.png``, so that
    MVTec's many 000.png can be told apart), without the random folders the browser upload puts files in."""
    import re

    parts = [part for part in Path(relative_path).parts if not re.fullmatch(r"[0-9a-f]{16,}", part)]
    return "/".join(parts) or Path(relative_path).name


def inspection_rows(inspection: ImageInspection, threshold: float = 0.5) -> list[list[Any]]:
    """The results table at a normalised ``threshold``; relabelling never rescores."""
    return [
        [item.name, rounded(item.score, 5), rounded(item.normalized_score, 4), verdict, regions_text(item.regions)]
        for item, verdict in zip(inspection.items, inspection.verdicts(threshold))
    ]


def inspection_gallery(inspection: ImageInspection, threshold: float = 0.5) -> list[tuple[str, str]]:
    """(overlay, caption) pairs: the file first (the captions wrap, see the page's CSS), then the verdict."""
    return [
        (str(item.overlay_path), f"{item.name} · {verdict} {score_text(item.normalized_score)}")
        for item, verdict in zip(inspection.items, inspection.verdicts(threshold))
        if item.overlay_path is not None
    ]


def reconstruction_gallery(inspection: ImageInspection) -> list[tuple[str, str]]:
    """What the model rebuilt (autoencoder), empty for models without a reconstruction."""
    return [(str(item.reconstruction_path), item.name) for item in inspection.items if item.reconstruction_path is not None]


def inspection_summary(inspection: ImageInspection, threshold: float = 0.5) -> str:
    flagged = inspection.verdicts(threshold).count(ANOMALOUS)
    return (
        f"**{flagged} of {len(inspection.items)} images flagged** at threshold {threshold:.2f} "
        f"(raw score {inspection.raw_threshold(threshold):.4g}). "
        f"{inspection.threshold_note}"
    ) + (f"\n\n{inspection.drift_note}" if inspection.drift_note else "")


def inspection_downloads(inspection: ImageInspection, threshold: float = 0.5) -> list[str]:
    """A CSV at the current threshold and a zip of the overlays (and reconstructions)."""
    csv_path = inspection.output_dir / "results.csv"
    with atomic_path(csv_path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["image", "score", "normalized_score", "threshold_normalized", "anomalous", "regions"])
            for item, verdict in zip(inspection.items, inspection.verdicts(threshold)):
                writer.writerow([item.name, score_cell(item.score, ".6g"), score_cell(item.normalized_score, ".6f"),
                                 f"{threshold:.4f}", int(verdict == ANOMALOUS), json.dumps([r.to_dict() for r in item.regions])])
    zip_path = inspection.output_dir / "overlays.zip"
    if not zip_path.exists():
        with atomic_path(zip_path) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
                for item in inspection.items:
                    for path in (item.overlay_path, item.reconstruction_path):
                        if path is not None and Path(path).is_file():
                            bundle.write(path, arcname=f"{Path(path).parent.name}/{Path(path).name}")
    return [str(csv_path), str(zip_path)]


def shown_inspection(
    inspection: ImageInspection, threshold: float = 0.5
) -> tuple[str, list[tuple[str, str]], Any, list[str]]:
    """What the page shows at ``threshold``: the summary, the overlays, the table and the downloads (written here)."""
    return (inspection_summary(inspection, threshold), inspection_gallery(inspection, threshold),
            _verdict_table(inspection_rows(inspection, threshold), INSPECTION_HEADERS),
            inspection_downloads(inspection, threshold))


def run_inspection(
    settings: UISettings, board: JobBoard, key: str, run_dir: str | Path | None, files: Sequence[str | Path] | None,
    threshold: float = 0.5, sink: ProgressSink | None = None, ticket: int | None = None,
) -> JobOutcome[tuple[ImageInspection, tuple[Any, ...]]]:
    """The Inspect button: score ``files`` as the tab's job, then what the page shows (:func:`shown_inspection`).

    The downloads are written inside the job too: a page closed meanwhile has its folder deleted only once the job
    ended (:meth:`~anomalens.ui.jobs.JobBoard.close_session`), so no write comes after the deletion."""

    def work(reporter: Reporter) -> tuple[ImageInspection, tuple[Any, ...]]:
        inspection = inspect_images(settings, run_dir, files, key, reporter)
        return inspection, shown_inspection(inspection, threshold)

    return run_cancellable(board, f"{key}:inspect", work, sink, "Inspection", ticket=ticket)


def _verdict_table(rows: list[list[Any]], headers: list[str]) -> Any:
    """The results as a table whose ANOMALOUS verdicts stand out in red."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=headers)
    return frame.style.map(lambda v: "color: #b91c1c; font-weight: 700" if v == ANOMALOUS else "", subset=["verdict"])


def build(settings: UISettings, board: JobBoard, lists: ModelLists) -> None:
    """The tab's layout and wiring (inside a ``gr.Blocks``)."""
    import gradio as gr

    from anomalens.ui.tabs.controls import enqueue_for, wire_cancel_button

    with gr.Tab("Inspect images", id="inspect"):
        inspection_state = gr.State(None)
        with gr.Row():
            model = gr.Dropdown(label="Image model (category · type · trained · test metrics)", choices=[], scale=5, elem_id="image-model")
            refresh = gr.Button("↻ Refresh list", scale=1, size="sm")
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                files = gr.File(label="Images (one or many)", file_count="multiple", file_types=["image"], elem_id="image-files")
                examples = gr.Dataset(components=["textbox"], samples=[], type="index", visible=False,
                                      label="Examples from this model's test data (click one)", elem_id="image-examples")
                with gr.Row():
                    button = gr.Button("Inspect", variant="primary", elem_id="inspect-button")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="inspect-cancel")
                ticket = gr.Number(visible=False, precision=0)  # of the run pressed last (JobBoard.enqueue)
                threshold = gr.Slider(0.01, 0.99, value=0.5, step=0.01, label="Threshold on the normalised score (0.5 = the model's calibrated threshold)", elem_id="threshold")
                downloads = gr.File(label="Downloads: results.csv (at this threshold) and overlays.zip", file_count="multiple", interactive=False)
            with gr.Column(scale=5):
                summary = gr.Markdown(elem_classes="al-summary", elem_id="image-summary")
                gallery = gr.Gallery(label="Heatmap overlays (red = unlike the training data; outlined = above the model's threshold)", columns=4, height=440, object_fit="contain", elem_id="image-gallery")
                table = gr.Dataframe(headers=INSPECTION_HEADERS, label=f"Results ({NOT_SCORED_NOTE})", interactive=False, wrap=True, elem_id="image-table")
                reconstructions = gr.Gallery(label="Reconstructions (what the model expected to see)", columns=6, height=220, object_fit="contain", visible=False, elem_id="image-reconstructions")
    lists.pickers["image"] = model

    def relabel(inspection, threshold_value):
        if inspection is None:
            return gr.update(), gr.update(), gr.update(), gr.update()
        try:
            return shown_inspection(inspection, threshold_value)
        except Exception as exc:
            raise ui_error(exc) from None

    def run(run_dir, uploaded, threshold_value, ticket_value, request: gr.Request, progress=gr.Progress()):
        try:
            outcome = run_inspection(settings, board, request_key(request), run_dir, uploaded, threshold_value,
                                     progress_sink(progress), ticket_value)
            if outcome.value is None:  # cancelled, or a repeated press: the earlier results stay on the page
                return (outcome.message or gr.update(),) + (gr.update(),) * 5
            inspection, shown = outcome.value
            views = reconstruction_gallery(inspection)
            return shown + (gr.update(value=views, visible=bool(views)), inspection)
        except Exception as exc:  # one clear line in the summary; no error badges on every other output
            return (f"**Error:** {user_message(exc)}",) + (gr.update(),) * 4 + (None,)

    def show_examples(run_dir):
        samples = example_samples(examples_for_run(settings, run_dir, "image"))
        return gr.update(samples=samples, visible=bool(samples))

    def load_example(run_dir, index, request: gr.Request):
        try:
            return [str(p) for p in stage_examples(settings, run_dir, "image", index, request_key(request))]
        except Exception as exc:
            raise ui_error(exc) from None

    model.change(show_examples, [model], [examples], show_progress="hidden")
    examples.click(load_example, [model, examples], [files], show_progress="hidden")

    outputs = [summary, gallery, table, downloads]
    wire_run(button, enqueue_for(board, "inspect"), ticket, run, [model, files, threshold], outputs + [reconstructions, inspection_state],
             concurrency_id=ANALYSIS_LANE[0], concurrency_limit=ANALYSIS_LANE[1])
    wire_cancel_button(cancel_button, board, "inspect", "inspection", summary)
    threshold.change(relabel, [inspection_state, threshold], outputs, show_progress="hidden", trigger_mode="always_last")
    lists.wire_later(lambda: refresh.click(lists.refresh, [lists.pickers["image"], lists.pickers["video"], lists.pickers["any"]], lists.outputs))
