"""What the codec memory costs: CPU time of fitting and scoring the default video model with and without it.

Uses the clips that ``benchmarks/reencode.py --work-dir DIR`` left in ``DIR`` (the H.264 training clips and the
encoded test clips): fits the default model without (``codec_memory=()``) and with the codec memory, one after the
other in this process, then scores the normal test clips of the listed encodings with each. CPU time of the whole
process (all threads), so that other jobs on a shared machine disturb it less than wall time.

    PYTHONPATH=src python benchmarks/reencode.py --train-clips 4 --frames 60 --work-dir /tmp/conveyor
    PYTHONPATH=src python benchmarks/codec_cost.py --work-dir /tmp/conveyor --output /tmp/codec_cost.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from anomalens.data.synthetic_video import DEFAULT_VIDEO_CATEGORY
from anomalens.data.video_io import open_clip
from anomalens.progress import Reporter
from anomalens.workflows.train import train_video_model


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="a folder reencode.py --work-dir filled")
    parser.add_argument("--encodings", nargs="*", default=["h264_high", "h264_low"])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    report: dict = {"fit_cpu_seconds": {}, "score_cpu_ms_per_frame": {}}
    models = {}
    with tempfile.TemporaryDirectory(prefix="anomalens_codec_cost_") as results:
        for name, settings in (("without", {"codec_memory": []}), ("with", {})):
            started, wall = cpu_seconds(), time.perf_counter()
            models[name] = train_video_model(args.work_dir / "data", DEFAULT_VIDEO_CATEGORY, results_dir=Path(results),
                                             run_name=name, reporter=Reporter(show_tqdm=False), **settings).detector
            report["fit_cpu_seconds"][name] = round(cpu_seconds() - started, 1)
            print(f"fit {name} the codec memory: {report['fit_cpu_seconds'][name]} s CPU, "
                  f"{time.perf_counter() - wall:.0f} s wall", flush=True)
    for encoding in args.encodings:
        clips = sorted((args.work_dir / "test" / encoding).glob("normal_*"))
        for name, detector in models.items():
            started, frames = cpu_seconds(), 0
            for path in clips:
                frames += len(detector.predict_clip(open_clip(path, detector.preprocessing), views=False).scores)
            per_frame = round(1000 * (cpu_seconds() - started) / max(frames, 1), 1)
            report["score_cpu_ms_per_frame"][f"{encoding} {name}"] = per_frame
            print(f"score {encoding} {name} the codec memory: {per_frame} ms CPU per frame ({frames} frames)", flush=True)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
