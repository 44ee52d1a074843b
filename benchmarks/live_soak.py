"""Soak and latency figures of ``anomalens watch`` (issue 11's targets), bounded in time.

Two runs, each with the default video model (stfeatures at its default 240x360), trained once on generated
conveyor clips unless ``--checkpoint`` is given:

* ``soak``: a generated conveyor stream (endless, as fast as the scorer takes it) for ``--minutes``; reports the
  resident memory (RSS) after a warm-up and at the end, frames/s and the median latency. The target is one hour
  with RSS growth <= 50 MB.
* ``rtsp``: a 25 fps 640x480 H.264 stream with anomalies from a real RTSP server (GStreamer, on 127.0.0.1) for
  ``--seconds``; reports dropped frames (target <= 5%), the median latency from a frame's arrival to its score
  (target <= 200 ms; it includes the stated smoothing delay of ``--lookahead`` frames) and how long after the
  first anomalous frame each event was published (target <= 1 s).

    PYTHONPATH=src python benchmarks/live_soak.py soak --minutes 5
    PYTHONPATH=src python benchmarks/live_soak.py rtsp --seconds 60

Results print as JSON and go to ``benchmarks/out/live_<run>.json``. Say that the machine was shared when it was.
"""

from __future__ import annotations

import argparse
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
from anomalens.live.watcher import Watcher

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RTSP_SCRIPT = HERE.parent / "tests" / "rtsp_test_server.py"
ANOMALIES = ("foreign_object", "speed_change", "colour_change", "stop")
SOAK_SIZE, RTSP_SIZE = (240, 360), (480, 640)  # frame sizes (H, W) of the generated streams


class GeneratedConveyor(Source):
    """An endless conveyor: 12 generated 100-frame clips (every third with an anomaly), H.264-encoded once like a
    camera's stream, then decoded in a loop for as long as the soak lasts."""

    kind, live = "generated", False

    def __init__(self, size: tuple[int, int], folder: Path) -> None:
        super().__init__("generated conveyor")
        self.size, self.fps = size, 25.0
        self.video = folder / f"generated_{size[0]}x{size[1]}.mp4"
        if not self.video.is_file():
            frames = [f for seed in range(12)
                      for f in synthetic_clip(1000 + seed, 100, size, ANOMALIES[seed // 3 % 4] if seed % 3 == 2 else None)[0]]
            write_video(self.video, frames, self.fps)

    def frames(self) -> Iterator[SourceFrame]:
        clip = open_clip(self.video, Preprocessing(image_size=None))
        while not self.stopping.is_set():
            for frame in clip.iter_native():
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
    source = GeneratedConveyor(SOAK_SIZE, OUT)
    output = None if args.no_output else OUT / "soak_watch"  # without output: no clips, no CSV (to tell their memory apart)
    watcher = Watcher(checkpoint, source, output, settings=WatchSettings(lookahead=args.lookahead), device="cpu")
    samples: list[tuple[float, float, int]] = []
    timer = threading.Timer(args.minutes * 60, watcher.stop)
    timer.start()

    def sample() -> None:
        while not watcher.stopping.is_set():
            samples.append((time.monotonic(), rss_mb(), watcher.scored))
            watcher.stopping.wait(5)

    threading.Thread(target=sample, daemon=True).start()
    started = time.monotonic()
    status = watcher.run()
    timer.cancel()
    warm = [s for s in samples if s[0] - started >= args.warmup] or samples
    return {
        "run": "soak", "minutes": args.minutes, "frames_scored": status["frames_scored"],
        "fps": round(status["frames_scored"] / (time.monotonic() - started), 2),
        "rss_mb_after_warmup": round(warm[0][1], 1), "rss_mb_end": round(rss_mb(), 1),
        "rss_growth_mb": round(rss_mb() - warm[0][1], 1), "rss_mb_max": round(max(s[1] for s in samples), 1),
        "latency_ms_p50": status["latency_ms_p50"], "events": status["events"], "warmup_s": args.warmup,
        "output": not args.no_output,
        # (seconds since the start, RSS MB, frames scored) every 30 s: growth that levels off is warm-up, not a leak
        "rss_series": [(round(t - started), round(r, 1), n) for t, r, n in samples[::6]],
    }


def rtsp(args: argparse.Namespace, checkpoint: Path) -> dict:
    video = OUT / "rtsp_640x480_25fps.mp4"
    if not video.is_file():
        seconds = 40  # the server loops it for longer runs (every client connection starts from frame 0)
        frames = [f for i in range(seconds // 4)
                  for f in synthetic_clip(2000 + i, 100, RTSP_SIZE, ANOMALIES[i % 4] if i % 2 else None)[0]]
        write_video(video, frames, 25)
    port = 18554 + os.getpid() % 1000
    server = subprocess.Popen(["/usr/bin/python3", str(RTSP_SCRIPT), str(port), str(video)], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready", "the RTSP server did not start"
        out = OUT / "rtsp_watch"
        watcher = Watcher(checkpoint, f"rtsp://127.0.0.1:{port}/live", out, device="cpu",
                          settings=WatchSettings(lookahead=args.lookahead))
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
        "dropped_percent": status["dropped_percent"], "latency_ms_median": round(1000 * float(np.median(latencies)), 1) if latencies else None,
        "processing_ms_p50_last200": status["processing_ms_p50"], "score_delay_frames": status["score_delay_frames"],
        "events": len(delays), "publish_delay_s_median": round(float(np.median(delays)), 3) if delays else None,
        "publish_delay_s_max": round(max(delays), 3) if delays else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", choices=("soak", "rtsp"))
    parser.add_argument("--checkpoint", type=Path, default=None, help="a video run folder (default: train the default model)")
    parser.add_argument("--minutes", type=float, default=5.0, help="soak: minutes of generated stream (target: 60)")
    parser.add_argument("--warmup", type=float, default=30.0, help="soak: seconds before the first RSS reading")
    parser.add_argument("--seconds", type=float, default=60.0, help="rtsp: seconds of stream")
    parser.add_argument("--no-output", action="store_true", help="soak: write nothing (no event clips, no CSV)")
    parser.add_argument("--lookahead", type=int, default=None, help="frames of look-ahead smoothing (default: the model's 6)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(OUT / f"{args.run}_watch", ignore_errors=True)  # events.jsonl appends: start each run afresh
    checkpoint = args.checkpoint or default_model(OUT / "model", SOAK_SIZE if args.run == "soak" else RTSP_SIZE)
    result = (soak if args.run == "soak" else rtsp)(args, checkpoint)
    result.update(lookahead=args.lookahead, cpu_count=os.cpu_count(), load_average=os.getloadavg()[0],
                  command=" ".join(["python", *sys.argv]))
    (OUT / f"live_{args.run}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
