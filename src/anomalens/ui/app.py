"""The Gradio page: the header, one builder per tab (:mod:`anomalens.ui.tabs`), and the server launch.

Each tab module holds its own layout, wiring and pure handlers; this module only puts them on one page and
wires what spans tabs (the model pickers refresh together).

>>> app = build_app(UISettings(results_dir="results", data_roots=["demo_data"]))   # doctest: +SKIP
>>> launch(settings, host="127.0.0.1", port=7860)                                  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from anomalens.ui.common import ModelLists, UISettings
from anomalens.ui.jobs import JobBoard, prune_workspaces
from anomalens.ui.tabs import evaluate, help, inspect, live, train, video

log = logging.getLogger("anomalens.ui")

# The tabs in page order; each module has build(settings, board, lists).
TABS = (inspect, video, train, evaluate, help, live)

CSS = """
.gradio-container {max-width: 1480px !important}
#al-header h1 {margin-bottom: 0}
#al-header p {margin-top: 2px; opacity: .75}
.al-summary {font-size: 1.05em}
#train-status {min-height: 96px}
"""


def build_app(settings: UISettings) -> Any:
    """The whole page as a ``gr.Blocks``; nothing runs until it is launched."""
    import gradio as gr

    board = JobBoard()
    lists = ModelLists(settings)
    with gr.Blocks(title="anomalens", analytics_enabled=False) as app:
        with gr.Row(elem_id="al-header"):
            gr.Markdown(
                "# anomalens\nAnomaly inspection for industrial images and video, learned from normal examples only. "
                f"Models: `{settings.results_dir}`"
            )
        for tab in TABS:
            tab.build(settings, board, lists)
        lists.wire()
        app.load(lists.refresh, None, lists.outputs)
    return app


def allowed_paths(settings: UISettings) -> list[str]:
    """Folders the page may serve files from: model outputs and the example inputs, never the data roots."""
    folders = {str(settings.results_dir)}
    folders.update(str(Path(p).resolve().parent) for p in settings.image_examples + settings.video_examples)
    return sorted(folders)


def launch(
    settings: UISettings,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    block: bool = True,
) -> Any:
    """Start the server (queue on, errors shown as one line, upload limit, no outgoing network)."""
    for name, value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
        os.environ.setdefault(name, value)
    import gradio as gr

    settings.sessions_dir.mkdir(parents=True, exist_ok=True)
    removed = prune_workspaces(settings.sessions_dir)
    if removed:
        log.info("removed %d UI output folders older than a week", removed)
    app = build_app(settings)
    app.queue(default_concurrency_limit=2, max_size=64)
    app.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        auth_message="anomalens: sign in" if auth else None,
        show_error=True,
        max_file_size=f"{settings.max_upload_mb}mb",
        allowed_paths=allowed_paths(settings),
        prevent_thread_lock=not block,
        quiet=not block,
        footer_links=[],
        ssr_mode=False,
        theme=gr.themes.Soft(),  # its fonts ship with Gradio: the page requests nothing from other hosts (tested)
        css=CSS,
    )
    return app
