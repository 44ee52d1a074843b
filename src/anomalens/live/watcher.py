"""The live watcher: a source's frames through a bounded queue into a causal scorer, events out to the sinks.

Five threads share the work so that the scorer only scores. The reader (:mod:`~anomalens.live.reader`) decodes,
resizes each frame to the model's input and hands it to the clip writer (:mod:`~anomalens.live.clips`, every
decoded frame, so clips play in real time) and to a bounded queue that drops frames from a live source when the
scorer falls behind. A feature thread takes up to ``batch_size`` waiting frames at a time through the first half
of the scorer (backbone and motion; after a drop, motion is measured from the frame decoded just before, not
across the gap; after a break in the source it starts afresh) while the scorer thread runs the second half
(memories, smoothing, events) on the batch before. Messages go to the sinks from a publisher thread
(:mod:`~anomalens.live.publisher`). Inside these threads each library (torch, ONNX Runtime, faiss, OpenCV) runs
``threads`` threads of its own (default 1).

Each scored frame goes to the :class:`~anomalens.live.events.EventTracker` (with its own time where a file's
timestamps give one: a variable frame rate times the events as ``analyze-video`` does); an event is announced
(``anomaly_started``) once it spans ``min_length`` frames and published in full (``anomaly``, the fields of
``analyze-video``'s events.json plus the cue, wall-clock times and its clip or overlay) when it closes. A gap
in a stream becomes a ``source_lost`` message; an event open when the stream drops is closed then
(``"closed_by": "source_lost"``, published before the gap's ``source_lost``), and scoring starts afresh when it
is back (a new causal scorer: no smoothing or motion across the outage). A hot folder's scored files are kept in ``hot_folder_state.json`` in the output
folder, so that a watch restarted into it scores only the files that are new or changed. Figures (fps in and
scored, dropped, latency, the open event) go to ``status.json`` once a second (:mod:`~anomalens.live.status`) and
to :attr:`Watcher.state` for the UI (:mod:`~anomalens.live.state`).

>>> watcher = Watcher("results/video_line3", "rtsp://127.0.0.1:8554/live", "watch_out")   # doctest: +SKIP
>>> summary = watcher.run()          # until the stream is stopped or watcher.stop() is called    # doctest: +SKIP
"""

from __future__ import annotations

import math
import queue
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from anomalens.errors import CheckpointError, ConfigError
from anomalens.live.clips import ClipWriter
from anomalens.live.events import EventTracker, Transition
from anomalens.live.publisher import Publisher
from anomalens.live.reader import Break, FrameReader, QueuedFrame, steady_memory
from anomalens.live.scoring import frame_scorer
from anomalens.live.settings import WatchSettings
from anomalens.live.sinks import EventLog, FrameLog, Sink, last_event_id
from anomalens.live.sources import (FolderSource, Source, SourceGap, VideoFileSource, load_folder_state, open_source,
                                    save_folder_state)
from anomalens.live.state import WatchState
from anomalens.live.status import WatchFigures, iso_time, status_text
from anomalens.metrics.events import EVENT_MERGE_SECONDS, main_cue, video_event_regions
from anomalens.metrics.regions import event_regions
from anomalens.models.base import BaseDetector
from anomalens.models.video.base import CausalScorer
from anomalens.runtime import atomic_path, library_threads, resolve_device, write_json_atomic
from anomalens.visualization.overlays import overlay
from anomalens.workflows.reports import score_cell
from anomalens.workflows.runs import load_detector

STATUS_INTERVAL_S = 1.0


