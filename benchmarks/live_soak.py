"""Soak and latency figures of ``anomalens watch`` (issue 11's targets), bounded in time.

Three runs, each with the default video model (stfeatures at its default 240x360), trained once on generated
conveyor clips unless ``--checkpoint`` is given:

* ``soak``: a generated conveyor stream (endless; as fast as the scorer takes it, or at 25 fps with
  ``--realtime``, then frames drop as from a camera) for ``--minutes``, with event clips and the per-frame CSV;
  reports the resident memory (RSS) after a warm-up and at the end, frames/s and the median latency. RSS samples
  go to ``--samples FILE`` as the run goes (JSON, rewritten every 30 s). The target is one hour with RSS growth
  <= 50 MB.
* ``rtsp``: a 25 fps 640x480 H.264 stream with anomalies from a real RTSP server (GStreamer, on 127.0.0.1) for
  ``--seconds``; reports dropped frames (target <= 5%), the median latency from a frame's arrival to its final
  score (target <= 200 ms; it includes the stated smoothing delay) and how long after the first anomalous frame
  each event was published (target <= 1 s).
* ``budget``: the stream's video read as fast as possible (no drops, clips and CSV on); CPU milliseconds per
  frame by thread, a figure that the other jobs on a shared machine hardly change, and the rate it allows on
  two idle cores.
* ``stages``: where that CPU goes, stage by stage (decode, colour, resize, clip encoding, backbone, flow,
  appearance search, motion memory, ...): the stream's video frame by frame through the same functions as the
  watch, one stage after the other on one thread, each timed by the process's CPU time (its library threads
  included), with the watch's threads per library (``--threads``, default the watch's own) and its memory setting.
* ``lookahead``: events with a cut smoothing kernel against the offline ones, for look-ahead 0..8 frames.
* ``faults``: the same stream with a webhook receiver and a mosquitto broker, while the RTSP server is killed
  and restarted (target: reconnected within 5 s, with a ``source_lost`` message), the broker restarted (every
  message still arrives) and the receiver down for ``--webhook-down`` seconds (its messages delivered after).

    PYTHONPATH=src python benchmarks/live_soak.py soak --minutes 5
    PYTHONPATH=src python benchmarks/live_soak.py soak --minutes 60 --realtime --size 480x640 --samples soak.json
    PYTHONPATH=src python benchmarks/live_soak.py rtsp --seconds 60
    PYTHONPATH=src python benchmarks/live_soak.py budget
    PYTHONPATH=src python benchmarks/live_soak.py stages --frames 300
    PYTHONPATH=src python benchmarks/live_soak.py faults

Results print as JSON and go to ``benchmarks/out/live_<run>.json``. Say that the machine was shared when it was.
"""

from __future__ import annotations

from anomalens.runtime import share_cpu_fairly

share_cpu_fairly()  # as the watch command does, before torch starts its thread pools

import argparse  # noqa: E402
import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from anomalens.data.synthetic_video import DEFAULT_VIDEO_CATEGORY, make_synthetic_video_dataset, synthetic_clip
from anomalens.data.preprocessing import Preprocessing
from anomalens.data.video_io import open_clip, write_video
from anomalens.live.sources import Source, SourceFrame
from anomalens.live.settings import WatchSettings
from anomalens.live import watcher as watcher_module
from anomalens.live.reader import MEMORY_SETTINGS, steady_memory
from anomalens.live.watcher import Watcher
from anomalens.runtime import write_json_atomic

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RTSP_SCRIPT = HERE.parent / "tests" / "rtsp_test_server.py"
ANOMALIES = ("foreign_object", "speed_change", "colour_change", "stop")
SOAK_SIZE, RTSP_SIZE = (240, 360), (480, 640)  # frame sizes (H, W) of the generated streams


