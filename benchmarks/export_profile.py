"""Where a PatchCore bundle's scoring spends its time: decoding and resizing, the features graph, the faiss search,
PatchCore's image weights, the maps graph, verdicts and regions; then ``Inferencer.predict`` (which decodes the
next batch in a background thread) against decoding everything first. Torch-free, like the runtime.

    PYTHONPATH=src python benchmarks/export_profile.py --bundle results/bottle_x/export/onnx_fp32 \
        --images ../shared/data/mvtec_ad/bottle/train/good --count 32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from anomalens.data.pixels import IMAGE_EXTENSIONS
from anomalens.inference import Inferencer
from anomalens.inference.results import results_from_outputs
from anomalens.inference.search import image_weights

STEPS = ("decode+resize", "features graph", "search", "image weights", "maps graph", "verdicts+regions")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", required=True, type=Path, help="a PatchCore bundle (anomalens export)")
    parser.add_argument("--images", required=True, type=Path, help="a folder of images")
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)[: args.count]
    inferencer = Inferencer.load(args.bundle)
    if inferencer.search is None:
        print("not a PatchCore bundle: nothing is searched between graphs", file=sys.stderr)
        return 2
    inferencer.predict(paths[:4])  # warm-up
    spent = dict.fromkeys(STEPS, 0.0)

    def timed(step: str, work):
        started = time.perf_counter()
        out = work()
        spent[step] += time.perf_counter() - started
        return out

    for _ in range(args.repeats):
        for start in range(0, len(paths), inferencer.max_batch):
            chunk = paths[start : start + inferencer.max_batch]
            batch = timed("decode+resize", lambda: np.stack([inferencer.prepare(p) for p in chunk]))
            images = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
            features = timed("features graph", lambda: inferencer.engines["features"].run({"images": images})["features"])
            n, channels, h, w = features.shape
            queries = np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(-1, channels))
            distances, indices = timed("search", lambda: inferencer.search.search(queries, 1))
            distances, indices = distances[:, 0].reshape(n, -1), indices[:, 0].reshape(n, -1)
            weights = timed("image weights", lambda: image_weights(inferencer.search, queries.reshape(n, -1, channels),
                                                                   distances, indices, inferencer.neighbours))
            feeds = {"distances": distances.reshape(n, h, w), "weights": weights, "images": images}
            feeds = {name: feeds[name] for name in inferencer.meta["graphs"]["maps"]["inputs"]}
            out = timed("maps graph", lambda: inferencer.engines["maps"].run(feeds))
            timed("verdicts+regions", lambda: results_from_outputs(out["scores"], out["maps"], None, inferencer.calibration))
    total = sum(spent.values())
    images = len(paths) * args.repeats
    for step, seconds in spent.items():
        print(f"{step:18s} {1000 * seconds / images:6.1f} ms/image {100 * seconds / total:4.0f}%")
    best = {}
    for _ in range(args.repeats):
        for name, work in (("decode first, then score", lambda: inferencer.predict_prepared(np.stack([inferencer.prepare(p) for p in paths]))),
                           ("predict (background decode)", lambda: inferencer.predict(paths))):
            started = time.perf_counter()
            work()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    for name, seconds in best.items():
        print(f"{name}: {len(paths) / seconds:.1f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
