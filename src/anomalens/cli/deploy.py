"""``anomalens export | serve``: take a trained model to the line (a thin layer over ``anomalens.export`` and
``anomalens.serve``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from anomalens.cli.common import add_checkpoint_flag, check_number, cli_reporter, example_epilog
from anomalens.limits import MAX_IMAGE_PIXELS

FORMATS = ("onnx", "openvino")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    export = subparsers.add_parser(
        "export", formatter_class=fmt, help="export a model as an ONNX or OpenVINO bundle",
        description="Write a self-contained bundle (network, memory bank, bundle.json with preprocessing, "
                    "post-processing, threshold and versions) that the torch-free runtime (anomalens.inference) "
                    "and `anomalens serve` load. Precisions: onnx fp32|int8, openvino fp32|bf16|int8; int8 is "
                    "calibrated on the run's training images, and reduced precisions keep the checkpoint's threshold, "
                    "moved by their measured score shift on its validation images. Video models (stfeatures, convlstm) export at fp32; their bundles are "
                    "scored by anomalens.inference.VideoInferencer (optical flow, smoothing in time and events run "
                    "outside the graphs).",
        epilog=example_epilog(
            "anomalens export --checkpoint results/bottle_20261128_120000 --format onnx",
            "anomalens export --checkpoint results/bottle_20261128_120000 --format openvino --precision int8 --output bundles/bottle_ov_int8",
            "anomalens export --checkpoint results/video_ucsd_ped2_20261128_120000 --format onnx"),
    )
    add_checkpoint_flag(export)
    export.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (ONNX Runtime) or openvino (default: onnx)")
    export.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (same scores as the checkpoint, default), bf16 (openvino), int8; fp16 is refused on CPU")
    export.add_argument("--output", type=Path, default=None, help="bundle folder (default: RUN_DIR/export/<format>_<precision>)")
    export.add_argument("--calibration-images", type=int, default=64, help="int8: training images used to calibrate (default: 64)")
    export.set_defaults(handler=_export)

    serve = subparsers.add_parser(
        "serve", formatter_class=fmt, help="serve a model over HTTP (REST, micro-batched)",
        description="Serve a bundle (torch-free runtime) or a run folder (PyTorch) on FastAPI + uvicorn: POST /v1/predict, "
                    "GET /v1/model, GET /healthz, GET /metrics. Listening beyond 127.0.0.1 requires a token.",
        epilog=example_epilog(
            "anomalens serve --model results/bottle_20261128_120000/export/onnx_fp32 --port 8000 --token s3cret",
            "curl -H 'Authorization: Bearer s3cret' --data-binary @part.png http://127.0.0.1:8000/v1/predict"),
    )
    serve.add_argument("--model", required=True, type=Path, help="bundle folder (bundle.json) or run folder")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--token", default=None, help="bearer token clients must send (or set ANOMALENS_SERVE_TOKEN)")
    serve.add_argument("--max-batch", type=int, default=None, help="images per forward pass (default: the model's)")
    serve.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits for more images (default: 10)")
    serve.add_argument("--queue-size", type=int, default=64,
                       help="images allowed to wait; beyond it 503; a request may carry at most this many (default: 64)")
    serve.add_argument("--max-request-mb", type=float, default=20.0, help="largest request body in MB (default: 20)")
    serve.add_argument("--max-decode-mp", type=float, default=2 * MAX_IMAGE_PIXELS / 1e6,
                       help="megapixels of uploads decoded at once, all requests together; beyond it 503, a single "
                            f"larger image 413 (default: {2 * MAX_IMAGE_PIXELS / 1e6:.1f}, two 8192x8192 images)")
    serve.add_argument("--threads", type=int, default=None, help="engine threads for a bundle (default: the engine's)")
    serve.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="for a run folder (default: auto)")
    serve.set_defaults(handler=_serve)


def _export(args: argparse.Namespace) -> int:
    from anomalens.export import export_model

    result = export_model(args.checkpoint, args.format, args.precision, args.output,
                          calibration_images=args.calibration_images, reporter=cli_reporter())
    check = result.check
    if check:
        unit = f"{check['images']} validation images" if "images" in check else f"{check['frames']} frames of validation clips"
        print(f"checked on {unit}: largest score difference {check['max_score_difference']:.3g} "
              f"({check['max_score_difference_over_scale']:.2g} of the calibration's scale), heatmaps within "
              f"{check['max_heatmap_difference']:.2g}, same verdicts: {check['same_verdicts']}")
    print(f"bundle: {result.folder}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from anomalens.serve import ServeSettings, serve

    # before the model loads: a bad value would otherwise stop the server with a traceback, or be taken as is
    check_number("--port", args.port, at_least=1, at_most=65535)
    for flag, value in (("--max-batch", args.max_batch), ("--queue-size", args.queue_size), ("--threads", args.threads)):
        check_number(flag, value, at_least=1)
    check_number("--max-wait-ms", args.max_wait_ms, at_least=0)
    check_number("--max-request-mb", args.max_request_mb, above=0)
    check_number("--max-decode-mp", args.max_decode_mp, above=0)
    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, queue_size=args.queue_size,
                             max_request_bytes=int(args.max_request_mb * (1 << 20)),
                             max_decode_pixels=max(1, int(args.max_decode_mp * 1e6)))
    serve(args.model, host=args.host, port=args.port, token=args.token, settings=settings, device=args.device,
          threads=args.threads, announce=lambda line: print(f"anomalens: {line} (Ctrl-C stops)", flush=True))
    return 0
