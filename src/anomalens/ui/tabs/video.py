"""The "Analyse video" tab: run a video model over one uploaded video; side-by-side, timeline, scores, events.

>>> view = analyze_video_file(settings, run_dir, "clip.mp4", key="tab1")    # doctest: +SKIP
>>> view.event_rows[0]                                                       # doctest: +SKIP
[1, 2.4, 3.1, 60, 77, 0.72, 0.93, 66, 'motion']
"""

# No `from __future__ import annotations`: Gradio reads the `gr.Request` annotation of handlers at run time.

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalens.data.video_io import VIDEO_EXTENSIONS
from anomalens.errors import DataError
from anomalens.metrics.events import Event
from anomalens.progress import SILENT, Reporter
from anomalens.ui.common import (
    ANALYSIS_LANE,
    DETECTORS,
    NOT_SCORED_NOTE,
    ModelLists,
    UISettings,
    chosen_run,
    example_label,
    examples_for_run,
    stage_examples,
    progress_sink,
    request_key,
    rounded,
    drift_note,
    threshold_text,
    ui_error,
    event_where_text,
)
from anomalens.ui.jobs import JobBoard, new_workspace, run_cancellable
from anomalens.ui.security import check_upload_size, user_message

EVENT_HEADERS = ["#", "start (s)", "end (s)", "start frame", "end frame", "duration (s)", "peak (normalised)", "peak frame",
                 "main cue", "where (peak frame)"]


@dataclass
class VideoView:
    output_dir: Path
    video_path: Path
    timeline_path: Path
    event_rows: list[list[Any]]
    downloads: list[str]
    summary: str


def analyze_video_file(
    settings: UISettings, run_dir: str | Path | None, video: str | Path | None, key: str, reporter: Reporter = SILENT
) -> VideoView:
    """Run a video model over one uploaded video; side-by-side, timeline, scores and events per tab.

    A stop through ``reporter`` (the tab's Cancel) raises :class:`~anomalens.errors.Cancelled` within a few frames,
    while scoring or while drawing the side-by-side video, and, like any failure, leaves no output folder behind
    (the library moves its files in only once all of them are written)."""
    from anomalens.workflows.predict import analyze_video

    run = chosen_run(settings, run_dir)
    if not video:
        raise DataError(f"upload a video first ({', '.join(VIDEO_EXTENSIONS)}) or click an example")
    video = check_upload_size(video, settings.max_upload_bytes)
    if video.suffix.lower() not in VIDEO_EXTENSIONS:
        raise DataError(f"not a video type this page takes ({', '.join(VIDEO_EXTENSIONS)})", video.name)
    detector = DETECTORS.get(run, settings.device, "video")
    output_dir = new_workspace(settings.sessions_dir, key, "video")
    try:
        analysis = analyze_video(detector, video, output_dir, device=settings.device, reporter=reporter)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)  # an empty folder would only count against the size cap
        raise
    rows = [
        [index, rounded(event.start_time), rounded(event.end_time), event.start_frame, event.end_frame,
         rounded(event.duration), rounded(event.peak_normalized_score, 3), event.peak_frame,
         event.main_cue or "", where_text(event)]  # appearance or motion, for models that add cues
        for index, event in enumerate(analysis.events, start=1)
    ]
    frames = len(analysis.scores)
    flagged = int(analysis.anomalous.sum())
    summary = (
        f"**{len(rows)} anomalous interval(s)**; {flagged} of {frames} frames above the threshold "
        f"({frames / analysis.fps:.1f} s at {analysis.fps:g} fps{'' if analysis.fps_stated else ', assumed: the video states no rate'}). "
        f"{threshold_text(run)}"
    )
    if analysis.drift is not None and analysis.drift.drifted:
        summary += f"\n\n{drift_note(analysis.drift)}"
    downloads = [str(p) for p in (analysis.scores_csv, analysis.events_json, analysis.side_by_side_path)]
    return VideoView(output_dir, analysis.side_by_side_path, analysis.timeline_path, rows, downloads, summary)


