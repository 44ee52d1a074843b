"""``anomalens watch``: score a live source with a trained model, a thin layer over :mod:`anomalens.live`."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from anomalens.cli.common import check_number, example_epilog
from anomalens.runtime import DEVICE_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    from anomalens.live.settings import LIVE_LOOKAHEAD, WatchSettings
    from anomalens.live.sinks import CSV_FILES_KEPT, CSV_ROWS_PER_FILE, QUEUE_SIZE

    d = WatchSettings()
    watch = subparsers.add_parser(
        "watch", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="watch a camera, stream, video or hot folder live and report anomalous events",
        description="Score every frame of a live source with a trained image or video model and its saved "
                    "threshold; report each anomalous interval (an event) to files, a webhook and/or MQTT as it "
                    "happens. Stops at the end of a file, or on Ctrl-C / SIGTERM (the open event is closed and "
                    "every sink flushed).",
        epilog=example_epilog(
            "anomalens watch --checkpoint results/video_line3 --source rtsp://127.0.0.1:8554/live --output watch_out",
            "anomalens watch --checkpoint results/video_line3 --source line.mp4 --realtime --output watch_out",
            "anomalens watch --checkpoint results/bottle_run --source incoming/ --output watch_out "
            "--webhook http://127.0.0.1:9000/events",
            "anomalens watch --checkpoint results/video_line3 --source /dev/video0 --mqtt 127.0.0.1:1883 "
            "--mqtt-topic line3/anomalies"),
    )
    watch.add_argument("--checkpoint", required=True, type=Path, help="a run folder (or its model/ folder)")
    watch.add_argument("--source", required=True,
                       help="a video file, an rtsp:// or http(s):// stream URL, a V4L2 camera (/dev/videoN), or a "
                            "folder that images are dropped into (hot folder)")
    watch.add_argument("--output", type=Path, default=None,
                       help="folder for events.jsonl, the per-frame CSV, status.json and event clips/images")
    watch.add_argument("--webhook", default=None, help="POST each event as JSON to this http(s) URL")
    watch.add_argument("--mqtt", default=None, metavar="HOST:PORT", help="publish each event to this MQTT broker (QoS 1)")
    watch.add_argument("--mqtt-topic", default="anomalens/events", help="MQTT topic (default: anomalens/events)")
    watch.add_argument("--realtime", action="store_true",
                       help="play a video file at its own frame rate (frames may then be dropped, as from a camera)")
    tuning = watch.add_argument_group("latency and events")
    tuning.add_argument("--queue-size", type=int, default=d.queue_size,
                        help=f"frames waiting for the scorer; more are dropped (default: {d.queue_size})")
    tuning.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"waiting frames scored together (default: {d.batch_size})")
    tuning.add_argument("--threads", type=int, default=d.threads,
                        help="threads of each library (torch, ONNX Runtime, faiss, OpenCV) inside the watch's own "
                             f"reader, feature and scorer threads (default: {d.threads})")
    tuning.add_argument("--max-latency", type=float, default=d.max_latency,
                        help=f"seconds after which a live frame is dropped instead of scored (default: {d.max_latency:g})")
    tuning.add_argument("--lookahead", type=int, default=None,
                        help="frames a video model may wait for its time smoothing (default: "
                             f"{LIVE_LOOKAHEAD} from a stream, camera or --realtime file; for a file read as fast as it "
                             "goes the full kernel, round(4 x temporal_sigma) frames for stfeatures (plus "
                             "temporal_median // 2), which gives analyze-video's scores; 0 = none)")
    tuning.add_argument("--close-level", type=float, default=d.close_level,
                        help="normalised score below which an open event counts as quiet; below 0.5 = hysteresis "
                             f"(default: {d.close_level:g}, the threshold)")
    tuning.add_argument("--close-after", type=float, default=d.close_after,
                        help="seconds of quiet that close an event (default: analyze-video's merge gap; not for a "
                             "hot folder)")
    tuning.add_argument("--min-length", type=int, default=d.min_length,
                        help=f"frames an event must span to be reported (default: {d.min_length}; a hot folder with "
                             "an image model takes only 1: each anomalous image is an event)")
    tuning.add_argument("--clip-before", type=float, default=d.clip_before,
                        help=f"seconds of video saved before an event (default: {d.clip_before:g})")
    tuning.add_argument("--clip-after", type=float, default=d.clip_after,
                        help=f"seconds of video saved after an event (default: {d.clip_after:g})")
    tuning.add_argument("--csv-rows", type=int, default=d.csv_rows,
                        help=f"rows per per-frame CSV file before it rotates (default: {CSV_ROWS_PER_FILE})")
    tuning.add_argument("--csv-keep", type=int, default=d.csv_keep,
                        help=f"per-frame CSV files kept (default: {CSV_FILES_KEPT})")
    tuning.add_argument("--sink-queue", type=int, default=QUEUE_SIZE,
                        help=f"events a webhook/MQTT sink holds while its receiver is away (default: {QUEUE_SIZE})")
    watch.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to compute (default: auto)")
    watch.set_defaults(handler=_watch)


def _watch(args: argparse.Namespace) -> int:
    from anomalens.errors import ConfigError, DataError
    from anomalens.live.sinks import MqttSink, WebhookSink
    from anomalens.live.settings import WatchSettings
    from anomalens.live.watcher import Watcher

    # each flag by name, NaN and infinity first (NaN passes every comparison, infinity breaks the watch's arithmetic)
    for flag in ("--queue-size", "--batch-size", "--min-length", "--threads"):
        check_number(flag, getattr(args, flag[2:].replace("-", "_")), at_least=1)
    check_number("--max-latency", args.max_latency, above=0)
    check_number("--close-level", args.close_level, above=0, at_most=0.5)
    for flag in ("--close-after", "--clip-before", "--clip-after", "--lookahead"):
        check_number(flag, getattr(args, flag[2:].replace("-", "_")), at_least=0)
    if args.output is None and args.webhook is None and args.mqtt is None:
        raise ConfigError("nowhere to send events: give --output, --webhook and/or --mqtt")
    if args.output is not None:
        try:
            args.output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"cannot create the output folder ({exc.strerror})", args.output) from None
    settings = WatchSettings(
        realtime=args.realtime, queue_size=args.queue_size, batch_size=args.batch_size, threads=args.threads, max_latency=args.max_latency,
        lookahead=args.lookahead, close_level=args.close_level, close_after=args.close_after,
        min_length=args.min_length, clip_before=args.clip_before, clip_after=args.clip_after,
        csv_rows=args.csv_rows, csv_keep=args.csv_keep,
    )
    log = lambda message: print(f"\n{message}" if sys.stderr.isatty() else message, file=sys.stderr, flush=True)  # noqa: E731
    sinks = []
    if args.webhook:
        sinks.append(WebhookSink(args.webhook, queue_size=args.sink_queue, log=log))
    if args.mqtt:
        sinks.append(MqttSink(args.mqtt, args.mqtt_topic, queue_size=args.sink_queue, log=log))
    status_line = (lambda text: print(f"\r{text}\033[K", end="", file=sys.stderr, flush=True)) if sys.stderr.isatty() else None
    try:
        watcher = Watcher(args.checkpoint, args.source, args.output, sinks=sinks, settings=settings,
                          device=args.device, log=log, status_line=status_line)
    except BaseException:
        for sink in sinks:
            sink.close(0)
        raise
    previous = {sig: signal.signal(sig, lambda *_: watcher.stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"watching {args.source} with {watcher.detector.name} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        status = watcher.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if status_line is not None:
        print(file=sys.stderr)
    print(f"{status['frames_scored']} frames scored, {status['frames_dropped']} dropped, {status['events']} event(s); "
          f"median latency {status['latency_ms_p50']} ms")
    for name, figures in status.get("sinks", {}).items():
        if figures.get("rejected"):  # each one was logged when it happened; the count is easy to miss there
            print(f"{name}: {figures['rejected']} message(s) refused by the receiver and dropped")
    if status.get("files_unreadable"):
        print(f"{status['files_unreadable']} file(s) of the hot folder skipped as unreadable")
    if args.output is not None:
        print(f"events: {args.output / 'events.jsonl'}")
    return 0