class GeneratedConveyor(Source):
    """An endless conveyor: 12 generated 100-frame clips (every third with an anomaly), H.264-encoded once like a
    camera's stream, then decoded in a loop for as long as the soak lasts (at 25 fps with ``realtime``)."""

    kind = "generated"

    def __init__(self, size: tuple[int, int], folder: Path, realtime: bool = False) -> None:
        super().__init__("generated conveyor")
        self.size, self.fps, self.live = size, 25.0, realtime
        self.video = folder / f"generated_{size[0]}x{size[1]}.mp4"
        if not self.video.is_file():
            frames = [f for seed in range(12)
                      for f in synthetic_clip(1000 + seed, 100, size, ANOMALIES[seed // 3 % 4] if seed % 3 == 2 else None)[0]]
            write_video(self.video, frames, self.fps)

    def frames(self) -> Iterator[SourceFrame]:
        clip = open_clip(self.video, Preprocessing(image_size=None))
        started, count = time.monotonic(), 0
        while not self.stopping.is_set():
            for frame in clip.iter_native():
                if self.live:  # a camera's pace
                    delay = started + count / self.fps - time.monotonic()
                    if delay > 0 and self.stopping.wait(delay):
                        return
                count += 1
                yield SourceFrame(frame, time.time())
                if self.stopping.is_set():
                    return


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def default_model(work: Path, size: tuple[int, int]) -> Path:
    """The default stfeatures trained on generated conveyor clips of the stream's frame size (so that its
    frames are resized to the model's 240x360 the same way in training and live); reused from ``work``."""
    from anomalens.workflows.train import train_video_model

    name = f"model_{size[0]}x{size[1]}"
    run = work / "runs" / name
    if not run.is_dir():
        root = make_synthetic_video_dataset(work / f"data_{size[0]}x{size[1]}", n_train=4, n_test=1, n_frames=100,
                                            size=size, fps=25)
        train_video_model(root, DEFAULT_VIDEO_CATEGORY, "stfeatures", work / "runs", run_name=name, device="cpu")
    return run


def soak(args: argparse.Namespace, checkpoint: Path) -> dict:
    source = GeneratedConveyor(args.size or SOAK_SIZE, OUT, realtime=args.realtime)
    output = None if args.no_output else OUT / f"soak_watch_{args.memory}"  # without output: no clips, no CSV (to tell their memory apart)
    watcher = Watcher(checkpoint, source, output, settings=settings(args), device="cpu")
    samples: list[tuple[float, float, int, int]] = []
    timer = threading.Timer(args.minutes * 60, watcher.stop)
    timer.start()
    started = time.monotonic()

    def summary(final: bool) -> dict:
        warm = [s for s in samples if s[0] >= args.warmup] or samples
        return {
            "run": "soak", "minutes": args.minutes, "realtime": args.realtime, "finished": final,
            "frames_read": watcher.read, "frames_scored": watcher.scored, "frames_dropped": watcher.dropped,
            "fps_scored": round(watcher.scored / max(time.monotonic() - started, 1e-6), 2),
            "events": watcher.event_count, "clips": watcher.clips.stats() if watcher.clips is not None else None,
            "rss_mb_after_warmup": warm[0][1] if warm else None, "rss_mb_last": samples[-1][1] if samples else None,
            "rss_growth_mb": round(samples[-1][1] - warm[0][1], 1) if warm else None,
            "rss_mb_max_after_warmup": max(s[1] for s in warm) if warm else None, "warmup_s": args.warmup,
            "output": not args.no_output, "pid": os.getpid(), "memory": args.memory,
            # (seconds since the start, RSS MB, frames read, frames scored) every 30 s
            "rss_series": samples,
        }

    def sample() -> None:
        while not watcher.stopping.is_set():
            samples.append((round(time.monotonic() - started), round(rss_mb(), 1), watcher.read, watcher.scored))
            if args.samples is not None:
                write_json_atomic(args.samples, summary(False))
            watcher.stopping.wait(30)

    threading.Thread(target=sample, daemon=True).start()
    status = watcher.run()
    timer.cancel()
    samples.append((round(time.monotonic() - started), round(rss_mb(), 1), watcher.read, watcher.scored))
    result = summary(True)
    result.update(latency_ms_p50=status["latency_ms_p50"], dropped_percent=status["dropped_percent"])
    if args.samples is not None:
        write_json_atomic(args.samples, result)
    return result


def rtsp(args: argparse.Namespace, checkpoint: Path) -> dict:
    video = rtsp_video()
    port = 18554 + os.getpid() % 1000
    server = subprocess.Popen(["/usr/bin/python3", str(RTSP_SCRIPT), str(port), str(video)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready", "the RTSP server did not start"
        out = OUT / "rtsp_watch"
        watcher = Watcher(checkpoint, f"rtsp://127.0.0.1:{port}/live", out, device="cpu", settings=settings(args))
        timer = threading.Timer(args.seconds, watcher.stop)
        timer.start()
        status = watcher.run()
        timer.cancel()
    finally:
        server.terminate()
        server.wait(10)
    messages = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    delays = [m["detection_delay_s"] for m in messages if m["type"] == "anomaly_started"]
    latencies = [float(row.split(",")[2]) - float(row.split(",")[1]) for f in sorted(out.glob("frames_*.csv"))
                 for row in f.read_text().splitlines()[1:]]
    return {
        "run": "rtsp", "seconds": args.seconds, "frames_read": status["frames_read"], "frames_scored": status["frames_scored"],
        "dropped_percent": status["dropped_percent"],
        "latency_ms_median": round(1000 * float(np.median(latencies)), 1) if latencies else None,
        "latency_ms_p95": round(1000 * float(np.quantile(latencies, 0.95)), 1) if latencies else None,
        "processing_ms_p50_last200": status["processing_ms_p50"], "score_delay_frames": status["score_delay_frames"],
        "queue_size": watcher.settings.queue_size, "batch_size": watcher.settings.batch_size,
        "events": len(delays), "publish_delay_s_median": round(float(np.median(delays)), 3) if delays else None,
        "publish_delay_s_max": round(max(delays), 3) if delays else None,
    }


def lookahead(args: argparse.Namespace, checkpoint: Path) -> dict:
    """Events with a cut smoothing kernel (look-ahead 0..8 frames) against the offline events (the full kernel),
    on ``--streams`` generated 640x480 conveyor streams of 1,000 frames: how many, and the smallest IoU of an
    offline event of 5 frames or more with its best live match."""
    import torch

    from anomalens.metrics.events import EVENT_MERGE_SECONDS, detect_events
    from anomalens.models.components.kernels import DelayedGaussian
    from anomalens.progress import SILENT
    from anomalens.workflows.runs import load_detector

    detector = load_detector(checkpoint, device=torch.device("cpu"))
    a_mean, a_std, m_mean, m_std = detector.standardisation_.tolist()
    threshold, gap = detector.calibration_.threshold, max(1, round(EVENT_MERGE_SECONDS * 25))

    def iou(a: dict, b: dict) -> float:
        inter = min(a["end_frame"], b["end_frame"]) - max(a["start_frame"], b["start_frame"]) + 1
        return max(inter, 0) / (max(a["end_frame"], b["end_frame"]) - min(a["start_frame"], b["start_frame"]) + 1)

    table: dict[str, list] = {}
    for base in (2000, 3000, 4000)[: args.streams]:
        video = OUT / f"study_{base}.mp4"
        if not video.is_file():
            write_video(video, [f for i in range(10) for f in synthetic_clip(
                base + i, 100, RTSP_SIZE, ANOMALIES[i % 4] if i % 2 else None)[0]], 25)
        raw = detector._score_stream(open_clip(video, detector.preprocessing), SILENT)
        cues = (((raw.appearance - a_mean) / a_std).numpy(), ((raw.motion - m_mean) / m_std).numpy())

        def events(ahead: int | None) -> list[dict]:
            smoothed = []
            for series in cues:
                smoother = DelayedGaussian(detector.config.temporal_sigma, ahead)
                smoothed.append(np.array([y for x in series for y in smoother.push(x)] + smoother.finish()))
            return detect_events(smoothed[0] + smoothed[1], threshold, 25, merge_gap=gap)

        offline = events(None)
        for ahead in range(0, 9):
            live = events(ahead)
            long = [max((iou(e, f) for f in live), default=0.0) for e in offline if e["frames"] >= 5]
            table.setdefault(str(ahead), []).append(
                {"stream": video.name, "events": len(live), "offline": len(offline), "min_iou_5_frames_or_more": round(min(long, default=1.0), 2)})
    return {"run": "lookahead", "by_lookahead": table}


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def budget(args: argparse.Namespace, checkpoint: Path) -> dict:
    """What one 640x480 frame costs in CPU time, by thread, on the stream's video read as fast as possible with
    clips and CSV on. CPU time hardly depends on what else runs (unlike wall time on a shared machine), so
    ``2 cores / CPU seconds per frame`` bounds the rate an idle 2-core machine can hold."""
    video, out = rtsp_video(), OUT / f"budget_watch_{args.memory}"
    watcher = Watcher(checkpoint, str(video), out, device="cpu", settings=settings(args))
    seen: dict[int, float] = {}
    names = {threading.main_thread().native_id: "scorer (main thread)"}

    def sample() -> None:  # threads end with the watch: their last reading is kept
        while not watcher.stopping.is_set():
            seen.update(thread_cpu())
            names.update({t.native_id: t.name for t in threading.enumerate() if t.native_id is not None and t.native_id not in names})
            time.sleep(0.5)

    start_cpu, start_wall = os.times(), time.monotonic()
    baseline = thread_cpu()
    threading.Thread(target=sample, name="sampler", daemon=True).start()
    status = watcher.run()
    end_cpu = os.times()
    seen.update(thread_cpu())
    frames = max(status["frames_scored"], 1)
    total = (end_cpu.user - start_cpu.user) + (end_cpu.system - start_cpu.system)
    by_thread: dict[str, float] = {}
    for tid, cpu in seen.items():
        name = names.get(tid, "torch/OpenMP and codec workers")
        if name == "sampler":
            continue
        by_thread[name] = by_thread.get(name, 0.0) + (cpu - baseline.get(tid, 0.0)) * 1000 / frames
    return {
        "run": "budget", "frames": status["frames_scored"], "wall_s": round(time.monotonic() - start_wall, 1),
        "cpu_ms_per_frame": round(1000 * total / frames, 1),
        "cpu_ms_per_frame_by_thread": {k: round(v, 1) for k, v in sorted(by_thread.items(), key=lambda kv: -kv[1]) if v > 0.05},
        "frames_per_s_bound_2_cores": round(2 / (total / frames), 1), "events": status["events"],
    }


def stages(args: argparse.Namespace, checkpoint: Path) -> dict:
    """CPU milliseconds per 640x480 frame of each stage of the watch (see the module doc), after 10 warm-up frames;
    every frame is also encoded into a clip, which the watch does only around events."""
    import av
    import torch

    from anomalens.data.preprocessing import to_float
    from anomalens.data.video_io import VideoWriter, frame_to_rgb
    from anomalens.live.clips import CLIP_CRF, CLIP_PRESET, shrink
    from anomalens.models.video.motion import grey_frames
    from anomalens.models.video.stfeatures import local_average
    from anomalens.runtime import library_threads
    from anomalens.workflows.runs import load_detector

    release_memory = steady_memory(args.memory)  # the watch's memory setting (or --memory)
    watch = settings(args)
    detector = load_detector(checkpoint, device=torch.device("cpu"))
    d, scorer = detector, detector.causal_scorer(watch.lookahead_for(True))
    cost: dict[str, float] = {}
    warmup = 10
    with library_threads(watch.threads), torch.no_grad(), av.open(str(rtsp_video())) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # as the watch's reader
        decoded = container.decode(stream)
        writer = VideoWriter(OUT / "stages_clip.mp4", 25, crf=CLIP_CRF, preset=CLIP_PRESET, threads=1)
        for n in range(args.frames + warmup):
            if n == warmup:
                cost.clear()
            clock = [time.process_time()]

            def done(stage: str) -> None:
                clock.append(time.process_time())
                cost[stage] = cost.get(stage, 0.0) + clock[-1] - clock[-2]

            if n % 25 == 0:  # the watch releases free memory about once a second (25 frames)
                release_memory()
                done("memory release (once a second)")
            frame = next(decoded)
            done("decode (PyAV)")
            image = frame_to_rgb(frame)
            done("colour conversion")
            tensor = d.preprocessing.prepare_array(image)
            done("resize to the model input")
            writer.write(shrink(image, watch.clip_width), pts=n)
            done("clip encoding (only around events)")
            floats = to_float(tensor[None])
            appearance = d.extractor(d.backbone_input(floats))  # input blur and noise-level matching
            done("backbone")
            grey = grey_frames(floats, d.flow_size)
            done("grey frame for the flow")
            flow = scorer.flows.push(grey[0])
            done("optical flow (DIS)")
            flow = np.zeros((2, *d.flow_size), np.float32) if flow is None else flow
            motion = d.motion_descriptors([flow], [grey[0]])
            done("orientation histograms (and still texture)")
            a = d.appearance_index_.search(appearance.permute(0, 2, 3, 1).reshape(-1, appearance.shape[1]))[0]
            done("appearance search")
            m = d.motion_memory_.distances(motion)
            done("motion memory")
            a, m = local_average(a.reshape(1, *appearance.shape[-2:])), local_average(m)
            d._standardised_map(a, m)
            a_score, m_score = d._frame_scores(a, m)
            scorer.smoothers["appearance"].push(float(a_score[0]))
            scorer.smoothers["motion"].push(float(m_score[0]))
            done("maps, frame scores, smoothing")
        writer.close()
    per_frame = {stage: round(1000 * seconds / args.frames, 2) for stage, seconds in cost.items()}
    return {"run": "stages", "frames": args.frames, "memory": args.memory, "threads_per_library": watch.threads,
            "feature_runtime": os.environ.get("ANOMALENS_FEATURE_RUNTIME", "auto"), "cpu_ms_per_frame": per_frame,
            "cpu_ms_per_frame_total": round(sum(per_frame.values()), 1),
            "cpu_ms_per_frame_without_clips": round(sum(v for k, v in per_frame.items() if not k.startswith("clip")), 1)}


def settings(args: argparse.Namespace) -> WatchSettings:
    """The watch's settings: its defaults, unless the command line says otherwise."""
    chosen = {name: getattr(args, name) for name in ("lookahead", "queue_size", "batch_size", "threads") if getattr(args, name) is not None}
    return WatchSettings(**chosen)


def rtsp_video() -> Path:
    """40 s of generated 640x480 conveyor at 25 fps, every other 4 s clip with an anomaly (made once)."""
    video = OUT / "rtsp_640x480_25fps.mp4"
    if not video.is_file():
        seconds = 40  # the watch reconnects at the end (every client connection starts from frame 0)
        frames = [f for i in range(seconds // 4)
                  for f in synthetic_clip(2000 + i, 100, RTSP_SIZE, ANOMALIES[i % 4] if i % 2 else None)[0]]
        write_video(video, frames, 25)
    return video


def faults(args: argparse.Namespace, checkpoint: Path) -> dict:
    """Kill and restart the RTSP server, restart the MQTT broker, take the webhook receiver down, while watching."""
    import paho.mqtt.client as mqtt

    sys.path.insert(0, str(HERE.parent / "tests"))
    from _live_parts import Receiver, free_port, start_mosquitto, start_rtsp_server, stop, wait_until

    from anomalens.live.sinks import MqttSink, WebhookSink

    video, work = rtsp_video(), OUT / "faults_watch"
    rtsp_port, broker_port, hook_port = free_port(), free_port(), free_port()
    server = start_rtsp_server(rtsp_port, video)
    broker = start_mosquitto(broker_port, work / "broker")
    receiver = Receiver(hook_port)
    received: list[dict] = []
    subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"soak-{os.getpid()}", clean_session=False)
    subscriber.on_message = lambda client, userdata, message: received.append(json.loads(message.payload))
    subscriber.connect("127.0.0.1", broker_port)
    subscriber.subscribe("line/events", qos=1)
    subscriber.loop_start()
    sinks = [WebhookSink(f"http://127.0.0.1:{hook_port}/events"), MqttSink(f"127.0.0.1:{broker_port}", "line/events")]
    watcher = Watcher(checkpoint, f"rtsp://127.0.0.1:{rtsp_port}/live", work / "out", sinks=sinks, device="cpu",
                      settings=settings(args))
    thread = threading.Thread(target=watcher.run)
    thread.start()
    figures: dict = {}
    try:
        assert wait_until(lambda: watcher.scored >= 50, 60), "no frames from the RTSP server"
        # 1. the RTSP server dies and comes back after 2 s
        stop(server)
        killed, read = time.monotonic(), watcher.read
        time.sleep(2.0)
        server = start_rtsp_server(rtsp_port, video)
        restarted = time.monotonic()
        wait_until(lambda: watcher.read > read + 5, 30, step=0.01)
        figures["rtsp_frames_again_s_after_restart"] = round(time.monotonic() - restarted, 2)
        figures["rtsp_gap_s"] = round(time.monotonic() - killed, 2)
        # 2. the broker restarts (3 s down) while events go on
        time.sleep(5)
        stop(broker)
        time.sleep(3)
        broker = start_mosquitto(broker_port, work / "broker")
        # 3. the webhook receiver is down for --webhook-down seconds
        time.sleep(5)
        receiver.close()
        down_from = len(receiver.messages)
        time.sleep(args.webhook_down)
        messages_meanwhile = sum(1 for line in (work / "out" / "events.jsonl").read_text().splitlines())
        receiver = Receiver(hook_port, receiver.messages)
        time.sleep(10)
    finally:
        watcher.stop()
        thread.join(120)
        stop(server)
    sent = [json.loads(line) for line in (work / "out" / "events.jsonl").read_text().splitlines()]
    wait_until(lambda: len(received) >= len(sent), 20)
    subscriber.loop_stop()
    subscriber.disconnect()
    stop(broker)
    receiver.close()
    key = lambda m: (m["type"], m.get("id"), m.get("lost_at"))  # noqa: E731
    lost = [m for m in sent if m["type"] == "source_lost"]
    figures.update(
        messages=len(sent), source_lost=[{k: m[k] for k in ("seconds", "reason", "reconnected")} for m in lost],
        webhook_received=len(receiver.messages), webhook_missing=len({key(m) for m in sent} - {key(m) for m in receiver.messages}),
        webhook_in_order=[key(m) for m in receiver.messages] == [key(m) for m in sent],
        webhook_messages_while_down=messages_meanwhile - down_from,
        mqtt_received=len(received), mqtt_missing=len({key(m) for m in sent} - {key(m) for m in received}),
        sinks=watcher.state.status.get("sinks"), frames_read=watcher.read, frames_scored=watcher.scored,
        webhook_down_s=args.webhook_down,
    )
    return {"run": "faults", **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", choices=("soak", "rtsp", "faults", "budget", "stages", "lookahead"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="a video run folder (default: train the default model)")
    parser.add_argument("--minutes", type=float, default=5.0, help="soak: minutes of generated stream (target: 60)")
    parser.add_argument("--warmup", type=float, default=30.0, help="soak: seconds before the first RSS reading")
    parser.add_argument("--seconds", type=float, default=60.0, help="rtsp: seconds of stream")
    parser.add_argument("--no-output", action="store_true", help="soak: write nothing (no event clips, no CSV)")
    parser.add_argument("--queue-size", type=int, default=None, help="watch's --queue-size (default: its own)")
    parser.add_argument("--batch-size", type=int, default=None, help="watch's --batch-size (default: its own)")
    parser.add_argument("--threads", type=int, default=None, help="watch's --threads per library (default: its own)")
    parser.add_argument("--frames", type=int, default=300, help="stages: frames to time")
    parser.add_argument("--realtime", action="store_true", help="soak: play the generated stream at 25 fps")
    parser.add_argument("--size", type=lambda v: tuple(int(x) for x in v.split("x")), default=None,
                        help="soak: frame size HxW of the generated stream (default 240x360)")
    parser.add_argument("--samples", type=Path, default=None, help="soak: write the RSS samples here as the run goes")
    parser.add_argument("--streams", type=int, default=3, help="lookahead: generated streams to compare on (1-3)")
    parser.add_argument("--webhook-down", type=float, default=30.0, help="faults: seconds the webhook receiver is down")
    parser.add_argument("--lookahead", type=int, default=None,
                        help="frames of look-ahead smoothing (default: watch's own, 3 frames from a live source)")
    parser.add_argument("--memory", choices=MEMORY_SETTINGS, default="trim",
                        help="the watch's memory setting (default its own, trim; mmap: the former 256 KB threshold; "
                             "glibc: nothing done)")
    args = parser.parse_args()
    watcher_module.steady_memory = functools.partial(steady_memory, args.memory)  # what every Watcher here uses
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(OUT / f"{args.run}_watch_{args.memory}", ignore_errors=True)
    shutil.rmtree(OUT / f"{args.run}_watch", ignore_errors=True)  # events.jsonl appends: start each run afresh
    size = (args.size or SOAK_SIZE) if args.run == "soak" else RTSP_SIZE
    checkpoint = args.checkpoint or default_model(OUT / "model", size)
    runs = {"soak": soak, "rtsp": rtsp, "faults": faults, "budget": budget, "stages": stages, "lookahead": lookahead}
    result = runs[args.run](args, checkpoint)
    result.update(lookahead=args.lookahead, cpu_count=os.cpu_count(), load_average=os.getloadavg()[0],
                  command=" ".join(["python", *sys.argv]))
    (OUT / f"live_{args.run}_{args.memory}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