def where_text(event: Event) -> str:
    """The event's regions in the video's pixels, as the Inspect tab words an image's (``1; largest 24x32 px at x
    72, y 48``); empty for a model whose map cannot place events (stfeatures saved before ``anomaly_map``)."""
    return event_where_text(dataclasses.asdict(event))


def build(settings: UISettings, board: JobBoard, lists: ModelLists) -> None:
    """The tab's layout and wiring (inside a ``gr.Blocks``)."""
    import gradio as gr

    from anomalens.ui.tabs.controls import enqueue_for, wire_cancel_button

    from anomalens.ui.jobs import wire_run

    with gr.Tab("Analyse video", id="video"):
        with gr.Row():
            model = gr.Dropdown(label="Video model", choices=[], scale=5, elem_id="video-model")
            refresh = gr.Button("↻ Refresh list", scale=1, size="sm")
        with gr.Row():
            with gr.Column(scale=2, min_width=320):
                video_file = gr.File(label=f"Video ({', '.join(e.lstrip('.') for e in VIDEO_EXTENSIONS)})",
                                     file_types=list(VIDEO_EXTENSIONS), elem_id="video-file")
                examples = gr.Dataset(components=["textbox"], samples=[], type="index", visible=False,
                                      label="Examples from this model's test data (click one)", elem_id="video-examples")
                with gr.Row():
                    button = gr.Button("Analyse", variant="primary", elem_id="video-button")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="video-cancel")
                ticket = gr.Number(visible=False, precision=0)  # of the run pressed last (JobBoard.enqueue)
                downloads = gr.File(label="Downloads: scores.csv, events.json, side-by-side video", file_count="multiple", interactive=False)
            with gr.Column(scale=5):
                summary = gr.Markdown(elem_classes="al-summary", elem_id="video-summary")
                # no label over the video: it would cover the "Original" title drawn in the first panel
                player = gr.Video(label="Original | model view | heatmap", show_label=False, interactive=False, elem_id="video-player")
                timeline = gr.Image(label="Score per frame", show_label=False, interactive=False, elem_id="video-timeline")
                events = gr.Dataframe(headers=EVENT_HEADERS, label=f"Detected intervals ({NOT_SCORED_NOTE})", interactive=False, elem_id="video-events")
    lists.pickers["video"] = model

    def run(run_dir, video, ticket_value, request: gr.Request, progress=gr.Progress()):
        key = request_key(request)
        try:
            outcome = run_cancellable(board, f"{key}:video",
                                      lambda reporter: analyze_video_file(settings, run_dir, video, key, reporter),
                                      progress_sink(progress), "Video analysis", ticket=ticket_value)
            if outcome.value is None:  # cancelled, or a repeated press: the earlier results stay on the page
                return (outcome.message or gr.update(),) + (gr.update(),) * 4
            view = outcome.value
            return view.summary, str(view.video_path), str(view.timeline_path), view.event_rows, view.downloads
        except Exception as exc:  # one clear line in the summary; no error badges on every other output
            return (f"**Error:** {user_message(exc)}",) + (gr.update(),) * 4

    def show_examples(run_dir):
        samples = [[example_label(p)] for p in examples_for_run(settings, run_dir, "video")]
        return gr.update(samples=samples, visible=bool(samples))

    def load_example(run_dir, index, request: gr.Request):
        try:
            if index is not None and int(index) >= len(examples_for_run(settings, run_dir, "video")):
                raise DataError("choose one video")
            return str(stage_examples(settings, run_dir, "video", index, request_key(request))[0])
        except Exception as exc:
            raise ui_error(exc) from None

    model.change(show_examples, [model], [examples], show_progress="hidden")
    examples.click(load_example, [model, examples], [video_file], show_progress="hidden")

    wire_run(button, enqueue_for(board, "video"), ticket, run, [model, video_file], [summary, player, timeline, events, downloads],
             concurrency_id=ANALYSIS_LANE[0], concurrency_limit=ANALYSIS_LANE[1])
    wire_cancel_button(cancel_button, board, "video", "video analysis", summary)
    lists.wire_later(lambda: refresh.click(lists.refresh, [lists.pickers["image"], lists.pickers["video"], lists.pickers["any"]], lists.outputs))
