"""The UI's Live tab: pick a model and a source, start and stop watching, see the latest frame with its heatmap,
a rolling score chart with the threshold, and the recent events with their clips.

The watching itself is :class:`anomalens.live.Watcher` in a background thread, one per browser session and at
most :data:`MAX_WATCHES` on the server. Sources are confined like every path the UI takes: files and hot
folders under the allowed data folders, streams only from the URL prefixes the server allows
(``ANOMALENS_UI_STREAMS``, comma-separated, e.g. ``rtsp://127.0.0.1:8554/``; none by default), compared parsed:
the same scheme, host and port, and a path under the prefix's (:func:`stream_allowed`).

>>> build(settings, board, lists)       # inside the page's gr.Blocks                # doctest: +SKIP
"""

# no "from __future__ import annotations": Gradio reads the gr.Request annotations at run time
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from anomalens.errors import ConfigError, DataError
from anomalens.ui.common import (DETECTORS, NOT_SCORED_NOTE, ModelLists, UISettings, chosen_run, event_where_text, log,
                                 model_choices, request_key, rounded)
from anomalens.ui.jobs import JobBoard, hold_workspace, new_workspace, release_workspace
from anomalens.ui.security import confine_path, resolve_roots, user_message

STREAMS_ENV = "ANOMALENS_UI_STREAMS"
MAX_WATCHES = 2  # live watches the whole server runs at once (each takes a CPU core when the source is fast)
DEFAULT_PORTS = {"http": 80, "https": 443, "rtsp": 554, "rtsps": 322, "rtmp": 1935}
EVENT_HEADERS = ["#", "start frame", "end frame", "start (s)", "duration (s)", "peak (0.5 = threshold)", "cue", "started at",
                 "where (peak frame)"]


def allowed_streams(environ: dict[str, str] | None = None) -> list[str]:
    environ = os.environ if environ is None else environ
    return [p.strip() for p in environ.get(STREAMS_ENV, "").split(",") if p.strip()]


def resolve_source(settings: UISettings, text: str | None, environ: dict[str, str] | None = None) -> str:
    """A source the server may open: a stream URL or camera under an allowed prefix, else a path confined to
    the allowed data folders."""
    text = (text or "").strip()
    if not text:
        raise DataError("give a source: a video file or hot folder under the data folders, or an allowed stream URL")
    if "://" in text or text.startswith("/dev/"):
        prefixes = allowed_streams(environ)
        if not any(stream_allowed(text, prefix) for prefix in prefixes):
            allowed = ", ".join(prefixes) if prefixes else f"none (the server sets them in {STREAMS_ENV})"
            # the URL in the message as given (as a path it would lose a slash: "rtsp:/host")
            raise DataError(f"{text}: this stream is not allowed on this server; allowed: {allowed}")
        return text
    return str(confine_path(text, settings.data_roots))


def stream_allowed(text: str, prefix: str) -> bool:
    """Whether the stream URL (or camera device) ``text`` lies under the allowed ``prefix``: the same scheme, host
    and port, and a path under the prefix's path, compared parsed rather than as text, so that an allowed
    ``http://cam.local`` does not admit ``http://cam.local@evil/`` (a user name) or ``http://cam.local.evil/``."""
    if any(ch.isspace() or ch == "\\" or ord(ch) < 32 for ch in text):  # parsers disagree on these: never allowed
        return False
    if "://" not in prefix:  # a device: itself, or what lies in a folder given with a trailing slash
        return text == prefix or (prefix.endswith("/") and text.startswith(prefix) and _plain_path(text))
    try:
        url, allowed = urlsplit(text), urlsplit(prefix)
        same_place = (url.scheme.lower() == allowed.scheme.lower() and url.hostname is not None
                      and url.hostname == allowed.hostname and _port(url) == _port(allowed))
    except ValueError:  # a port that is not a number, a malformed IPv6 address
        return False
    if not same_place or url.fragment or not _plain_path(url.path):
        return False
    base = allowed.path or "/"
    return url.path == base.rstrip("/") or url.path.startswith(base if base.endswith("/") else base + "/")


def _port(url: SplitResult) -> int | None:
    return url.port if url.port is not None else DEFAULT_PORTS.get(url.scheme.lower())


def _plain_path(path: str) -> bool:
    """No ``..`` segment (also percent-encoded): a path under the prefix stays under it."""
    return ".." not in unquote(path).split("/")


@dataclass
class _Watch:
    watcher: Any
    thread: threading.Thread
    output: Path
    error: str | None = None
    clip_shown: str | None = None


@dataclass
class _Start:
    """A start in progress for one page: loading its model, not yet registered."""

    holds_slot: bool = False  # past the slot check: it counts against MAX_WATCHES
    cancelled: bool = False  # Stop pressed or the page closed meanwhile: the watch must not begin


class WatchStarting(ConfigError):
    """The page pressed Start while its previous Start is still loading the model (a double click)."""


