"""Command line: ``anomalens <command> ...`` (also ``python -m anomalens``).

A thin layer over the library: each command parses flags, calls one workflow function and prints where the
results went. User errors (:class:`~anomalens.errors.AnomalensError`) print one line and exit 2;
Ctrl-C exits 130 after the workflow has saved what it could.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from anomalens import __version__
from anomalens.errors import AnomalensError, Cancelled, storage_error

# Each module adds its sub-commands with register(subparsers); kept apart so that image, video and UI
# commands can grow without touching each other.
COMMAND_MODULES = ("anomalens.cli.image", "anomalens.cli.video", "anomalens.cli.ui")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="anomalens",
        description="Find anomalies in industrial images and video after learning only from normal examples.",
        epilog="Example: anomalens train --data-dir ../shared/data/mvtec_ad --category bottle",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"anomalens {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except AnomalensError as exc:
        from anomalens.progress import close_progress_bars

        close_progress_bars()
        print(f"anomalens: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        error = storage_error(exc)  # a read-only or full disk is the machine's state, not a bug: one line, exit 2
        if error is None:
            raise
        from anomalens.progress import close_progress_bars

        close_progress_bars()
        print(f"anomalens: error: {error}", file=sys.stderr)
        return error.exit_code
    except (KeyboardInterrupt, Cancelled):
        from anomalens.progress import close_progress_bars

        close_progress_bars()
        print("anomalens: interrupted", file=sys.stderr)
        from anomalens.cli.common import INTERRUPTED_EXIT_CODE

        return INTERRUPTED_EXIT_CODE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
