"""PatchCore's nearest-neighbour search in the runtime, between the bundle's two graphs (no torch).

The bundle holds the memory bank (``memory_bank.npy``) and the library's own faiss index (``search_index.faiss``,
faiss's binary format: an IVF index for banks above 4,096 entries, as ``anomalens.models.components.search``
builds it), so that the runtime finds the neighbours the checkpoint finds, at the checkpoint's speed. Without
faiss installed (``pip install faiss-cpu``), the runtime searches exactly with numpy instead: slower on large
banks, and the same neighbour as the approximate index for about 99% of patches.

PatchCore's image weight (``PatchCore._reweighting``): ``1 - softmax(||m_test - n_j||)[0]`` over the ``b``
nearest bank entries ``n_j`` of ``m*``, the nearest entry of the image's most anomalous patch ``m_test``.

>>> search = BankSearch(np.eye(3, dtype=np.float32))
>>> distances, indices = search.search(np.array([[0.9, 0.0, 0.0]], np.float32), k=1)
>>> indices.tolist(), round(float(distances[0, 0]), 3)
([[0]], 0.1)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# distance-matrix elements per step of the numpy search (32 MB of float32)
EXACT_SEARCH_BUDGET = 1 << 23


class BankSearch:
    """Euclidean nearest neighbours of query rows among the bank's rows: faiss with the saved index, else numpy."""

    def __init__(self, bank: np.ndarray, index_path: Path | None = None, nprobe: int | None = None,
                 threads: int | None = None) -> None:
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.norms = (self.bank * self.bank).sum(axis=1)
        self.index = None
        self.kind = "exact (numpy)"
        if index_path is not None and index_path.is_file():
            try:
                import faiss
            except ImportError:
                faiss = None
            if faiss is not None:
                if threads:
                    faiss.omp_set_num_threads(int(threads))
                self.index = faiss.read_index(str(index_path))
                if nprobe is not None and hasattr(self.index, "nprobe"):
                    self.index.nprobe = int(nprobe)
                self.kind = f"faiss {type(self.index).__name__}"

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distances ``(M, k)`` (nearest first) and indices ``(M, k)`` ``int64`` of the ``k`` nearest bank rows."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.bank))
        if self.index is not None:
            squared, indices = self.index.search(queries, k)
            missing = (indices < 0).any(axis=1)  # an approximate index found too few in the cells it visited
            if missing.any():
                squared[missing], indices[missing] = self._exact(queries[missing], k)
            return np.sqrt(np.maximum(squared, 0.0)), indices.astype(np.int64)
        squared, indices = self._exact(queries, k)
        return np.sqrt(np.maximum(squared, 0.0)), indices

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        chunk = max(1, EXACT_SEARCH_BUDGET // len(self.bank))
        squared, indices = [], []
        for start in range(0, len(queries), chunk):
            q = queries[start : start + chunk]
            partial = self.norms[None, :] - 2.0 * (q @ self.bank.T)  # ||q||^2 is added after the selection
            nearest = np.argpartition(partial, k - 1, axis=1)[:, :k] if k < partial.shape[1] else np.tile(np.arange(partial.shape[1]), (len(q), 1))
            values = np.take_along_axis(partial, nearest, axis=1)
            order = np.argsort(values, axis=1)
            indices.append(np.take_along_axis(nearest, order, axis=1))
            squared.append(np.take_along_axis(values, order, axis=1) + (q * q).sum(axis=1, keepdims=True))
        return np.concatenate(squared).astype(np.float32), np.concatenate(indices).astype(np.int64)


def image_weights(search: BankSearch, queries: np.ndarray, distances: np.ndarray, indices: np.ndarray,
                  neighbours: int) -> np.ndarray:
    """PatchCore's weight per image: ``queries`` ``(B, P, C)``, nearest ``distances`` and ``indices`` ``(B, P)``."""
    b = min(neighbours, len(search.bank))
    if b <= 1:
        return np.ones(len(queries), np.float32)
    rows = np.arange(len(queries))
    worst = distances.argmax(axis=1)
    m_test = queries[rows, worst]  # (B, C)
    m_star = search.bank[indices[rows, worst]]
    _, support = search.search(m_star, k=b)  # (B, b), m* itself first
    to_support = np.linalg.norm(search.bank[support] - m_test[:, None], axis=2)
    shifted = np.exp(to_support - to_support.max(axis=1, keepdims=True))
    return (1.0 - shifted[:, 0] / shifted.sum(axis=1)).astype(np.float32)
