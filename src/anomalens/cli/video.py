"""``anomalens train-video | evaluate-video | analyze-video``: the video commands, a thin layer over the workflows.

Flags are passed to the library only when given, so each model keeps its own defaults (a video model its own
frame size); a flag the chosen model does not have is an error that names the flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalens.cli.common import (
    add_checkpoint_flag,
    add_common_flags,
    add_evaluate_flags,
    add_train_flags,
    add_video_model_flags,
    cli_reporter,
    example_epilog,
    formatter_for,
    run_training,
)
from anomalens.cli.distributed import add_engine_flags, check_engine_flags
from anomalens.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = formatter_for("video")

    train = subparsers.add_parser(
        "train-video", formatter_class=fmt, help="train a video model on normal clips",
        description="Train a video anomaly detector on the normal training clips of <data-dir>/<category> "
                    "(train/normal/ or training/frames/), holding out whole clips to choose the model and the "
                    "threshold, and save it to <results-dir>/video_<category>_<timestamp>/.",
        epilog=example_epilog(
            "anomalens train-video --data-dir ../shared/data --category ucsd_ped2",
            "anomalens train-video --data-dir data --category line3 --model convlstm --image-size 128 --epochs 4 "
            "--sequence-length 8"),
    )
    add_train_flags(train, "dataset root holding <category>/", "ucsd_ped2")
    add_video_model_flags(train, with_training_flags=True)
    add_common_flags(train)
    train.set_defaults(handler=lambda args: run_training(args, "video", "evaluate-video"))

    evaluate = subparsers.add_parser(
        "evaluate-video", formatter_class=fmt, help="measure a trained video model on the test clips",
        description="Score every test clip (by default of the dataset the run was trained on) and write metrics.json "
                    "(frame AUROC over all test frames pooled, per clip, video AUROC), report.md, frame_scores.csv "
                    "and a timeline PNG per clip to RUN_DIR/evaluation/.",
        epilog=example_epilog("anomalens evaluate-video --checkpoint results/video_ucsd_ped2_20261128_120000"),
    )
    add_evaluate_flags(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    analyze = subparsers.add_parser(
        "analyze-video", formatter_class=fmt, help="find anomalous moments in one video",
        description="Score every frame of a video file (mp4, avi, mov, mkv, ...) or a folder of frames with the model's "
                    "own threshold; write side_by_side.mp4 (original | model view | heatmap, one frame per input "
                    "frame, H.264), timeline.png, scores.csv and events.json.",
        epilog=example_epilog(
            "anomalens analyze-video --checkpoint results/video_ucsd_ped2_20261128_120000 --video clip.mp4",
            "anomalens analyze-video --checkpoint RUN_DIR --video frames_dir/ --fps 10 --output-dir out/"),
    )
    add_checkpoint_flag(analyze)
    analyze.add_argument("--video", required=True, type=Path, nargs="+", metavar="VIDEO",
                         help="video file or folder of frames; with --engine ray several, analysed in parallel")
    analyze.add_argument("--output-dir", type=Path, default=None,
                         help="where to write (default: RUN_DIR/analysis/<video>_<timestamp>/); not the run folder itself")
    analyze.add_argument("--overwrite", action="store_true",
                         help="replace the analysis already in --output-dir (refused without this flag), once the new one "
                              "is written")
    analyze.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames or of a video that states none (default: "
                         "the video's own; else 25 is assumed for timing and motion is measured per frame)")
    add_common_flags(analyze)
    add_engine_flags(analyze)
    analyze.set_defaults(handler=_analyze)


def _evaluate(args: argparse.Namespace) -> int:
    from anomalens.workflows.evaluate import evaluate_video_model
    from anomalens.workflows.reports import format_number as fmt

    result = evaluate_video_model(args.checkpoint, args.data_dir, args.category, device=args.device, reporter=cli_reporter())
    m = result.metrics
    print(f"frame AUROC {fmt(m['frame_auroc'])} (all test frames pooled)  mean per-clip {fmt(m['mean_clip_frame_auroc'])}  "
          f"video AUROC {fmt(m['video_auroc'])}  {m['timing']['frames_per_second']:.1f} frames/s")
    for name, row in m["per_clip"].items():
        print(f"  {name:<16} {row['type']:<16} {row['frames']:>5} frames  AUROC {fmt(row['frame_auroc'])}  "
              f"flagged {row['flagged_frames']}  events {row['events']}")
    print(f"report: {result.report_path}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from anomalens.workflows.predict import analyze_video

    check_engine_flags(args)
    if args.engine == "ray":
        from anomalens.cli.distributed import analyze_on_ray

        return analyze_on_ray(args)
    if len(args.video) > 1:
        raise ConfigError("several videos are analysed in parallel with --engine ray; locally give one")
    analysis = analyze_video(args.checkpoint, args.video[0], args.output_dir, device=args.device, reporter=cli_reporter(),
                             fps=args.fps, overwrite=args.overwrite)
    frames = len(analysis.scores)
    print(f"{int(analysis.anomalous.sum())} of {frames} frames above the threshold; {len(analysis.events)} interval(s):")
    for event in analysis.events:
        print(f"  {event.start_time:8.2f}-{event.end_time:.2f} s  frames {event.start_frame}-{event.end_frame}  "
              f"peak {event.peak_score:.5g} at frame {event.peak_frame}")
    if analysis.drift is not None and analysis.drift.drifted:
        print(f"WARNING {analysis.drift.message}")
    print(f"side by side: {analysis.side_by_side_path}")
    print(f"timeline: {analysis.timeline_path}  scores: {analysis.scores_csv}  events: {analysis.events_json}")
    return 0