class LiveWatches:
    """The running watches, one per browser session.

    Every watch whose thread still runs counts against :data:`MAX_WATCHES`, also one that was replaced or closed
    but has not ended yet (``retired``), and so does a start past the slot check that is still loading its model.
    One start per page at a time (``starting``), so that two presses of Start cannot both register a watch for the
    same page, the second overwriting the first, which then ran on where nothing could stop or count it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.watches: dict[str, _Watch] = {}
        self.starting: dict[str, _Start] = {}
        self.retired: list[_Watch] = []

    def running(self) -> int:
        """Watches that take a slot now (call with ``lock`` held)."""
        self.retired = [w for w in self.retired if w.thread.is_alive()]
        return (sum(w.thread.is_alive() for w in self.watches.values()) + len(self.retired)
                + sum(s.holds_slot for s in self.starting.values()))

    def start(self, settings: UISettings, key: str, run_dir: str | None, source: str | None) -> str:
        from anomalens.live import Watcher, WatchSettings

        source = resolve_source(settings, source)
        run = chosen_run(settings, run_dir)
        with self.lock:
            if key in self.starting:
                raise WatchStarting("this page's watch is still starting; press Start again once it runs to restart it")
            pending = self.starting[key] = _Start()
            previous = self._retire(key)
        output = None
        try:
            if previous is not None:  # Start again: the page's running watch makes way for the new one
                _halt(previous)
            with self.lock:
                running = self.running()
                if running >= MAX_WATCHES:
                    raise ConfigError(f"{running} live watches already run on this server; stop one first")
                pending.holds_slot = True  # the slot is reserved until the watch runs or the start fails
            detector = DETECTORS.get(run, settings.device, _kind(run))
            output = new_workspace(settings.sessions_dir, key, "live")
            hold_workspace(output)  # the size trim leaves its clips alone while it runs
            # a file is played at its own rate, as a camera would deliver it
            watcher = Watcher(detector, _open(settings, source), output, settings=WatchSettings(realtime=True),
                              device=settings.device)
            thread = threading.Thread(target=lambda: self._run(watch), name="anomalens-live", daemon=True)
            watch = _Watch(watcher, thread, output)
            with self.lock:
                if pending.cancelled:  # stopped or closed while the model loaded: nothing may run for this page
                    release_workspace(output)
                    return "Stopped before the watch began."
                self.watches[key] = watch
                watch.thread.start()
        except BaseException:
            if output is not None:
                release_workspace(output)
            raise
        finally:
            with self.lock:
                self.starting.pop(key, None)
        return f"Watching `{source}` with **{detector.name}**…"

    def _retire(self, key: str) -> _Watch | None:
        """Take the page's watch off the table (call with ``lock`` held); a running one stays counted until it ends."""
        watch = self.watches.pop(key, None)
        if watch is not None and watch.thread.is_alive():
            self.retired.append(watch)
        return watch

    def _run(self, watch: _Watch) -> None:
        try:
            watch.watcher.run()
        except Exception as exc:  # shown in the page, not lost in a thread
            watch.error = user_message(exc)
        finally:
            release_workspace(watch.output)

    def stop(self, key: str) -> bool:
        """Stop the page's watch (its last view stays shown); a start still loading its model will not begin.
        True when a watch was running."""
        with self.lock:
            watch = self.watches.get(key)
            if key in self.starting:
                self.starting[key].cancelled = True
        if watch is None or not watch.thread.is_alive():
            return False
        _halt(watch)
        return True

    def close(self, key: str) -> bool:
        """The session's page was closed: stop its watch and forget it (no page is left to stop it or to show it).
        True when a watch was running."""
        with self.lock:
            if key in self.starting:
                self.starting[key].cancelled = True
            watch = self._retire(key)
        if watch is None or not watch.thread.is_alive():
            return False
        _halt(watch)
        return True

    def view(self, key: str) -> dict[str, Any]:
        """What the page shows: status text, the latest overlay, the recent scores, event rows and the newest clip."""
        with self.lock:
            watch = self.watches.get(key)
        if watch is None:
            return {"status": "Not watching. Pick a model and a source, then **Start**.", "image": None, "scores": [],
                    "events": [], "clip": None}
        state = watch.watcher.state
        image = state.latest_overlay()
        with state.lock:
            status = dict(state.status)
            scores = list(state.scores)
            messages = list(state.events)
        rows, clip = [], None
        for m in messages:
            if m.get("type") == "anomaly":
                rows.append([m.get("id"), m.get("start_frame"), m.get("end_frame"), m.get("start_time"), m.get("duration"),
                             rounded(m.get("peak_normalized_score"), 3), m.get("main_cue", ""), m.get("started_at"),
                             event_where_text(m)])
                path = watch.output / m["clip"] if m.get("clip") else (watch.output / m["overlay"] if m.get("overlay") else None)
                if path is not None and path.is_file() and path.suffix == ".mp4":
                    clip = str(path)
            elif m.get("type") == "source_lost":
                rows.append(["lost", "", m.get("after_frame"), "", m.get("seconds"), "", m.get("reason", ""), m.get("lost_at"), ""])
        if clip == watch.clip_shown:
            clip = None  # unchanged: the page keeps playing what it shows
        else:
            watch.clip_shown = clip
        running = watch.thread.is_alive()
        text = (f"**{'Watching' if running else 'Stopped'}** `{status.get('source', '')}` · "
                f"{status.get('frames_scored', 0)} frames scored · {status.get('fps_scored', 0)} fps · "
                f"{status.get('frames_dropped', 0)} dropped · median latency {status.get('latency_ms_p50') or 0} ms · "
                f"{status.get('events', 0)} event(s)" + (" · **event open**" if status.get("open_event") else ""))
        if watch.error:
            text = f"**Error:** {watch.error}"
        return {"status": text, "image": image, "scores": scores, "events": rows[::-1], "clip": clip}


