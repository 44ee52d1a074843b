"""The hard synthetic image sets (tall parts, faint thin defects, textured surfaces, drifting light): before/after.

Generates :mod:`anomalens.data.synthetic_tall` twice: ``rod`` (504 x 200 px, the part fills about 40% of the frame)
and ``pin`` (640 x 320 px, a thin pin covering about 13%, like MVTec's screw); 60 training, 20 good and 30 defective
test images each. Each set is run through the same path as ``anomalens benchmark`` with the former defaults
("before": the aspect kept at 256x256 pixels, the image score the maximum of the whole map), with only the image
score taken on the part ("part score", ``--score-region part``, whether or not it is the default there), with the current defaults
but the part score at the capped map's highest pixel ("highest pixel", ``--score-window 1``: the default before
``score_window``), and with the current defaults ("after": more pixels for small parts, the score region chosen at
training on the validation images, ``score_region`` "auto", and the part score the highest mean over 20 px
squares); "after" always runs, the others not when they repeat an earlier row.
Prints a Markdown table.

    PYTHONPATH=src python benchmarks/tall_images.py --output /tmp/tall.json

About fifteen minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from anomalens.data.preprocessing import (
    aspect_aware_size,
    default_input_size,
    list_images,
    native_size,
    typical_part_share,
)
from anomalens.data.synthetic_tall import PARTS, make_tall_synthetic_dataset
from anomalens.progress import Reporter
from anomalens.workflows.benchmark import run_benchmark

KEYS = ("image_size", "image_auroc", "pixel_auroc", "aupro", "fit_seconds", "images_per_second", "peak_rss_mb")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=["rod", "pin"])
    args = parser.parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="anomalens_tall_"))
    report: dict[str, dict] = {}
    for part in args.parts:
        data_dir = make_tall_synthetic_dataset(work / part, seed=args.seed, part=part)
        category = next(p.name for p in data_dir.iterdir() if p.is_dir())
        train = list_images(data_dir / category / "train" / "good")
        share = typical_part_share(train)
        aspect, default = aspect_aware_size(*native_size(train)), default_input_size(train, share)
        # (input size, score_region, score_window); None: the config's default (region auto, window 20 px)
        runs = {"before": (aspect, "image", None),
                "part score": (aspect, "part", None),  # --score-region part, default or not
                "highest pixel": (default, None, 1),  # the default before the window: the capped map's highest pixel
                "after": (default, None, None)}
        done: dict[tuple, str] = {}
        for label, (size, region, window) in runs.items():
            key = (size, region, window)
            if key in done:
                report[f"{part}/{label}"] = {**report[f"{part}/{done[key]}"], "same_as": done[key]}
                continue
            done[key] = label
            result = run_benchmark(data_dir, category, None, work / "results", work / f"{part}_{label}.json",
                                   seed=args.seed, reporter=Reporter(show_tqdm=False), image_size=list(size),
                                   score_region=region, score_window=window)
            row = {key: result.get(key) for key in KEYS}
            config = result.get("config") or {}
            row["score_region"] = config.get("score_region", region)  # what auto chose
            row["score_window"] = config.get("score_window", window)
            at = result.get("at_model_threshold") or {}
            row["defective_found_at_threshold"] = at.get("recall")
            row["good_flagged_at_threshold"] = at.get("false_positive_rate")
            report[f"{part}/{label}"] = row
            print(part, label, json.dumps(row), flush=True)
    print("\n| set | setting | input size | image score on | image AUROC | pixel AUROC | AUPRO "
          "| defective found / good flagged at the threshold | fit | scoring | peak RSS (this process so far) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, row in report.items():
        part, label = name.split("/")
        size = "x".join(str(s) for s in row["image_size"] or ())
        where = row["score_region"] + (f" ({row['score_window']} px)" if row["score_region"] == "part" else "")
        print(f"| {part} | {label} | {size} | {where} | {row['image_auroc']:.3f} | {row['pixel_auroc']:.3f} | {row['aupro']:.3f} "
              f"| {row['defective_found_at_threshold']:.0%} / {row['good_flagged_at_threshold']:.0%} | {row['fit_seconds']:.1f} s | {row['images_per_second']:.1f} images/s | {row['peak_rss_mb']:.0f} MB |")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
