"""``anomalens ui`` (the web UI) and ``anomalens demo`` (demo data and models, then the UI)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Iterator

from anomalens.cli.common import add_common_flags, check_number, example_epilog
from anomalens.ui.security import AUTH_ENV, DEFAULT_MAX_UPLOAD_MB, MAX_UPLOAD_MB

DEFAULT_DATA_ROOTS = ("data", "demo_data")


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 = every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--results-dir", default="results", help="where models are found and new ones are saved (default: results)")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD", help=f"require this login; on a shared machine set {AUTH_ENV}=user:password instead "
                        "(a flag is visible to other users in ps)")
    parser.add_argument("--max-upload-mb", type=int, default=DEFAULT_MAX_UPLOAD_MB, help=f"largest accepted upload in MB, 1..{MAX_UPLOAD_MB} (default: {DEFAULT_MAX_UPLOAD_MB})")
    add_common_flags(parser)


def register(subparsers: argparse._SubParsersAction) -> None:
    ui = subparsers.add_parser(
        "ui", help="start the web UI", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start the web UI: inspect images, analyse videos, train and evaluate models in the browser.",
        epilog=example_epilog("anomalens ui --data-root ../shared/data --results-dir results", "then open http://127.0.0.1:7860"),
    )
    _server_flags(ui)
    ui.add_argument("--data-root", action="append", default=None, metavar="DIR",
                    help="a folder whose datasets the Train view may use; repeat for several (default: ./data and ./demo_data)")
    ui.set_defaults(handler=run_ui)

    demo = subparsers.add_parser(
        "demo", help="prepare demo data and models, then start the web UI", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="First run: write synthetic image and video datasets to --demo-dir and train small demo models into "
        "--results-dir (a minute or two on a CPU). Later runs reuse them. Then start the UI with examples loaded.",
        epilog=example_epilog("anomalens demo", "anomalens demo --no-launch   # prepare only",
                              "anomalens demo --data-root ../shared/data   # and train on real data in the UI"),
    )
    _server_flags(demo)
    demo.add_argument("--demo-dir", default="demo_data", help="where the demo datasets go (default: demo_data)")
    demo.add_argument("--no-launch", action="store_true", help="prepare data and models, then exit")
    demo.add_argument("--no-video", action="store_true", help="skip the video half of the demo")
    demo.add_argument("--force", action="store_true", help="rebuild the demo data and models")
    demo.add_argument("--data-root", action="append", default=None, metavar="DIR",
                      help="also let the Train view use the datasets in DIR (repeat for several), e.g. ../shared/data")
    demo.set_defaults(handler=run_demo)


def _check_server_flags(args: argparse.Namespace) -> None:
    """One line and exit 2 for a number Gradio would take and fail on later, with a traceback (``-1`` MB)."""
    check_number("--port", args.port, at_least=1, at_most=65535)
    check_number("--max-upload-mb", args.max_upload_mb, at_least=1, at_most=MAX_UPLOAD_MB)


def _launch(args: argparse.Namespace, data_roots: list[Path], image_examples=(), video_examples=()) -> int:
    from anomalens.runtime import resolve_device
    from anomalens.ui import UISettings, launch
    from anomalens.ui.security import require_login_beyond_loopback, resolve_auth

    _check_server_flags(args)
    auth = resolve_auth(args.auth)
    require_login_beyond_loopback(args.host, auth)  # launch() checks too; here it fails before any output
    if args.auth:
        print(f"anomalens: warning: --auth is visible to every user of this machine (ps); on a shared machine set "
              f"{AUTH_ENV}=user:password instead", file=sys.stderr)
    resolve_device(args.device)  # a bad --device fails here, not on the first click
    settings = UISettings(
        results_dir=args.results_dir, data_roots=data_roots, device=args.device, max_upload_mb=args.max_upload_mb,
        image_examples=list(image_examples), video_examples=list(video_examples),
    )
    print(f"anomalens: UI at http://{args.host}:{args.port} (models in {settings.results_dir}; Ctrl-C stops)")
    with _sigterm_as_ctrl_c():
        launch(settings, host=args.host, port=args.port, auth=auth)
    return 0


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
    """SIGTERM (systemd, ``docker stop``, ``kill``) taken as Ctrl-C while the server runs.

    Python's default for SIGTERM ends the process at once, without its exit handlers, so the private folder with
    every session's outputs (removed at exit by :func:`anomalens.ui.launch`) stayed on disk. As Ctrl-C, Gradio closes
    the server, ``launch`` returns and the process exits 0, which service managers count as a clean stop. A second
    SIGTERM is ignored, so that it cannot interrupt the shutdown itself (a stuck one is for SIGKILL).
    """
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    terminated = []

    def stop(signum: int, frame: Any) -> None:
        terminated.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    except KeyboardInterrupt:
        if not terminated:
            raise  # Ctrl-C while the server was still starting: "interrupted", 130, as before
        # SIGTERM while it was still starting (Gradio's own catch was not reached yet): a clean stop all the same
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_ui(args: argparse.Namespace) -> int:
    roots = args.data_root if args.data_root else [r for r in DEFAULT_DATA_ROOTS if Path(r).is_dir()]
    return _launch(args, [Path(r) for r in roots])


def run_demo(args: argparse.Namespace) -> int:
    from anomalens.progress import Reporter
    from anomalens.ui.security import require_login_beyond_loopback, resolve_auth
    from anomalens.workflows.demo import prepare_demo

    _check_server_flags(args)  # as a malformed login does, before minutes of training
    auth = resolve_auth(args.auth)  # a malformed login, or none beyond loopback, fails before minutes of training
    if not args.no_launch:
        require_login_beyond_loopback(args.host, auth)
    seed = {} if args.seed is None else {"seed": args.seed}  # not given: prepare_demo's own
    assets = prepare_demo(args.demo_dir, args.results_dir, device=args.device, force=args.force,
                          video=not args.no_video, reporter=Reporter(), **seed)
    for problem in assets.problems:
        print(f"anomalens: warning: {problem}", file=sys.stderr)
    print(f"anomalens: demo data in {assets.data_root}")
    for label, run in (("image model", assets.image_run), ("video model", assets.video_run)):
        if run is not None:
            print(f"anomalens: {label}: {run}")
    if args.no_launch:
        return 0 if not assets.problems else 1
    extra = [Path(r) for r in args.data_root or []]
    return _launch(args, [assets.data_root, *extra], assets.image_examples, assets.video_examples)
