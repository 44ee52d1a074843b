"""How PatchCore's fit, memory and scoring grow with the training set: the README's "Scale" table.

Builds training sets of growing size in a temporary folder and runs ``anomalens benchmark`` on each, one
process per row (so that each row's peak memory is its own):

* MVTec bottle repeated k times (``--bottle-repeats 1 5``: 209 and 1,045 training images), by symbolic links
  to the real data (never copied); the test split is bottle's own;
* synthetic washers from the project's generator (``--synthetic 1000 3000 10000``), at 128 px, scored at 256 px.

``--exact`` adds, for every bottle set, a row with ``--exact-search`` over the same bank, to show what the
approximate search changes. Prints a Markdown table for the README (N, bank entries, fit s, peak RSS, images/s and
its ratio to the first row's, image and pixel AUROC, AUPRO), then the AUROC differences between approximate and
exact search over the same bank, and writes the rows as JSON. The defaults give the README's whole table:

    PYTHONPATH=src python benchmarks/scale.py --exact --output /tmp/scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def repeated_bottle(source: Path, target: Path, repeats: int) -> Path:
    """``target/bottle`` with ``train/good`` holding each source image ``repeats`` times (links); test linked."""
    category = target / "bottle"
    good = category / "train" / "good"
    good.mkdir(parents=True)
    for image in sorted((source / "train" / "good").iterdir()):
        for copy in range(repeats):
            (good / f"{image.stem}_{copy}{image.suffix}").symlink_to(image.resolve())
    for folder in ("test", "ground_truth"):
        (category / folder).symlink_to((source / folder).resolve())
    return target


def run_row(data_dir: Path, category: str, label: str, results: Path, extra: list[str]) -> dict[str, Any]:
    output = results / f"{label.replace(' ', '_').replace(',', '')}.json"
    command = [sys.executable, "-m", "anomalens", "benchmark", "--data-dir", str(data_dir), "--category", category,
               "--results-dir", str(results), "--output", str(output), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"[{label}] {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"[{label}] failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
    record = json.loads(output.read_text())
    history = record.get("history") or []
    return {
        "set": label,
        "train_images": record.get("train_images"),
        "memory_bank": record.get("memory_bank"),
        "search": record.get("search"),
        "fit_seconds": record.get("fit_seconds"),
        "peak_rss_mb": record.get("peak_rss_mb"),
        "images_per_second": record.get("images_per_second"),
        "image_auroc": record.get("image_auroc"),
        "pixel_auroc": record.get("pixel_auroc"),
        "aupro": record.get("aupro"),
        "history": history,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    def fmt(value: Any, digits: int = 3) -> str:
        return "n/a" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value))

    def ratio(rate: Any) -> str:  # scoring rate against the first row's (bottle x1: the 209-image rate)
        first = rows[0].get("images_per_second") if rows else None
        return "n/a" if rate is None or not first else f"{rate / first:.0%}"

    lines = ["| training set | N (train) | bank entries | search | fit s | peak RSS MB | images/s | vs first row | "
             "image AUROC | pixel AUROC | AUPRO |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['set']} | {fmt(r['train_images'])} | {fmt(r['memory_bank'])} | {r['search'] or 'n/a'} | "
                     f"{fmt(r['fit_seconds'], 1)} | {fmt(r['peak_rss_mb'], 0)} | {fmt(r['images_per_second'], 1)} | "
                     f"{ratio(r['images_per_second'])} | {fmt(r['image_auroc'])} | {fmt(r['pixel_auroc'], 4)} | "
                     f"{fmt(r['aupro'], 4)} |")
    return "\n".join(lines)


def exact_differences(rows: list[dict[str, Any]]) -> list[str]:
    """One line per set run both ways: AUROC of approximate minus exact search over the same bank."""
    by_set = {r["set"]: r for r in rows}
    lines = []
    for name, exact in by_set.items():
        if not name.endswith(", exact search") or name[: -len(", exact search")] not in by_set:
            continue
        approximate = by_set[name[: -len(", exact search")]]
        parts = [f"{key.replace('_', ' ')} {approximate[key] - exact[key]:+.4f}" for key in ("image_auroc", "pixel_auroc")
                 if approximate.get(key) is not None and exact.get(key) is not None]
        lines.append(f"{approximate['set']}: approximate minus exact search: {', '.join(parts)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_ad",
                        help="folder holding MVTec's bottle (default: ../shared/data/mvtec_ad)")
    parser.add_argument("--bottle-repeats", type=int, nargs="*", default=[1, 5], help="bottle sets: k copies (default: 1 5)")
    parser.add_argument("--synthetic", type=int, nargs="*", default=[1000, 3000, 10000],
                        help="synthetic sets: N images (default: 1000 3000 10000)")
    parser.add_argument("--exact", action="store_true", help="also run each bottle set with --exact-search")
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="anomalens_scale_") as tmp:
        work = Path(tmp)
        results = work / "results"
        for k in args.bottle_repeats:
            data = repeated_bottle(args.data_dir / "bottle", work / f"bottle_x{k}", k)
            rows.append(run_row(data, "bottle", f"bottle x{k}", results, []))
            if args.exact:
                rows.append(run_row(data, "bottle", f"bottle x{k}, exact search", results, ["--exact-search"]))
        for n in args.synthetic:
            from anomalens.data.synthetic import DEFAULT_CATEGORY, make_synthetic_image_dataset

            print(f"[synthetic {n}] generating {n} training images", flush=True)
            data = make_synthetic_image_dataset(work / f"synthetic_{n}", n_train=n, n_test_good=40,
                                                n_test_per_defect=10, image_size=128, seed=0)
            rows.append(run_row(data, DEFAULT_CATEGORY, f"synthetic {n}", results, []))
            print(markdown(rows), flush=True)
    table = markdown(rows)
    print(table)
    print("\n".join(exact_differences(rows)))
    if args.output is not None:
        args.output.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