class Watcher:
    """Watch one source with one model until the source ends or :meth:`stop` is called (see the module doc)."""

    def __init__(
        self,
        checkpoint: str | Path | BaseDetector,
        source: str | Source,
        output_dir: str | Path | None = None,
        *,
        sinks: list[Sink] | tuple[Sink, ...] = (),
        settings: WatchSettings | None = None,
        device: str = "auto",
        log: Callable[[str], None] | None = None,
        status_line: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = s = settings or WatchSettings()
        self.release_memory = steady_memory()
        self.log = log or (lambda message: None)
        self.status_line = status_line
        self.detector = checkpoint if isinstance(checkpoint, BaseDetector) else load_detector(checkpoint, device=resolve_device(device))
        if self.detector.calibration_ is None:
            raise CheckpointError("this model has no threshold (it was never fitted with validation data)")
        self.calibration = self.detector.calibration_
        self.output = Path(output_dir) if output_dir is not None else None
        self.sinks: list[Sink] = list(sinks)
        self.gaps: queue.Queue[SourceGap] = queue.Queue()  # filled by the source's thread when a stream is back
        # gaps not reported yet, and the last frame before the latest break the scorer has handled: a gap's
        # source_lost waits for its break, so that the event the break closed is published first
        self.unreported: deque[SourceGap] = deque()
        self.handled_break = -1
        if isinstance(source, Source):  # a source of the caller's own (a test pattern, a frame grabber's SDK)
            self.source = source
        else:
            self.source = open_source(source, realtime=s.realtime, on_lost=self.gaps.put, log=self.log)
        self.source_spec = self.source.name
        self.per_image = self.source.kind == "folder" and self.detector.kind == "image"
        self._check_event_settings()
        self.scorer = frame_scorer(self.detector, s.lookahead_for(self.source.live))
        self.stopping = threading.Event()
        self.reader = FrameReader(self.source, self.detector.preprocessing.prepare_array, s.queue_size, s.max_latency,
                                  self.stopping, self._clip_frame, self.log)
        self.state = WatchState(calibration=self.calibration)
        self.scored = 0  # written by the scorer's thread only
        self.clips: ClipWriter | None = None  # created by the reader once the stream's frame rate is known
        self.event_count = 0  # events of this watch
        self.first_event_id = 0  # numbers before it: taken by an earlier watch into the same output folder
        self.frame_log: FrameLog | None = None
        # a hot folder's files scored (name -> (size, mtime_ns)), kept in the output folder across restarts
        self.folder_files: dict[str, tuple[int, int]] = {}
        self.folder_changed = self.folder_save_failed = False
        self.folder_saved_at = float("-inf")  # time.monotonic() of the last save of the hot folder's state
        if self.output is not None:
            (self.output / "events").mkdir(parents=True, exist_ok=True)
            self.first_event_id = last_event_id(self.output)
            self.sinks.insert(0, EventLog(self.output))
            cues = ["appearance", "motion"] if self.detector.kind == "video" and self.detector.name == "stfeatures" else []
            self.frame_log = FrameLog(
                self.output, ["frame", "arrived", "scored", "score", "normalized_score", "anomalous", *cues, "file"],
                s.csv_rows, s.csv_keep,
            )
            if isinstance(self.source, FolderSource):
                self.folder_files = load_folder_state(self.output, self.source.folder, self.log)
                self.source.skip_unchanged(self.folder_files)
        self.publisher = Publisher(self.sinks, self.state, self.log)

    def _check_event_settings(self) -> None:
        """Refuse event settings a hot folder cannot honour, rather than watch and never report an event."""
        s = self.settings
        if self.per_image and s.min_length != 1:
            # the command shows these as its flags (--min-length, --close-after)
            raise ConfigError(f"min_length {s.min_length}: a hot folder watched with an image model makes "
                              "each anomalous image an event of its own; leave it at 1")
        if self.source.kind == "folder" and s.close_after is not None:
            raise ConfigError(f"close_after {s.close_after:g}: images in a hot folder have no time "
                              "between them; leave it unset")

    @property
    def read(self) -> int:
        return self.reader.read

    @property
    def dropped(self) -> int:
        return self.reader.dropped

    def stop(self) -> None:
        """Ask the watch to end: the source stops, waiting frames are scored, the open event is closed."""
        self.stopping.set()
        self.source.stop()

    # ---- reading ---------------------------------------------------------------------------------
    def _clip_frame(self, index: int, image: np.ndarray, seconds: float | None) -> None:
        """Every decoded frame of a stream or file goes to the clip writer (on the reader's thread)."""
        if self.output is None or self.source.kind == "folder":
            return
        if self.clips is None:  # the stream's rate is known once it delivered a frame
            s, fps = self.settings, self.source.fps or self.fps
            lead = round(s.max_latency * fps) + s.queue_size + s.batch_size + self.scorer.delay_frames + s.min_length
            self.clips = ClipWriter(fps, s.clip_before, s.clip_after, s.clip_max, s.clip_width, lead, self.log)
        self.clips.add(index, image, seconds)

    # ---- the loop --------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Watch until the source ends or :meth:`stop`; returns the final status figures."""
        with library_threads(self.settings.threads):
            return self._watch()

    def _watch(self) -> dict[str, Any]:
        s = self.settings
        self.started = time.monotonic()  # uptime and rates: a wall-clock step must not change them
        self.index = -1
        self.pending: deque[QueuedFrame] = deque()
        self.fps = self.source.fps
        self.tracker: EventTracker | None = None
        # the scorer in two stages on two threads: the next batch's backbone and motion while this one is scored;
        # each batch with the scorer that made its features (a break in the source starts a new one)
        self.prepared: queue.Queue[tuple[list[QueuedFrame], Any, CausalScorer] | tuple[Break, CausalScorer] | None] = \
            queue.Queue(maxsize=1)
        self.stage_error: BaseException | None = None
        self.scoring_done = threading.Event()
        self.figures = WatchFigures(self.started)
        threads = [threading.Thread(target=self.reader.run, name="anomalens-reader", daemon=True),
                   threading.Thread(target=self._features, name="anomalens-features", daemon=True)]
        for thread in threads:
            thread.start()
        self.publisher.start()
        next_status = time.monotonic()
        try:
            while True:
                try:
                    item = self.prepared.get(timeout=0.2)
                except queue.Empty:
                    item = ()
                self._report_gaps()  # before the frames after a gap: its message comes before their events
                if item is None:
                    break
                if len(item) == 3:
                    self._score(*item)
                elif item:
                    self._source_lost(*item)
                if time.monotonic() >= next_status:
                    self._save_progress(final=False)
                    self._write_status("watching")
                    self.release_memory()
                    next_status = time.monotonic() + STATUS_INTERVAL_S
            if self.stage_error is not None:
                raise self.stage_error
            results = self.scorer.finish()
            self._handle(results)
        finally:
            self.scoring_done.set()
            self.stop()
            self._close_event()
            for thread in threads:
                thread.join(timeout=10)
            self._report_gaps(final=True)
            self.publisher.close(timeout=60)
            if self.clips is not None:  # every clip is complete when run() returns
                self.clips.close(timeout=60)
            for sink in self.sinks:
                try:
                    sink.close(s.sink_timeout)
                except Exception as exc:  # one sink failing to close must not lose the others
                    self.log(f"{sink.name}: {exc}")
            if self.frame_log is not None:
                self.frame_log.close()
            self._save_progress()
            status = self._write_status("stopped")
        return status

    def _features(self) -> None:
        """The first stage: waiting frames in batches through the scorer's :meth:`features` (backbone, motion)."""
        try:
            ended = False
            while not ended:
                batch, ended, lost = self.reader.take(self.settings.batch_size)
                if batch:
                    self._prepare(batch)
                if lost is not None:  # the frames before the break go to the scorer first, then the break
                    scorer = self.scorer
                    self.scorer = frame_scorer(self.detector, self.settings.lookahead_for(self.source.live))
                    while not self._offer((lost, scorer)):
                        pass
        except BaseException as exc:  # the scorer's thread raises it
            self.stage_error = exc
        finally:
            while not self._offer(None):
                pass

    def _prepare(self, batch: list[QueuedFrame]) -> None:
        """One batch through the first half of the scorer, queued for the second."""
        steps, before = [], []
        for frame in batch:
            # > 1 after dropped frames; 0 after a break in the source (motion starts afresh)
            step = 0 if frame.resumed else max(1, frame.index - self.index)
            steps.append(step)
            # after a drop, the motion comes from the frame decoded just before, not from across the gap
            before.append(frame.before if step > 1 else None)
            self.index = frame.index
            frame.before = None
            self.pending.append(frame)
        # the source's rate as it knows it now (a stream's once connected): motion per second of training footage
        self.scorer.set_rate(self.source.stated_fps)
        with torch.no_grad():
            features = self.scorer.features(torch.stack([frame.tensor for frame in batch]), steps, before)
        while not self._offer((batch, features, self.scorer)):
            pass

    def _offer(self, item: tuple[list[QueuedFrame], Any, CausalScorer] | tuple[Break, CausalScorer] | None) -> bool:
        try:
            self.prepared.put(item, timeout=0.5)
            return True
        except queue.Full:  # the scorer is busy; once it has stopped taking for good, give up rather than hang
            return self.scoring_done.is_set()

    def _score(self, batch: list[QueuedFrame], features: Any, scorer: CausalScorer) -> None:
        s = self.settings
        if self.tracker is None:  # the stream's rate is known once it delivered a frame
            self.fps = self.source.fps or self.fps
            if self.source.stated_fps is None and self.source.kind != "folder":
                self.log(f"{self.source.name}: states no frame rate: times assume {self.fps:g} fps and motion is "
                         "measured per frame as it comes")
            cal = self.calibration
            close_level = cal.threshold + cal.scale * math.log(s.close_level / (1 - s.close_level))
            gap = EVENT_MERGE_SECONDS if s.close_after is None else s.close_after  # default: analyze-video's merge gap
            close_after = 0 if self.source.kind == "folder" else max(1, round(gap * self.fps))
            self.tracker = EventTracker(cal.threshold, min(close_level, cal.threshold), self.fps, close_after, s.min_length)
        with torch.no_grad():
            results = scorer.score(features)
        now = time.monotonic()
        for frame in batch:
            frame.processed = now
        self._handle(results)

    def _source_lost(self, lost: Break, scorer: CausalScorer) -> None:
        """The stream dropped after frame ``lost.after_frame``: the frames the scorer still held for its look-ahead
        are scored with what came before, and an open event is closed now, where it ended (it would otherwise stay
        open through the outage and merge with what comes after it)."""
        with torch.no_grad():
            self._handle(scorer.finish())
        if self.tracker is not None:
            if self.tracker.current is not None:
                self.tracker.current.extra.update(closed_by="source_lost", ended_at=lost.lost_at)
            for transition in self.tracker.finish():
                self._transition(transition)
        if self.clips is not None:  # no clip runs on across the outage
            self.clips.cut(lost.after_frame)
        self.handled_break = max(self.handled_break, lost.after_frame)
        self._report_gaps()  # the gap's message, if the stream is back already: after the event it closed

    def _handle(self, results) -> None:
        cal = self.calibration
        for result in results:
            item = self.pending.popleft()
            now, wall = time.monotonic(), time.time()
            self.scored += 1
            self.figures.scored(item.clock, item.processed or now, now)
            normalized = float(cal.normalize(result.score))
            anomalous = bool(cal.is_anomalous(result.score))  # a NaN too, as the events count it
            if self.frame_log is not None:
                self.frame_log.write([  # a frame that could not be scored: empty cells, as in every CSV
                    item.index, f"{item.arrived:.3f}", f"{wall:.3f}", score_cell(result.score, ".6g"),
                    score_cell(normalized, ".4f"), int(anomalous),
                    *(score_cell(v, ".6g") for v in result.cues.values()), item.file or "",
                ])
            assert self.tracker is not None
            # kept by the tracker should this frame be its event's peak: the message's cues, regions and images
            peak = {"cues": result.cues, "image": item.image, "map": result.map, "file": item.file}
            transitions = self.tracker.update(item.index, result.score, item.time, peak)
            event = self.tracker.current
            if event is not None and item.index >= event.start and not event.extra:  # the open event's first frame
                event.extra.update(first_clock=item.clock, started_at=iso_time(item.arrived), file=item.file)
            if self.per_image:  # images from a hot folder: each anomalous image is an event of its own
                transitions += self.tracker.finish()
            for transition in transitions:
                self._transition(transition)
            if item.stamp is not None and self.output is not None:
                name, size, mtime = item.stamp
                self.folder_files[name], self.folder_changed = (size, mtime), True
            with self.state.lock:
                self.state.scores.append((item.index, normalized))
                self.state.image, self.state.heatmap = item.image, result.map

    # ---- events ----------------------------------------------------------------------------------
    def _base_message(self, kind: str) -> dict[str, Any]:
        # message_id: unique to this message, the same in every sink and on every retry, so that a receiver can drop
        # the copies that at-least-once delivery may bring (MQTT QoS 1 after a reconnect, a webhook answer lost)
        return {"type": kind, "message_id": uuid.uuid4().hex, "source": self.source_spec, "model": self.detector.name,
                "fps": self.fps, "threshold": self.calibration.threshold}

    def _transition(self, transition: Transition) -> None:
        event = transition.open_event
        if transition.kind == "started":
            self.event_count += 1
            number = event.extra["id"] = self.first_event_id + self.event_count
            delay = time.monotonic() - event.extra["first_clock"]
            self.figures.announce_delays.append(delay)
            message = self._base_message("anomaly_started")
            message.update(id=number, start_frame=event.start, start_time=round(self.tracker.start_time(event), 4),
                           started_at=event.extra.get("started_at"), detection_delay_s=round(delay, 3))
            if event.extra.get("file"):
                message["file"] = event.extra["file"]
            if self.clips is not None:
                clip = self.output / "events" / f"event_{number:05d}.mp4"  # type: ignore[operator]
                # a clip still recording (an event a few seconds before) is shared rather than a second one opened
                event.extra["clip"], event.extra["clip_first_frame"] = self.clips.start(number, clip, event.start)
            self._publish(message)
            return
        record = dict(transition.event)
        message = self._base_message("anomaly")
        message.update(id=event.extra.get("id", self.first_event_id + self.event_count), **record)
        message["peak_normalized_score"] = float(self.calibration.normalize(record["peak_score"]))
        peak = event.peak_data or {}
        cues = peak.get("cues") or {}
        if cues:  # which cue made the peak, as analyze-video says it
            message["peak_cues"] = {name: round(float(v), 4) for name, v in cues.items()}
            message["main_cue"] = main_cue({name: float(v) for name, v in cues.items()})
        message["started_at"] = event.extra.get("started_at")
        # closed by a drop of the source: it ended when the last frame came, not when the drop was noticed
        message["ended_at"] = iso_time(event.extra.get("ended_at") or time.time())
        if event.extra.get("closed_by"):
            message["closed_by"] = event.extra["closed_by"]
        if event.extra.get("file"):
            message["file"] = event.extra["file"]
            message["peak_file"] = peak.get("file")
        if event.extra.get("clip") is not None and self.clips is not None:
            self.clips.end(event.extra["id"], record["end_frame"])
            message["clip"] = str(event.extra["clip"].relative_to(self.output))
            message["clip_first_frame"] = event.extra["clip_first_frame"]
        if peak.get("map") is not None and peak.get("image") is not None:
            # where: the peak frame's regions in its own pixels, as predict and analyze-video give them (not for a
            # video model saved before its map could place events)
            size, raw_map, level = peak["image"].shape[:2], peak["map"], self.calibration.region_threshold()
            if self.detector.kind == "image":
                message.update(event_regions(raw_map, level, size))
            elif getattr(self.detector, "map_places_events", False):
                message.update(video_event_regions(raw_map, level, size))
        saving = None
        # an image model's anomalous frame, or a hot folder's peak image (it has no clip), is saved with its overlay
        evidence = self.detector.kind == "image" or self.source.kind == "folder"
        if self.output is not None and evidence and peak.get("image") is not None:
            number, image, raw_map = message["id"], peak["image"], peak["map"]
            saving = lambda: self._save_overlay(number, image, raw_map)  # noqa: E731 - PNGs written off the scorer
        self._publish(message, saving)

    def _save_overlay(self, number: int, image: np.ndarray, raw_map: np.ndarray) -> dict[str, str]:
        assert self.output is not None
        names = {"image": f"events/event_{number:05d}.png", "overlay": f"events/event_{number:05d}_overlay.png"}
        views = {"image": image, "overlay": overlay(image, self.calibration.normalize(raw_map.astype(np.float32)))}
        for key, view in views.items():
            with atomic_path(self.output / names[key]) as tmp:  # never a half-written PNG
                Image.fromarray(view).save(tmp, format="PNG")
        return names

    def _close_event(self) -> None:
        if self.tracker is None:
            return
        if self.tracker.current is not None:
            self.tracker.current.extra["closed_by"] = "stop"
        for transition in self.tracker.finish():
            self._transition(transition)

    def _report_gaps(self, final: bool = False) -> None:
        """A ``source_lost`` message for each gap the stream reported, once the scorer has handled the break
        before it (the source reports a gap when it is back, which can be before the scorer reaches the break
        queued with the frames). A gap after frame ``n`` follows the break after frame ``n``, if there was one
        (a connection that brought no frame has none: the break before it covers it). ``final``: the watch is
        ending and every gap goes now, after the open event was closed."""
        while True:
            try:
                self.unreported.append(self.gaps.get_nowait())
            except queue.Empty:
                break
        while self.unreported and (final or self.unreported[0].after_frame <= self.handled_break):
            gap = self.unreported.popleft()
            message = self._base_message("source_lost")
            seconds = gap.ended - gap.started if gap.seconds is None else gap.seconds
            message.update(lost_at=iso_time(gap.started), back_at=iso_time(gap.ended), seconds=round(seconds, 3),
                           reason=gap.reason, after_frame=gap.after_frame, reconnected=gap.reconnected)
            self._publish(message)

    def _publish(self, message: dict[str, Any], saving: Callable[[], dict[str, Any]] | None = None) -> None:
        """Hand a message to the publisher thread (``saving``: files to write first, whose names join it)."""
        self.publisher.publish(message, saving)

    # ---- status ----------------------------------------------------------------------------------
    def _save_progress(self, final: bool = True) -> None:
        """Once a second and at the end: the per-frame CSV on disk (at most a second behind, even when no further
        row comes) and the hot folder's scored files (only those still in the folder), atomically. The state is
        rewritten whole on the scoring thread, so a large one is saved less often (every ``len / 5000`` seconds:
        10 s at 50,000 files, about 0.1 s of CPU each): a crash then scores at most that many seconds' files again."""
        if self.frame_log is not None:
            self.frame_log.flush()
        if self.output is None or not isinstance(self.source, FolderSource) or not self.source.listings:
            return  # before the first listing nothing says which files are still there
        if not final and time.monotonic() - self.folder_saved_at < max(1.0, len(self.folder_files) / 5000):
            return
        self.folder_saved_at = time.monotonic()
        listed = self.source.listed
        gone = [name for name in self.folder_files if name not in listed]
        if self.folder_changed or gone:
            for name in gone:
                del self.folder_files[name]
            try:
                save_folder_state(self.output, self.source.folder, self.folder_files)
                self.folder_changed = False
            except OSError as exc:  # a full disk must not stop the watch; tried again next second, logged once
                if not self.folder_save_failed:
                    self.log(f"cannot save the hot folder's state ({exc}); a restart would score its files again")
                self.folder_save_failed = True
            else:
                self.folder_save_failed = False

    def _write_status(self, state: str) -> dict[str, Any]:
        now = time.monotonic()
        event = self.tracker.current if self.tracker is not None else None
        status = {"state": state, "source": self.source_spec, "source_kind": self.source.kind,
                  "model": self.detector.name, "updated_at": iso_time(time.time()),
                  "uptime_s": round(now - self.started, 1)}
        # the last status gives the rates over the whole watch: the last second alone may have read nothing
        status.update(self.figures.report(read=self.reader.read, scored=self.scored, pushed_out=self.reader.pushed_out,
                                          too_late=self.reader.too_late, now=now, whole_run=state == "stopped"))
        status.update({
            "score_delay_frames": self.scorer.delay_frames,
            "open_event": None if event is None or not event.announced else {
                "id": event.extra.get("id"), "start_frame": event.start, "started_at": event.extra.get("started_at")},
            "events": self.event_count,
            "sinks": {sink.name: sink.stats() for sink in self.sinks},
        })
        if self.clips is not None:
            status["clips"] = self.clips.stats()
        if isinstance(self.source, FolderSource):
            status["files_unreadable"] = self.source.unreadable
        if isinstance(self.source, VideoFileSource) and self.source.repaired is not None:  # known once the file ended
            status["timestamps_repaired"] = self.source.repaired
            status["timestamp_restarts"] = self.source.restarts
        if self.reader.error:
            status["source_error"] = self.reader.error
        if self.output is not None:
            write_json_atomic(self.output / "status.json", status)
        with self.state.lock:
            self.state.status = status
        if self.status_line is not None:
            self.status_line(status_text(status))
        return status


def watch(checkpoint: str | Path | BaseDetector, source: str, output_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Watch ``source`` with the model at ``checkpoint`` until it ends; see :class:`Watcher` for the options."""
    return Watcher(checkpoint, source, output_dir, **options).run()
