"""``anomalens benchmark``: train, evaluate and time one model on one dataset, image or video.

The data kind is detected from the dataset's layout (:mod:`anomalens.workflows.kinds`); the flags of the
other kind's models are refused by name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalens.cli.common import (
    MODEL_FLAGS,
    add_common_flags,
    add_image_model_flags,
    add_train_flags,
    add_video_model_flags,
    cli_reporter,
    example_epilog,
    formatter_for,
    model_settings,
    train_options,
)
from anomalens.errors import ConfigError, DataError

def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "benchmark", formatter_class=formatter_for("image", "video"), help="train, evaluate and time a model in one run",
        description="Train (on the normal training data minus the validation split), evaluate on the test part and "
                    "time; print a table and write JSON (model, category, image_auroc, pixel_auroc, aupro, f1_max, "
                    "fit_seconds, images_per_second, cpu_ms_per_image, peak_rss_mb, epochs, ...). Video datasets get "
                    "the video figures (frame_auroc, frames_per_second, ...).",
        epilog=example_epilog(
            "anomalens benchmark --data-dir ../shared/data/mvtec_ad --category bottle --model autoencoder --epochs 12 "
            "--output bench.json",
            "anomalens benchmark --data-dir ../shared/data/mvtec_ad --category bottle --runtimes onnx:fp32 openvino:fp32 "
            "openvino:bf16 onnx:int8"),
    )
    add_train_flags(bench, "dataset root holding <category>/", "bottle")
    add_image_model_flags(bench)
    add_video_model_flags(bench, with_training_flags=False)
    bench.add_argument("--output", type=Path, default=None, help="JSON file to write (default: RUN_DIR/benchmark.json)")
    bench.add_argument("--runtimes", nargs="+", default=None, metavar="ENGINE:PRECISION",
                       help="image models: also export to these runtimes and score the test set with each beside "
                            "PyTorch (onnx:fp32 onnx:int8 openvino:fp32 openvino:bf16 openvino:int8, or all)")
    bench.add_argument("--repeats", type=int, default=1, help="with --runtimes: timed passes over the test set, best kept (default: 1)")
    add_common_flags(bench)
    bench.set_defaults(handler=_benchmark)


def _benchmark(args: argparse.Namespace) -> int:
    from anomalens.workflows.benchmark import format_runtime_table, run_benchmark
    from anomalens.workflows.kinds import DATA_KINDS, detect_kind, layout_help
    from anomalens.workflows.reports import format_benchmark_table

    kind = detect_kind(args.data_dir, args.category)
    if kind is None:
        raise DataError(layout_help(), args.data_dir / args.category)
    other_flags = {name for other, flags in MODEL_FLAGS.items() if other != kind.name for name in flags}
    unused = [f"--{name.replace('_', '-')}" for name in sorted(other_flags - set(MODEL_FLAGS[kind.name]))
              if getattr(args, name, None) is not None]
    if unused:
        raise ConfigError(f"{', '.join(unused)} only apply to {' or '.join(k for k in DATA_KINDS if k != kind.name)} datasets")
    model = args.model or kind.default_model
    result = run_benchmark(args.data_dir, args.category, model, args.results_dir, args.output, device=args.device,
                           reporter=cli_reporter(), runtimes=args.runtimes or (), repeats=args.repeats,
                           **train_options(args), **model_settings(args, model, MODEL_FLAGS[kind.name]))
    print(format_benchmark_table(result))
    if result.get("runtimes"):
        print(format_runtime_table(result["runtimes"]))
    if args.output is not None:
        print(f"written: {args.output}")
    return 0
