"""Flags every command shares, so that they read the same everywhere."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Sequence

from anomalens.errors import ConfigError
from anomalens.progress import Reporter
from anomalens.runtime import DEVICE_CHOICES

# Ctrl-C: the shell's code for SIGINT, also when training stopped early but kept (and saved) its best model
INTERRUPTED_EXIT_CODE = 130


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to compute (default: auto = CUDA, then MPS, then CPU)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same model (default: 0)")


def example_epilog(*lines: str) -> str:
    return "Example:\n  " + "\n  ".join(lines)


def print_train_result(result: Any, unit: str, evaluate_command: str) -> None:
    """What every training command prints at the end: where the model is and how its threshold was chosen."""
    cal = result.detector.calibration_
    if result.interrupted:
        print("training was stopped early; the best model so far was kept")
    print(f"model saved: {result.run_dir}")
    if cal is not None:
        print(f"threshold {cal.threshold:.6g} (from {cal.validation_count} validation {unit}, "
              f"target false-positive rate {cal.target_fpr:g})")
    print(f"next: anomalens {evaluate_command} --checkpoint {result.run_dir}")


def format_metric(value: float | None) -> str:
    """A metric for the terminal: four decimals, or n/a where it could not be computed."""
    return "n/a" if value is None else f"{value:.4f}"


def model_settings(args: argparse.Namespace, model: str, flags: Sequence[str]) -> dict[str, Any]:
    """The model flags the user gave (argparse default None = not given), checked against the model's config.

    Config field names equal the flag names with underscores, so a flag the model lacks is named in the error.
    """
    from anomalens.models.base import detector_class

    given = {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}
    fields = {f.name for f in dataclasses.fields(detector_class(model).config_class)}
    for name in given:
        if name not in fields:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to model {model}")
    return given


def cli_reporter() -> Reporter:
    """Progress for a terminal: tqdm bars, Ctrl-C to stop."""
    return Reporter(show_tqdm=True)
