"""Is image scoring slower in one version of the code than in another? CPU time per image, side by side.

Each ``--tree LABEL=FOLDER`` is a checkout of the code (``git worktree add --detach /tmp/old <commit>``) and
``--model LABEL=MODEL_DIR`` the model that checkout trained (default: one ``--model`` for all). Each round runs every
tree once, in turn (the order rotated each round), in a fresh process with the tree's ``src`` first on the path,
started as the CLI starts (``OMP_WAIT_POLICY=PASSIVE``): a warm-up batch, then ``predict`` on the image list
(decoding included, as ``anomalens benchmark`` times it), timed in CPU time (user + sys, all threads) and wall time.
On a shared machine compare the CPU times: other jobs move wall-clock images/s much more. The scores of every run
are compared with the first tree's (largest difference printed).

    PYTHONPATH=src python benchmarks/scoring_cpu.py --tree old=/tmp/speed_old --tree main=. \\
        --model old=/tmp/runs_old/bottle_.../model --model main=results/bottle_.../model \\
        --images ../shared/data/mvtec_ad/bottle/train/good --count 83 --rounds 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def worker(model_dir: str, list_file: str, scores_file: str) -> None:
    """One timed scoring with the code on sys.path; prints JSON on the last line, writes the scores (.npy)."""
    import resource

    import numpy as np

    from anomalens.models.base import load_detector

    paths = Path(list_file).read_text(encoding="utf-8").split("\n")
    detector = load_detector(model_dir, "cpu", kind="image")
    batch = detector.config.batch_size
    detector.predict(detector.preprocessing.iter_images(paths[:batch], batch))  # warm-up: pools, first-call costs

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    cpu_started, wall_started = cpu(), time.perf_counter()
    prediction = detector.predict(detector.preprocessing.iter_images(paths, batch))
    cpu_seconds, wall_seconds = cpu() - cpu_started, time.perf_counter() - wall_started
    np.save(scores_file, np.asarray(prediction.scores, dtype=np.float64))
    import anomalens

    print(json.dumps({"code": anomalens.__file__, "cpu_ms_per_image": 1000 * cpu_seconds / len(paths),
                      "images_per_second": len(paths) / wall_seconds,
                      "load_average": os.getloadavg()[0]}))


def pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        label, sep, path = value.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"{flag} {value!r}: expected LABEL=PATH")
        out[label] = path
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="LABEL=FOLDER of a checkout (repeat)")
    parser.add_argument("--model", action="append", required=True,
                        help="LABEL=MODEL_DIR per tree, or one MODEL_DIR for all trees")
    parser.add_argument("--images", type=Path, required=True, help="a folder of images (sorted; the first --count)")
    parser.add_argument("--count", type=int, default=83)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    trees = pairs(args.tree, "--tree")
    models = dict.fromkeys(trees, args.model[0]) if len(args.model) == 1 and "=" not in args.model[0] \
        else pairs(args.model, "--model")
    if set(models) != set(trees):
        raise SystemExit("--model: one per --tree label, or a single MODEL_DIR")
    images = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[: args.count]
    if not images:
        raise SystemExit(f"--images {args.images}: no images")
    import numpy as np

    labels = list(trees)
    rows: dict[str, list[dict]] = {label: [] for label in labels}
    with tempfile.TemporaryDirectory() as tmp:
        list_file = Path(tmp) / "images.txt"
        list_file.write_text("\n".join(str(p.resolve()) for p in images), encoding="utf-8")
        for round_index in range(args.rounds):
            shift = round_index % len(labels)
            for label in labels[shift:] + labels[:shift]:
                tree = Path(trees[label]).resolve()
                env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_WAIT_POLICY="PASSIVE", KMP_BLOCKTIME="0")
                scores_file = Path(tmp) / f"{label}_{round_index}.npy"
                done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                                       str(Path(models[label]).resolve()), str(list_file), str(scores_file)],
                                      cwd=tree, env=env, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{label}: {done.stderr.strip().splitlines()[-1]}")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                if not Path(row.pop("code")).is_relative_to(tree / "src"):
                    raise SystemExit(f"{label}: imported anomalens from outside {tree / 'src'}")
                reference = np.load(Path(tmp) / f"{labels[0]}_0.npy") if (Path(tmp) / f"{labels[0]}_0.npy").exists() \
                    else np.load(scores_file)
                row["max_score_difference"] = float(np.abs(np.load(scores_file) - reference).max())
                rows[label].append(row)
                print(f"round {round_index} {label}: {row['cpu_ms_per_image']:.1f} ms CPU/image, "
                      f"{row['images_per_second']:.1f} images/s, load {row['load_average']:.1f}, "
                      f"max |score - {labels[0]}'s| {row['max_score_difference']:.3g}", flush=True)
    print(f"\n{len(images)} images from {args.images}, {args.rounds} rounds")
    for label, measured in rows.items():
        cpu = [r["cpu_ms_per_image"] for r in measured]
        wall = [r["images_per_second"] for r in measured]
        print(f"{label}: CPU ms/image mean {statistics.mean(cpu):.1f} (sd {statistics.pstdev(cpu):.1f}, "
              f"{min(cpu):.1f}-{max(cpu):.1f}); images/s {min(wall):.1f}-{max(wall):.1f}; "
              f"max score difference {max(r['max_score_difference'] for r in measured):.3g}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:5])
    else:
        main()