def _halt(watch: _Watch) -> None:
    watch.watcher.stop()
    watch.thread.join(timeout=30)  # a watch that does not end by then stays counted (LiveWatches.retired)


def _open(settings: UISettings, source: str) -> Any:
    """The source for the watcher: a hot folder confined to the data folders file by file (a link inside it that
    leads elsewhere is skipped), else the spec as given (a stream, a camera or a video file, already checked)."""
    from anomalens.live.sources import FolderSource

    path = Path(source)
    if "://" not in source and not source.startswith("/dev/") and path.is_dir():
        return FolderSource(path, allowed_roots=resolve_roots(settings.data_roots),
                            log=lambda message: log.warning("live: %s", message))
    return source


def _kind(run: Path) -> str:
    from anomalens.workflows.runs import read_model_config

    return read_model_config(run).get("kind", "image")


WATCHES = LiveWatches()


def build(settings: UISettings, board: JobBoard, lists: ModelLists) -> None:
    """The tab's layout and wiring (inside a ``gr.Blocks``); watches run apart from the job board's lanes."""
    import gradio as gr
    import pandas as pd

    def chart(scores: list[tuple[int, float]]) -> Any:
        if not scores:  # both series from the start: the chart fixes its colours on the first value
            scores = [(0, 0.0)]
        frames = [f for f, _ in scores]
        return pd.DataFrame({
            "frame": frames + [frames[0], frames[-1]],
            "score": [s for _, s in scores] + [0.5, 0.5],
            "series": ["normalised score"] * len(scores) + ["threshold", "threshold"],
        })

    with gr.Tab("Live", id="live"):
        gr.Markdown("Watch a video file (played at its own rate), a hot folder of images, or a stream the server "
                    "allows. Events open when the normalised score crosses **0.5** (the model's threshold).")
        with gr.Row():
            options = model_choices(settings, "image") + model_choices(settings, "video")
            model = gr.Dropdown(label="Model", choices=options, value=options[0][1] if options else None, scale=4,
                                elem_id="live-model")
            refresh_models = gr.Button("↻", scale=0, size="sm")
            source = gr.Textbox(label="Source: a file or folder under the data folders, or an allowed stream URL",
                                scale=5, elem_id="live-source")
        with gr.Row():
            start = gr.Button("Start", variant="primary", elem_id="live-start")
            stop = gr.Button("Stop", elem_id="live-stop")
        status = gr.Markdown("Not watching.", elem_id="live-status")
        with gr.Row():
            frame = gr.Image(label="Latest frame with its heatmap", type="numpy", elem_id="live-frame", height=320,
                             image_mode="RGB")
            plot = gr.LinePlot(chart([]), x="frame", y="score", color="series", y_lim=[0, 1],
                               label="Normalised score (threshold 0.5)", elem_id="live-chart", height=320)
        events = gr.Dataframe(headers=EVENT_HEADERS, label=f"Recent events (newest first; {NOT_SCORED_NOTE})", elem_id="live-events",
                              interactive=False)
        clip = gr.Video(label="Latest event clip", elem_id="live-clip", height=360)
        timer = gr.Timer(1.0, active=False)

        def on_start(run_dir, text, request: gr.Request):
            try:
                message = WATCHES.start(settings, request_key(request), run_dir, text)
                return message, gr.Timer(active=True)
            except WatchStarting as exc:  # a double click: the first press's watch goes on, and its refresh with it
                return f"**Note:** {user_message(exc)}", gr.skip()
            except Exception as exc:
                return f"**Error:** {user_message(exc)}", gr.Timer(active=False)

        def refresh(request: gr.Request):
            view = WATCHES.view(request_key(request))
            clip_value = gr.skip() if view["clip"] is None else view["clip"]
            return view["status"], view["image"], chart(view["scores"]), view["events"], clip_value

        def on_stop(request: gr.Request):
            WATCHES.stop(request_key(request))
            return refresh(request) + (gr.Timer(active=False),)

        def models(current):
            choices = model_choices(settings, "image") + model_choices(settings, "video")
            values = [value for _, value in choices]
            return gr.update(choices=choices, value=current if current in values else (values[0] if values else None))

        refresh_models.click(models, [model], [model])
        start.click(on_start, [model, source], [status, timer], concurrency_limit=None)
        stop.click(on_stop, None, [status, frame, plot, events, clip, timer], concurrency_limit=None)
        timer.tick(refresh, None, [status, frame, plot, events, clip], concurrency_limit=None, show_progress="hidden")
