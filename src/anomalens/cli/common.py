"""Flags every command shares, so that they read the same everywhere."""

from __future__ import annotations

import argparse

from anomalens.runtime import DEVICE_CHOICES


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to compute (default: auto = CUDA, then MPS, then CPU)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same model (default: 0)")


def example_epilog(*lines: str) -> str:
    return "Example:\n  " + "\n  ".join(lines)
