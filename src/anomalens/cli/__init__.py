"""Command line: ``anomalens <command> ...`` (also ``python -m anomalens``).

A thin layer over the library: each command parses flags, calls one workflow function and prints where the
results went. User errors (:class:`~anomalens.errors.AnomalensError`) print one line and exit 2;
Ctrl-C exits 130 after the workflow has saved what it could.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Sequence

from anomalens import __version__
from anomalens.errors import AnomalensError, Cancelled, CheckpointError, storage_error
from anomalens.runtime import share_cpu_fairly

# Each module adds its sub-commands with register(subparsers); kept apart so that image, video, benchmark and
# UI commands (and those of new capabilities) can grow without touching each other.
COMMAND_MODULES = ("anomalens.cli.image", "anomalens.cli.video", "anomalens.cli.benchmark", "anomalens.cli.ui",
                   "anomalens.cli.live", "anomalens.cli.deploy")
# Option names that are ordinary words in messages, never rewritten as flags by settings_as_flags().
PLAIN_WORDS = frozenset({"help", "version", "model", "category", "device", "video", "output", "checkpoint", "paths",
                         "fps", "host", "port", "auth", "force", "seed"})


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


def settings_as_flags(message: str, parser: argparse.ArgumentParser) -> str:
    """Library errors name settings (``image_size must ...``); on the command line they read as flags
    (``--image-size must ...``), for every option of the command that ran."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        long = [option for option in action.option_strings if option.startswith("--")]
        if long and action.dest not in PLAIN_WORDS:
            flags[action.dest] = long[0]
    if not flags:
        return message
    names = "|".join(re.escape(name) for name in sorted(flags, key=len, reverse=True))
    return re.sub(rf"(?<![\w-])({names})(?![\w-])", lambda match: flags[match.group(1)], message)


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    share_cpu_fairly()  # before torch loads: thread pools that sleep when idle (fair on a shared CPU)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    if getattr(args, "feature_runtime", None):
        os.environ["ANOMALENS_FEATURE_RUNTIME"] = args.feature_runtime  # read by models.components.onnx_backbone
    try:
        return int(args.handler(args) or 0)
    except AnomalensError as exc:
        from anomalens.progress import close_progress_bars

        close_progress_bars()
        # a checkpoint's fields are keys of its JSON files, not flags: they keep their names
        message = exc.message if isinstance(exc, CheckpointError) else settings_as_flags(
            exc.message, _command_parser(parser, args.command))
        print(f"anomalens: error: {f'{exc.path}: ' if exc.path is not None else ''}{message}", file=sys.stderr)
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
