"""Exported runtimes side by side with PyTorch on one dataset: images/s, AUROCs, largest differences.

Trains the default model (or takes --checkpoint), exports one bundle per runtime, scores the test split with
each (same decoded images), and prints a table; --output writes JSON. Scoring time excludes decoding.

    PYTHONPATH=src python benchmarks/export.py --data-dir ../shared/data/mvtec_ad --category bottle \
        --checkpoint results/bottle_x --output export_bench.json

The test split is read only to measure; nothing here changes a model or a threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from anomalens.data.mvtec import discover_category, load_test_set
from anomalens.export import export_model
from anomalens.export.bundle import use_exact_search
from anomalens.inference import Inferencer
from anomalens.metrics.classification import image_auroc
from anomalens.metrics.segmentation import pixel_auroc
from anomalens.workflows.runs import load_detector
from anomalens.workflows.train import train_image_model

RUNTIMES = ("onnx:fp32", "onnx:int8", "openvino:fp32", "openvino:bf16", "openvino:int8")


def _timed(score, images: np.ndarray, repeats: int) -> tuple[float, tuple]:
    score(images[:4])  # warm-up (graph compilation, thread pools)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        out = score(images)
        best = min(best, time.perf_counter() - started)
    return len(images) / best, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--category", required=True)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a run folder (default: train patchcore now)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), help="engine:precision pairs")
    parser.add_argument("--repeats", type=int, default=1, help="timed passes over the test set (best is kept)")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    run_dir = args.checkpoint or train_image_model(args.data_dir, args.category, "patchcore", args.results_dir, device="cpu").run_dir
    detector = load_detector(run_dir, device="cpu")
    test = load_test_set(discover_category(args.data_dir, args.category, require_test=True), detector.preprocessing)
    labels, masks = test.labels, test.masks.numpy()
    known = test.has_mask
    nhwc = test.images.permute(0, 2, 3, 1).numpy().copy()

    rows = []
    rate, reference = _timed(lambda x: detector.predict(test.images[: len(x)]), nhwc, args.repeats)
    ref_scores, ref_maps = reference.scores, reference.maps
    if use_exact_search(detector):  # bundles search exactly: differences are measured against the exact checkpoint
        exact = detector.predict(test.images)
        print(f"library, approximate search: image AUROC {image_auroc(labels, ref_scores):.4f}; exact search: "
              f"{image_auroc(labels, exact.scores):.4f}", file=sys.stderr)
        ref_scores, ref_maps = exact.scores, exact.maps
    cal = detector.calibration_
    rows.append({"runtime": "pytorch", "precision": "fp32", "images_per_second": round(rate, 2),
                 "image_auroc": image_auroc(labels, ref_scores), "pixel_auroc": pixel_auroc(masks[known], ref_maps[known]),
                 "max_score_difference": 0.0, "max_heatmap_difference": 0.0, "same_verdicts": 1.0, "threshold": cal.threshold})
    for spec in args.runtimes:
        engine, precision = spec.split(":")
        started = time.perf_counter()
        bundle = export_model(run_dir, engine, precision, Path(run_dir) / "export" / f"{engine}_{precision}")
        export_seconds = time.perf_counter() - started
        inferencer = Inferencer.load(bundle.folder)
        rate, (scores, maps, _) = _timed(inferencer.run, nhwc, args.repeats)
        bundle_cal = inferencer.calibration
        rows.append({
            "runtime": engine, "precision": precision, "images_per_second": round(rate, 2),
            "image_auroc": image_auroc(labels, scores), "pixel_auroc": pixel_auroc(masks[known], maps[known]),
            "max_score_difference": float(np.abs(scores - ref_scores).max()),
            "max_score_difference_over_threshold": float(np.abs(scores - ref_scores).max() / cal.threshold),
            "max_heatmap_difference": float(np.abs(cal.normalize(maps) - cal.normalize(ref_maps)).max()),
            "same_verdicts": float((bundle_cal.is_anomalous(scores) == cal.is_anomalous(ref_scores)).mean()),
            "threshold": bundle_cal.threshold, "export_seconds": round(export_seconds, 1),
            "engine_details": inferencer.engine.description,
        })
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    header = f"{'runtime':<10} {'precision':<9} {'images/s':>9} {'img AUROC':>9} {'px AUROC':>9} {'max |ds|':>10} {'max |dmap|':>10} {'verdicts':>8}"
    print(header)
    for r in rows:
        print(f"{r['runtime']:<10} {r['precision']:<9} {r['images_per_second']:>9.1f} {r['image_auroc']:>9.4f} "
              f"{r['pixel_auroc']:>9.4f} {r['max_score_difference']:>10.3g} {r['max_heatmap_difference']:>10.3g} {r['same_verdicts']:>8.0%}")
    if args.output is not None:
        args.output.write_text(json.dumps({"run": str(run_dir), "category": args.category, "test_images": len(labels),
                                           "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
