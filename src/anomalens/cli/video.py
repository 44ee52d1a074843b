"""``anomalens train-video | evaluate-video | analyze-video``: the video commands, a thin layer over the workflows.

Model flags (the original system's) are passed to the model only when given, so each model keeps its own
defaults; a flag the chosen model does not have is an error that names the flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalens.cli.common import (
    INTERRUPTED_EXIT_CODE,
    add_common_flags,
    cli_reporter,
    example_epilog,
    format_metric,
    model_settings,
    print_train_result,
)

VIDEO_MODELS = ("stfeatures", "convlstm")
# flag dest -> the model config field it sets (the same name, by design)
MODEL_FLAGS = ("sequence_length", "stride", "epochs", "batch_size", "lr", "latent_dim", "lstm_hidden_dim", "lstm_layers",
               "target_fpr", "appearance_memory", "motion_memory", "flow_preset", "frame_step", "temporal_sigma")


def add_stfeatures_flags(parser: argparse.ArgumentParser) -> None:
    """The settings of the default video model a user may want to change (see models/video/stfeatures.py)."""
    group = parser.add_argument_group("stfeatures (the default video model)")
    group.add_argument("--appearance-memory", type=int, default=None,
                       help="entries of the appearance memory; fewer = faster scoring (default: 4096)")
    group.add_argument("--motion-memory", type=int, default=None, help="normal motions kept per cell (default: 256)")
    group.add_argument("--flow-preset", choices=("ultrafast", "fast", "medium"), default=None,
                       help="optical-flow quality against speed (default: medium)")
    group.add_argument("--frame-step", type=int, default=None, help="learn from every n-th training frame (default: 2)")
    group.add_argument("--temporal-sigma", type=float, default=None,
                       help="Gaussian smoothing of frame scores, in frames; 0 = none (default: 2)")


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter

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
    train.add_argument("--data-dir", required=True, type=Path, help="dataset root holding <category>/")
    train.add_argument("--category", required=True, help="category folder name, e.g. ucsd_ped2")
    train.add_argument("--model", choices=VIDEO_MODELS, default="stfeatures", help="video model (default: stfeatures)")
    train.add_argument("--results-dir", type=Path, default=Path("results"), help="where runs go (default: results)")
    train.add_argument("--run-name", default=None, help="run folder name (default: video_<category>_<timestamp>)")
    train.add_argument("--image-size", type=int, nargs="+", metavar=("H", "W"), default=None,
                       help="resize frames to H x W (one number: square; default: the model's, 240x360 for "
                            "stfeatures, 256 for convlstm)")
    train.add_argument("--validation-fraction", type=float, default=0.1,
                       help="share of the normal training clips held out for model selection and the threshold; with "
                            "one clip, the share of its frames at the end (default: 0.1)")
    train.add_argument("--batch-size", type=int, default=None, help="frames or windows per batch (default: the model's)")
    train.add_argument("--target-fpr", type=float, default=None,
                       help="share of normal frames allowed above the threshold (default: 0.01)")
    lstm = train.add_argument_group("convlstm (the original's model)")
    lstm.add_argument("--sequence-length", type=int, default=None, help="frames per window (default: 16)")
    lstm.add_argument("--stride", type=int, default=None, help="frames between window starts (default: 4)")
    lstm.add_argument("--epochs", type=int, default=None, help="training epochs (default: 50)")
    lstm.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-4)")
    lstm.add_argument("--latent-dim", type=int, default=None, help="encoder output channels (default: 128)")
    lstm.add_argument("--lstm-hidden-dim", type=int, default=None, help="ConvLSTM hidden channels (default: 128)")
    lstm.add_argument("--lstm-layers", type=int, default=None, help="ConvLSTM layers (default: 2)")
    add_stfeatures_flags(train)
    add_common_flags(train)
    train.set_defaults(handler=_train)

    evaluate = subparsers.add_parser(
        "evaluate-video", formatter_class=fmt, help="measure a trained video model on the test clips",
        description="Score every test clip (by default of the dataset the run was trained on) and write metrics.json "
                    "(frame AUROC over all test frames pooled, per clip, video AUROC), report.md, frame_scores.csv "
                    "and a timeline PNG per clip to RUN_DIR/evaluation/.",
        epilog=example_epilog("anomalens evaluate-video --checkpoint results/video_ucsd_ped2_20261128_120000"),
    )
    evaluate.add_argument("--checkpoint", required=True, type=Path, help="run folder (or its model/ folder)")
    evaluate.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: the one in run.json)")
    evaluate.add_argument("--category", default=None, help="category (default: the one in run.json)")
    add_common_flags(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    analyze = subparsers.add_parser(
        "analyze-video", formatter_class=fmt, help="find anomalous moments in one video",
        description="Score every frame of a video file (mp4, avi, mov, mkv) or a folder of frames with the model's "
                    "own threshold; write side_by_side.mp4 (original | model view | heatmap, one frame per input "
                    "frame, H.264), timeline.png, scores.csv and events.json.",
        epilog=example_epilog(
            "anomalens analyze-video --checkpoint results/video_ucsd_ped2_20261128_120000 --video clip.mp4",
            "anomalens analyze-video --checkpoint RUN_DIR --video frames_dir/ --fps 10 --output-dir out/"),
    )
    analyze.add_argument("--checkpoint", required=True, type=Path, help="run folder (or its model/ folder)")
    analyze.add_argument("--video", required=True, type=Path, help="video file or folder of frames")
    analyze.add_argument("--output-dir", type=Path, default=None,
                         help="where to write (default: RUN_DIR/analysis/<video>_<timestamp>/)")
    analyze.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames (default: 25)")
    add_common_flags(analyze)
    analyze.set_defaults(handler=_analyze)


def _train(args: argparse.Namespace) -> int:
    from anomalens.workflows.video import train_video_model

    result = train_video_model(
        args.data_dir, args.category, args.model, args.results_dir, image_size=args.image_size,
        validation_fraction=args.validation_fraction, seed=args.seed, device=args.device, reporter=cli_reporter(),
        run_name=args.run_name, **model_settings(args, args.model, MODEL_FLAGS),
    )
    print_train_result(result, "frames", "evaluate-video")
    return INTERRUPTED_EXIT_CODE if result.interrupted else 0


def _evaluate(args: argparse.Namespace) -> int:
    from anomalens.workflows.video import evaluate_video_model

    result = evaluate_video_model(args.checkpoint, args.data_dir, args.category, device=args.device, reporter=cli_reporter())
    m = result.metrics
    fmt = format_metric
    print(f"frame AUROC {fmt(m['frame_auroc'])} (all test frames pooled)  mean per-clip {fmt(m['mean_clip_frame_auroc'])}  "
          f"video AUROC {fmt(m['video_auroc'])}  {m['timing']['frames_per_second']:.1f} frames/s")
    for name, row in m["per_clip"].items():
        print(f"  {name:<16} {row['type']:<16} {row['frames']:>5} frames  AUROC {fmt(row['frame_auroc'])}  "
              f"flagged {row['flagged_frames']}  events {row['events']}")
    print(f"report: {result.report_path}")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from anomalens.workflows.video import analyze_video

    analysis = analyze_video(args.checkpoint, args.video, args.output_dir, device=args.device, reporter=cli_reporter(),
                             fps=args.fps)
    frames = len(analysis.scores)
    print(f"{int(analysis.anomalous.sum())} of {frames} frames above the threshold; {len(analysis.events)} interval(s):")
    for event in analysis.events:
        print(f"  {event['start_time']:8.2f}-{event['end_time']:.2f} s  frames {event['start_frame']}-{event['end_frame']}  "
              f"peak {event['peak_score']:.5g} at frame {event['peak_frame']}")
    print(f"side by side: {analysis.side_by_side_path}")
    print(f"timeline: {analysis.timeline_path}  scores: {analysis.scores_csv}  events: {analysis.events_json}")
    return 0
