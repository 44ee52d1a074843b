"""Flags every command shares, so that they read the same everywhere."""

from __future__ import annotations

import argparse
from typing import Any

from anomalens.runtime import DEVICE_CHOICES


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
