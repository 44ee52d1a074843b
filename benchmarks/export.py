"""Exported runtimes side by side with PyTorch on one dataset, for an existing run (no training).

A thin wrapper over :func:`anomalens.workflows.benchmark.compare_runtimes`, which ``anomalens benchmark
--runtimes ...`` also runs after training. Scoring time excludes decoding; the test split is read only to measure.

    PYTHONPATH=src python benchmarks/export.py --data-dir ../shared/data/mvtec_ad --category bottle \
        --checkpoint results/bottle_x --runtimes onnx:fp32 openvino:fp32 openvino:bf16 onnx:int8 --output export_bench.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from anomalens.progress import Reporter
from anomalens.workflows.benchmark import RUNTIMES, compare_runtimes, format_runtime_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--category", required=True)
    parser.add_argument("--checkpoint", required=True, type=Path, help="a run folder of an image model")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), help="engine:precision pairs (default: all)")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes over the test set (best is kept)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = compare_runtimes(args.checkpoint, args.data_dir, args.category, args.runtimes, repeats=args.repeats,
                            reporter=Reporter())
    print(format_runtime_table(rows))
    if args.output is not None:
        args.output.write_text(json.dumps({"run": str(args.checkpoint), "category": args.category, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
