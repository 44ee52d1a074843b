"""``anomalens train | evaluate | predict``: the image commands, a thin layer over the workflows.

Flags are passed to the library only when given, so each model keeps its own defaults; a flag the chosen
model does not have is an error that names the flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalens.cli.common import (
    add_checkpoint_flag,
    add_common_flags,
    add_evaluate_flags,
    add_image_model_flags,
    add_train_flags,
    check_number,
    cli_reporter,
    example_epilog,
    formatter_for,
    run_training,
)
from anomalens.cli.distributed import add_engine_flags, check_engine_flags
from anomalens.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = formatter_for("image")

    train = subparsers.add_parser(
        "train", formatter_class=fmt, help="train an image model on normal images",
        description="Train an image anomaly detector on <data-dir>/<category>/train/good (minus a validation split "
                    "that sets the threshold) and save it to <results-dir>/<category>_<timestamp>/.",
        epilog=example_epilog(
            "anomalens train --data-dir ../shared/data/mvtec_ad --category bottle",
            "anomalens train --data-dir data --category bottle --model autoencoder --epochs 12 --loss combined"),
    )
    add_train_flags(train, "dataset root holding <category>/train/good/", "bottle", several_categories=True)
    add_image_model_flags(train)
    add_common_flags(train)
    add_engine_flags(train, block_help="images per feature block of one category's training set (default: 32)")
    train.set_defaults(handler=_train)

    evaluate = subparsers.add_parser(
        "evaluate", formatter_class=fmt, help="measure a trained image model on the test split",
        description="Score test/ of the dataset (by default the one the run was trained on) and write metrics.json, "
                    "report.md, roc_curve.png, score_distribution.png and samples.png to RUN_DIR/evaluation/.",
        epilog=example_epilog("anomalens evaluate --checkpoint results/bottle_20261128_120000"),
    )
    add_evaluate_flags(evaluate)
    evaluate.add_argument("--batch-size", type=int, default=None, help="images scored together (default: the model's)")
    evaluate.set_defaults(handler=_evaluate)

    predict = subparsers.add_parser(
        "predict", formatter_class=fmt, help="score new images with a trained image model",
        description="Score image files or folders (searched recursively): raw score, normalised score (0.5 = the "
                    "model's threshold), verdict and an overlay PNG per image; predictions.csv and predictions.json.",
        epilog=example_epilog("anomalens predict --checkpoint results/bottle_20261128_120000 photos/ extra.png"),
    )
    add_checkpoint_flag(predict)
    predict.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="image files or folders")
    predict.add_argument("--output-dir", "--output", type=Path, default=None,
                         help="where to write (default: a new RUN_DIR/predictions/<YYYYmmdd_HHMMSS>/ per call; "
                              "required with --engine ray)")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace the predictions already in --output-dir (refused without this flag)")
    predict.add_argument("--masks", action="store_true",
                         help="also write each defect mask (pixels above the pixel threshold) as <name>_mask.png")
    predict.add_argument("--overlays", action="store_true",
                         help="with --engine ray: also write an overlay PNG per image (local predict always does)")
    # predict_images' own default, given here: left at None, the help would show the models' training batch sizes
    predict.add_argument("--batch-size", type=int, default=32, help="images scored together (default: 32)")
    add_common_flags(predict)
    add_engine_flags(predict, block_help="images per block, the unit of work and of resuming (default: 64)")
    predict.set_defaults(handler=_predict)


def _train(args: argparse.Namespace) -> int:
    check_engine_flags(args)
    if args.engine == "ray":
        from anomalens.cli.distributed import train_on_ray

        return train_on_ray(args)
    if len(args.category) > 1 or args.category == ["all"]:
        raise ConfigError("several categories (or all) train in parallel with --engine ray; locally give one")
    args.category = args.category[0]
    return run_training(args, "image", "evaluate")


def _evaluate(args: argparse.Namespace) -> int:
    from anomalens.workflows.evaluate import evaluate_image_model
    from anomalens.workflows.reports import format_number as fmt

    check_number("--batch-size", args.batch_size, at_least=1)
    result = evaluate_image_model(args.checkpoint, args.data_dir, args.category, device=args.device,
                                  reporter=cli_reporter(), batch_size=args.batch_size)
    m = result.metrics
    print(f"image AUROC {fmt(m['image_auroc'])}  pixel AUROC {fmt(m['pixel_auroc'])}  AUPRO {fmt(m['aupro'])}  "
          f"F1-max {fmt(m['f1_max'])}")
    for name, row in m["per_defect_type"].items():
        print(f"  {name:<20} {row['count']:>4} images  mean score {row['mean_score']:.5g}  flagged {row['share_flagged']:.0%}")
    if (m.get("drift") or {}).get("drifted"):
        print(f"WARNING {m['drift']['message']}")
    print(f"report: {result.report_path}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from anomalens.metrics.classification import verdict_word
    from anomalens.workflows.predict import predict_images

    check_engine_flags(args)
    check_number("--batch-size", args.batch_size, at_least=1)
    if args.engine == "ray":
        from anomalens.cli.distributed import predict_on_ray

        return predict_on_ray(args)
    report = predict_images(args.checkpoint, args.paths, args.output_dir, device=args.device, reporter=cli_reporter(),
                            overwrite=args.overwrite, save_masks=args.masks, batch_size=args.batch_size,
                            keep_arrays=False)  # only scores and files are shown: memory stays one batch's
    for r in report.results:
        verdict = verdict_word(r.anomalous)
        print(f"{r.path}\tscore {r.score:.5g}\tnormalised {r.normalized_score:.3f}\t{verdict}\tregions {len(r.regions)}")
    flagged = sum(r.anomalous for r in report.results)
    print(f"{flagged} of {len(report.results)} images anomalous; results: {report.csv_path}")
    if report.drift is not None and report.drift.drifted:
        print(f"WARNING {report.drift.message}")
    return 0
