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
from anomalens.ui.jobs import CLOSE_WAIT_S, JOBS, JobBoard, prune_workspaces, remove_session
from anomalens.ui.tabs import evaluate, help, inspect, live, train, video
from anomalens.ui.tabs.train import prune_uploads

log = logging.getLogger("anomalens.ui")

# The tabs in page order; each module has build(settings, board, lists).
TABS = (inspect, video, train, evaluate, help, live)

CSS = """
.gradio-container {max-width: 1480px !important}
#al-header h1 {margin-bottom: 0}
#al-header p {margin-top: 2px; opacity: .75}
.al-summary {font-size: 1.05em}
#train-status {min-height: 96px}
/* gallery captions wrap instead of ending in "…", so that each row of the table finds its image */
#image-gallery .caption-label, #eval-timelines .caption-label {white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; max-width: 100% !important}
/* the gallery's label sits above the thumbnails, not over the first row */
#image-gallery .grid-wrap, #eval-timelines .grid-wrap {padding-top: 28px}
"""


def build_app(settings: UISettings, board: JobBoard = JOBS) -> Any:
    """The whole page as a ``gr.Blocks``; nothing runs until it is launched. ``board``: where the tabs' jobs
    register; closing a page (:func:`close_session`) looks for its jobs on the same board."""
    import gradio as gr

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
    """Files the page may serve beyond what its views return: the example inputs, one by one.

    Never a folder: not the results folder (weights, configs, logs), not the per-session outputs (Gradio
    copies what a view returns into its own cache and serves that copy), not the data folders.
    """
    return sorted({str(Path(p).resolve()) for p in settings.image_examples + settings.video_examples})


def close_session(settings: UISettings, key: str, board: JobBoard = JOBS, wait_s: float = CLOSE_WAIT_S) -> bool:
    """A browser session ended (its page was closed or reloaded): stop its live watch and its running analyses,
    then delete its outputs. True when they are gone now, False when the deletion waits for a job to end.

    The watch first: a hot folder or a stream never ends by itself, and no later page can stop it (a reload is a
    new session), so it would hold one of the server's few watch slots until the server stops. Then the page's
    inspections, video analyses and evaluations are cancelled (no one can see their results any more) and awaited
    for up to ``wait_s``: deleting the folder under a running job made it fail, or recreate the folder and leave it
    behind. A training goes on: its model is saved in the results folder, for every page."""
    live.WATCHES.close(key)
    return board.close_session(key, lambda: remove_session(settings.sessions_dir, key), wait_s)


def launch(
    settings: UISettings,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: tuple[str, str] | None = None,
    block: bool = True,
) -> Any:
    """Start the server (queue on, errors shown as one line, upload limit, no outgoing network).

    Files: each session's outputs go to a private folder outside the results folder, removed when its page
    closes (and all of them kept under a size cap); Gradio serves only the copies it makes of what a view
    returned. Login: failed attempts are slowed down (:class:`LoginThrottle`) and Gradio's routes that
    answer without a login are closed (:class:`LoginGate`); no run history is recorded. No outgoing requests:
    file routes naming a URL and inputs whose file is a URL are refused (:class:`NoRemoteFiles`). A host beyond
    loopback without a login raises :class:`~anomalens.errors.ConfigError`.
    """
    from anomalens.ui.security import require_login_beyond_loopback

    require_login_beyond_loopback(host, auth)
    for name, value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_OFFLINE", "1"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
        os.environ.setdefault(name, value)
    import atexit
    import dataclasses
    import shutil

    import gradio as gr
    from starlette.middleware import Middleware

    from anomalens.ui.common import request_key
    from anomalens.ui.security import (LoginGate, LoginThrottle, NoRemoteFiles, remove_dead_servers_roots,
                                       served_sessions_root)

    if settings.sessions_root is None:
        try:  # housekeeping: the folders of servers killed before their exit handler ran (SIGKILL, a crash)
            gone = remove_dead_servers_roots()
        except OSError as exc:
            log.warning("could not look for the output folders of stopped servers: %s", exc)
            gone = 0
        if gone:
            log.info("removed the output folders of %d servers that are no longer running", gone)
        settings = dataclasses.replace(settings, sessions_root=served_sessions_root())
        atexit.register(shutil.rmtree, settings.sessions_root, ignore_errors=True)
    settings.sessions_dir.mkdir(parents=True, exist_ok=True)
    removed = prune_workspaces(settings.sessions_dir)
    if removed:
        log.info("removed %d UI output folders older than a week", removed)
    try:  # housekeeping: a folder it cannot read must not keep the page from starting
        removed = prune_uploads(settings.results_dir)
    except OSError as exc:
        log.warning("could not look for unused uploaded datasets: %s", exc)
        removed = 0
    if removed:
        log.info("removed %d uploaded training datasets that no model uses any more", removed)
    app = build_app(settings)

    def end_session(request):  # the page was closed: its watch and analyses stop, then its outputs go
        close_session(settings, request_key(request))

    end_session.__annotations__ = {"request": gr.Request}  # a real class, not a postponed string: Gradio injects it
    with app:
        app.unload(end_session)
    app.delete_cache = (3600, 6 * 3600)  # Gradio's served copies: removed after six hours, and on shutdown
    app.queue(default_concurrency_limit=2, max_size=64)
    blocked = [str(settings.results_dir), *map(str, settings.data_roots)]
    examples = [Path(p) for p in allowed_paths(settings)]
    app.launch(
        server_name=host,
        server_port=port,
        auth=LoginThrottle(*auth).check if auth else None,
        auth_message="anomalens: sign in" if auth else None,
        show_error=True,
        max_file_size=f"{settings.max_upload_mb}mb",
        allowed_paths=allowed_paths(settings),
        blocked_paths=[p for p in blocked if not settings.sessions_dir.is_relative_to(p)
                       and not any(e.is_relative_to(p) for e in examples)],
        app_kwargs={"middleware": [Middleware(LoginGate), Middleware(NoRemoteFiles)], "openapi_url": None, "docs_url": None, "redoc_url": None},
        run_history=False,
        prevent_thread_lock=not block,
        quiet=not block,
        footer_links=[],
        ssr_mode=False,
        theme=gr.themes.Soft(),  # its fonts ship with Gradio: the page requests nothing from other hosts (tested)
        css=CSS,
    )
    return app
