"""Exact against approximate nearest-neighbour search on real PatchCore features: recall@1 and time.

Extracts bottle's patch features (training images -> a bounded coreset bank as PatchCore builds it; test images
-> queries), then searches the bank with exact search (faiss ``IndexFlatL2``), the inverted-file index that
``models/components/search.py`` uses, and HNSW for comparison. Recall@1 is the share of queries whose returned
neighbour is the exact one (float64 ground truth); time is per 16 test images (16,384 queries).

    PYTHONPATH=src python benchmarks/search.py --data-dir ../shared/data/mvtec_ad --category bottle
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

from anomalens.data.mvtec import discover_category
from anomalens.data.preprocessing import Preprocessing, to_float
from anomalens.models.components.features import PatchFeatureExtractor
from anomalens.models.components.sampler import bounded_coreset_size, greedy_coreset
from anomalens.models.components.search import IVF_ENTRIES_PER_CELL, IVF_PROBES
from anomalens.neighbours import SEARCH_THREADS

REPO = Path(__file__).resolve().parents[1]


def patch_features(extractor: PatchFeatureExtractor, paths: list[Path], size: int) -> np.ndarray:
    images = Preprocessing(image_size=(size, size)).load_images(paths)
    rows = []
    for start in range(0, len(images), 16):
        features = extractor(to_float(images[start : start + 16]))
        rows.append(features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]))
    return torch.cat(rows).numpy()


def timed_search(index: faiss.Index, queries: np.ndarray) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    _, found = index.search(queries, 1)
    return time.perf_counter() - started, found[:, 0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "mvtec_ad")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--bank-size", type=int, default=16384, help="cap of the coreset bank (default: 16384)")
    args = parser.parse_args(argv)
    faiss.omp_set_num_threads(SEARCH_THREADS)  # the library's fixed count, so the timings compare with its searches
    found = discover_category(args.data_dir, args.category, require_test=True)
    extractor = PatchFeatureExtractor("lite0")
    train = patch_features(extractor, found.train_paths, args.image_size)
    queries = np.ascontiguousarray(patch_features(extractor, [s.path for s in found.test_samples][:16], args.image_size))
    keep = greedy_coreset(torch.from_numpy(train), n_keep=bounded_coreset_size(len(train), 0.1, args.bank_size))
    bank = np.ascontiguousarray(train[keep.numpy()])
    truth = torch.cdist(torch.from_numpy(queries).double(), torch.from_numpy(bank).double()).argmin(dim=1).numpy()
    print(f"bank {len(bank)} x {bank.shape[1]} from {len(train)} training patches; {len(queries)} queries (16 images)")
    print("| index | build s | search s (16 images) | recall@1 |\n|---|---|---|---|")

    def report(name: str, index: faiss.Index, build: float) -> None:
        seconds, found_ids = timed_search(index, queries)
        print(f"| {name} | {build:.2f} | {seconds:.3f} | {(found_ids == truth).mean():.3f} |", flush=True)

    flat = faiss.IndexFlatL2(bank.shape[1])
    flat.add(bank)
    report("exact (IndexFlatL2)", flat, 0.0)
    for per_cell, probes in ((IVF_ENTRIES_PER_CELL, IVF_PROBES), (IVF_ENTRIES_PER_CELL, 2 * IVF_PROBES)):
        started = time.perf_counter()
        cells = max(1, round(len(bank) / per_cell))
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(bank.shape[1]), bank.shape[1], cells)
        ivf.cp.min_points_per_centroid = 1
        ivf.train(bank)
        ivf.add(bank)
        ivf.nprobe = probes
        report(f"IVF {cells} cells, nprobe {probes}" + (" (default)" if probes == IVF_PROBES else ""), ivf,
               time.perf_counter() - started)
    for m, ef in ((16, 16), (32, 32)):
        started = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(bank.shape[1], m)
        hnsw.hnsw.efConstruction = 40
        hnsw.add(bank)
        hnsw.hnsw.efSearch = ef
        report(f"HNSW M {m}, efSearch {ef}", hnsw, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
