"""``anomalens train | evaluate | predict | benchmark``: the image commands, a thin layer over the workflows.

Model flags are passed to the model only when given, so each model keeps its own defaults; a flag the
chosen model does not have is an error that names the flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalens.cli.video import add_stfeatures_flags
from anomalens.cli.common import (
    INTERRUPTED_EXIT_CODE,
    add_common_flags,
    cli_reporter,
    example_epilog,
    format_metric,
    model_settings,
    print_train_result,
)
from anomalens.errors import ConfigError

IMAGE_MODELS = ("patchcore", "padim", "autoencoder")
# flag dest -> the model config field it sets (the same name, by design)
MODEL_FLAGS = ("batch_size", "target_fpr", "epochs", "lr", "latent_dim", "loss", "ssim_weight", "num_workers",
               "normal_reference", "backbone", "coreset_ratio", "tile")
# video-model flags the benchmark also takes (it runs video datasets too)
VIDEO_MODEL_FLAGS = ("sequence_length", "stride", "lstm_hidden_dim", "lstm_layers", "appearance_memory", "motion_memory",
                     "flow_preset", "frame_step", "temporal_sigma")


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter

    train = subparsers.add_parser(
        "train", formatter_class=fmt, help="train an image model on normal images",
        description="Train an image anomaly detector on <data-dir>/<category>/train/good (minus a validation split "
                    "that sets the threshold) and save it to <results-dir>/<category>_<timestamp>/.",
        epilog=example_epilog(
            "anomalens train --data-dir ../shared/data/mvtec_ad --category bottle",
            "anomalens train --data-dir data --category bottle --model autoencoder --epochs 12 --loss combined"),
    )
    _add_train_flags(train)
    train.set_defaults(handler=_train)

    evaluate = subparsers.add_parser(
        "evaluate", formatter_class=fmt, help="measure a trained image model on the test split",
        description="Score test/ of the dataset (by default the one the run was trained on) and write metrics.json, "
                    "report.md, roc_curve.png, score_distribution.png and samples.png to RUN_DIR/evaluation/.",
        epilog=example_epilog("anomalens evaluate --checkpoint results/bottle_20261128_120000"),
    )
    evaluate.add_argument("--checkpoint", required=True, type=Path, help="run folder (or its model/ folder)")
    evaluate.add_argument("--data-dir", type=Path, default=None, help="dataset root (default: the one in run.json)")
    evaluate.add_argument("--category", default=None, help="category (default: the one in run.json)")
    add_common_flags(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    predict = subparsers.add_parser(
        "predict", formatter_class=fmt, help="score new images with a trained image model",
        description="Score image files or folders (searched recursively): raw score, normalised score (0.5 = the "
                    "model's threshold), verdict and an overlay PNG per image; predictions.csv and predictions.json.",
        epilog=example_epilog("anomalens predict --checkpoint results/bottle_20261128_120000 photos/ extra.png"),
    )
    predict.add_argument("--checkpoint", required=True, type=Path, help="run folder (or its model/ folder)")
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    predict.add_argument("--output-dir", type=Path, default=None, help="where to write (default: RUN_DIR/predictions/)")
    add_common_flags(predict)
    predict.set_defaults(handler=_predict)

    bench = subparsers.add_parser(
        "benchmark", formatter_class=fmt, help="train, evaluate and time a model in one run",
        description="Train (on train/good minus the validation split), evaluate on test/ and time; print a table "
                    "and write JSON (model, category, image_auroc, pixel_auroc, aupro, f1_max, fit_seconds, "
                    "images_per_second, peak_rss_mb, epochs, ...). Video datasets go to the video benchmark.",
        epilog=example_epilog(
            "anomalens benchmark --data-dir ../shared/data/mvtec_ad --category bottle --model autoencoder --epochs 12 "
            "--output bench.json"),
    )
    _add_train_flags(bench)
    video = bench.add_argument_group("video models (when the dataset holds videos: stfeatures, convlstm)")
    video.add_argument("--sequence-length", type=int, default=None, help="convlstm: frames per window (default: 16)")
    video.add_argument("--stride", type=int, default=None, help="convlstm: frames between window starts (default: 4)")
    video.add_argument("--lstm-hidden-dim", type=int, default=None, help="convlstm: hidden channels (default: 128)")
    video.add_argument("--lstm-layers", type=int, default=None, help="convlstm: ConvLSTM layers (default: 2)")
    add_stfeatures_flags(bench)
    bench.add_argument("--output", type=Path, default=None, help="JSON file to write (default: RUN_DIR/benchmark.json)")
    bench.set_defaults(handler=_benchmark)


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", required=True, type=Path, help="dataset root holding <category>/train/good/")
    parser.add_argument("--category", required=True, help="category folder name, e.g. bottle")
    # no argparse choices: the model registry checks the name (benchmark also takes video models); the default
    # is resolved in the handler so that `anomalens --help` does not import torch
    parser.add_argument("--model", default=None, metavar="MODEL",
                        help=f"{', '.join(IMAGE_MODELS)} (default: patchcore)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="where runs go (default: results)")
    parser.add_argument("--image-size", type=int, nargs="+", metavar=("H", "W"), default=None,
                        help="resize images to H x W (one number: square; default: 256 for images, the model's "
                             "own for video)")
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="share of train/good held out to choose the model and the threshold (default: 0.1)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default: the model's, 16)")
    parser.add_argument("--target-fpr", type=float, default=None,
                        help="share of normal images allowed above the threshold (default: 0.01)")
    ae = parser.add_argument_group("autoencoder")
    ae.add_argument("--epochs", type=int, default=None, help="training epochs (default: 50)")
    ae.add_argument("--lr", type=float, default=None, help="learning rate (default: 1e-3)")
    ae.add_argument("--latent-dim", type=int, default=None, help="bottleneck channels (default: 256)")
    ae.add_argument("--loss", choices=("mse", "ssim", "combined"), default=None, help="training loss and map (default: mse)")
    ae.add_argument("--ssim-weight", type=float, default=None, help="SSIM share of the combined loss (default: 0.5)")
    ae.add_argument("--num-workers", type=int, default=None, help="accepted for compatibility; images are decoded once")
    ae.add_argument("--normal-reference", choices=("none", "mean", "zscore"), default=None,
                    help="compare each pixel's error with normal training images: none (raw smoothed error), mean "
                         "(minus their mean error, the default) or zscore (also divided by their spread)")
    feat = parser.add_argument_group("feature models (patchcore, padim)")
    feat.add_argument("--backbone", choices=("lite0", "lite1", "lite2"), default=None,
                      help="pretrained EfficientNet-Lite feature extractor (default: lite0)")
    feat.add_argument("--coreset-ratio", type=float, default=None, help="share of patch features kept (default: 0.1)")
    feat.add_argument("--tile", type=int, default=None, metavar="N",
                      help="score large images in N x N tiles at native resolution (default: off)")
    add_common_flags(parser)


def _train(args: argparse.Namespace) -> int:
    from anomalens.workflows.image import train_image_model

    from anomalens.models.base import DEFAULT_IMAGE_MODEL

    model = args.model or DEFAULT_IMAGE_MODEL
    result = train_image_model(
        args.data_dir, args.category, model, args.results_dir, image_size=args.image_size or [256],
        validation_fraction=args.validation_fraction, seed=args.seed, device=args.device, reporter=cli_reporter(),
        **model_settings(args, model, MODEL_FLAGS),
    )
    print_train_result(result, "images", "evaluate")
    return INTERRUPTED_EXIT_CODE if result.interrupted else 0


def _evaluate(args: argparse.Namespace) -> int:
    from anomalens.workflows.image import evaluate_image_model

    result = evaluate_image_model(args.checkpoint, args.data_dir, args.category, device=args.device, reporter=cli_reporter())
    m = result.metrics
    fmt = format_metric
    print(f"image AUROC {fmt(m['image_auroc'])}  pixel AUROC {fmt(m['pixel_auroc'])}  AUPRO {fmt(m['aupro'])}  "
          f"F1-max {fmt(m['f1_max'])}")
    for name, row in m["per_defect_type"].items():
        print(f"  {name:<20} {row['count']:>4} images  mean score {row['mean_score']:.5g}  flagged {row['share_flagged']:.0%}")
    print(f"report: {result.report_path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from anomalens.workflows.image import predict_images

    report = predict_images(args.checkpoint, args.paths, args.output_dir, device=args.device, reporter=cli_reporter())
    for r in report.results:
        verdict = "ANOMALOUS" if r.anomalous else "normal"
        print(f"{r.path}\tscore {r.score:.5g}\tnormalised {r.normalized_score:.3f}\t{verdict}")
    flagged = sum(r.anomalous for r in report.results)
    print(f"{flagged} of {len(report.results)} images anomalous; results: {report.csv_path}")
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from anomalens.workflows.benchmark import format_benchmark_table, run_benchmark

    from anomalens.models.base import DEFAULT_IMAGE_MODEL

    video = False
    try:
        from anomalens.data.video_datasets import is_video_category

        video = bool(is_video_category(args.data_dir, args.category))
    except ImportError:  # the video part is optional for the image benchmark
        pass
    if video:  # the video workflow checks its own settings
        flags = MODEL_FLAGS + VIDEO_MODEL_FLAGS + ("image_size",)
        settings = {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}
        settings["validation_fraction"] = args.validation_fraction
    else:
        unused = [f"--{name.replace('_', '-')}" for name in VIDEO_MODEL_FLAGS if getattr(args, name, None) is not None]
        if unused:
            raise ConfigError(f"{', '.join(unused)} only apply to video datasets")
        settings = dict(image_size=args.image_size or [256], validation_fraction=args.validation_fraction,
                        **model_settings(args, args.model or DEFAULT_IMAGE_MODEL, MODEL_FLAGS))
    result = run_benchmark(args.data_dir, args.category, args.model, args.results_dir, args.output,
                           device=args.device, seed=args.seed, reporter=cli_reporter(), **settings)
    print(format_benchmark_table(result))
    if args.output is not None:
        print(f"written: {args.output}")
    return 0
