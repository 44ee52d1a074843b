"""The hard synthetic image set (tall rods, faint thin defects, drifting light): square vs aspect-aware input.

Generates :mod:`anomalens.data.synthetic_tall` (60 training, 20 good and 30 defective test images of
504 x 200 px) and runs the default image model twice through the same path as ``anomalens benchmark``:
with ``--image-size 256`` (the former default: squashed square) and with the default aspect-aware size.

    PYTHONPATH=src python benchmarks/tall_images.py --output /tmp/tall.json

A few minutes on a CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from anomalens.data.synthetic_tall import TALL_CATEGORY, make_tall_synthetic_dataset
from anomalens.progress import Reporter
from anomalens.workflows.benchmark import run_benchmark

KEYS = ("image_size", "image_auroc", "pixel_auroc", "aupro", "images_per_second", "peak_rss_mb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="anomalens_tall_"))
    data_dir = make_tall_synthetic_dataset(work / "data", seed=args.seed)
    report = {}
    for label, size in (("square_256", 256), ("aspect_aware_default", None)):
        result = run_benchmark(data_dir, TALL_CATEGORY, None, work / "results", work / f"{label}.json",
                               seed=args.seed, reporter=Reporter(show_tqdm=False), image_size=size)
        row = {key: result.get(key) for key in KEYS}
        at = result.get("at_model_threshold") or {}
        row["defective_found_at_threshold"] = at.get("recall")
        row["good_flagged_at_threshold"] = at.get("false_positive_rate")
        report[label] = row
        print(label, json.dumps(row), flush=True)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
