"""Nearest-neighbour search over a memory bank: the one place every model and runtime finds its closest normal entries.

Torch-free (numpy, and faiss when installed), so that the training stack and the line PC's runtime search the
same way: :class:`anomalens.models.components.search.NearestNeighbourIndex` adapts :class:`BankSearch` to torch
tensors (and adds exact search on GPUs), and the torch-free runtime (``anomalens.inference``) uses it directly with
the index file an exported bundle carries.

* banks of up to :data:`EXACT_SEARCH_LIMIT` entries (or any bank with ``exact=True``): exact search
  (faiss ``IndexFlatL2``);
* larger banks: an inverted-file index (``IndexIVFFlat``, about 64 entries per cell, 4 cells visited per query),
  which compares a query only with the entries of the cells nearest to it. Measured on bottle patch features
  against a 16,384-entry PatchCore bank (``benchmarks/search.py``, README "Scale"): recall@1 0.98 at 1/22 of the
  exact search's time; HNSW was 1.6x slower than IVF at the same recall (M 16, efSearch 16) and 4x slower at 0.998;
* no faiss (a runtime installed without it): exact search with numpy, in blocks of bounded memory.

faiss always runs :data:`SEARCH_THREADS` threads, whatever CPUs the process may use: its exact search (a BLAS
product) and the k-means placing the IVF cells come out in other bits with another thread count, and its default
count is the number of CPUs available, so scores and thresholds depended on the machine (up to 1e-5 of the
threshold on PatchCore's scores; ``tests/test_thread_counts.py``).

>>> bank = np.eye(3, dtype=np.float32)
>>> distances, indices = BankSearch(bank).search(np.array([[0.9, 0.0, 0.0]], np.float32), k=1)
>>> indices.tolist(), round(float(distances[0, 0]), 3)
([[0]], 0.1)
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np

# Banks up to this many entries are searched exactly; larger ones approximately (unless exact is forced)
EXACT_SEARCH_LIMIT = 4096
# Inverted file: about this many bank entries per cell, and this many cells visited per query
IVF_ENTRIES_PER_CELL = 64
IVF_PROBES = 4
# k-means iterations placing the cells: 10 give the recall of faiss's default 25 on bottle (0.988) at 2.5x less time
IVF_TRAINING_ITERATIONS = 10
# distance-matrix elements per step of an exact search without faiss (32 MB of float32)
EXACT_SEARCH_BUDGET = 1 << 23


# faiss's thread count during its calls, fixed: the exact search's distances and the IVF cells depend on it (not on
# the CPUs, given the count). 2 is what faiss ran on the two-core machine that measured the published figures, so
# those stay bit-identical; a process allowed one CPU runs the two threads in turn at the same CPU time (measured).
# A library user may set another count, trading equality with models and scores made elsewhere for speed.
SEARCH_THREADS = 2


@contextlib.contextmanager
def search_threads() -> Iterator[None]:
    """faiss runs :data:`SEARCH_THREADS` threads within the block, in the calling thread (OpenMP counts are per
    thread: a server's or live watch's worker threads would otherwise run as many as the process has CPUs); the
    count before is restored afterwards, for torch shares it (``torch.get_num_threads`` reads the same OpenMP
    setting). Nothing to do without faiss."""
    try:
        import faiss
    except ImportError:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, int(SEARCH_THREADS)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


class BankSearch:
    """Euclidean nearest neighbours of query rows among the rows of ``bank`` ``(K, C)``.

    Build an index from the bank (the library: ``exact`` forces exact search, otherwise banks larger than
    ``exact_limit`` get an IVF index whose clustering ``seed`` fixes), or read one that was written beside a bundle
    (``index_path``, faiss's own binary format, never pickle), or, without faiss, search exactly with numpy.
    faiss runs :data:`SEARCH_THREADS` threads during each call (:func:`search_threads`), whatever the caller's
    thread setting, so that its distances do not depend on the machine.
    """

    def __init__(self, bank: np.ndarray, *, exact: bool = False, exact_limit: int | None = None, seed: int = 0,
                 index_path: Path | None = None, nprobe: int | None = None, build: bool = False) -> None:
        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"the memory bank must be a non-empty (K, C) matrix, got shape {tuple(bank.shape)}")
        self.bank = bank
        self.size, self.dim = bank.shape
        self.norms = (bank * bank).sum(axis=1)
        self.index = None
        self.kind = "exact (numpy)"
        try:
            import faiss
        except ImportError:
            if build:
                raise
            return
        if index_path is not None and Path(index_path).is_file():
            self.index = faiss.read_index(str(index_path))
            if nprobe is not None and hasattr(self.index, "nprobe"):
                self.index.nprobe = int(nprobe)
            self.kind = f"faiss {type(self.index).__name__}"
        elif build:
            self.index = _build_index(bank, exact, exact_limit, seed)
            self.kind = "exact" if isinstance(self.index, faiss.IndexFlatL2) else "ivf"

    def __len__(self) -> int:
        return self.size

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Distances ``(M, k)`` (nearest first, ``float32``) and indices ``(M, k)`` (``int64``) of the ``k`` nearest
        bank rows of each query ``(M, C)``."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (M, {self.dim}), got {tuple(queries.shape)}")
        k = min(k, self.size)
        if self.index is None:
            squared, indices = self._exact(queries, k)
        else:
            with search_threads():
                squared, indices = self.index.search(queries, k)
            missing = (indices < 0).any(axis=1)  # an approximate index found too few in the cells it visited
            if missing.any():
                squared[missing], indices[missing] = self._exact(queries[missing], k)
        return np.sqrt(np.maximum(squared, 0.0, out=squared), out=squared), indices.astype(np.int64, copy=False)

    def write_index(self, path: Path) -> bool:
        """Write the faiss index in faiss's own format (for a bundle); False when there is none (numpy search)."""
        if self.index is None:
            return False
        import faiss

        faiss.write_index(self.index, str(path))
        return True

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        chunk = max(1, EXACT_SEARCH_BUDGET // self.size)
        squared, indices = [np.zeros((0, k), np.float32)], [np.zeros((0, k), np.int64)]
        for start in range(0, len(queries), chunk):
            q = queries[start : start + chunk]
            partial = self.norms[None, :] - 2.0 * (q @ self.bank.T)  # ||q||^2 is added after the selection
            if k < partial.shape[1]:
                nearest = np.argpartition(partial, k - 1, axis=1)[:, :k]
            else:
                nearest = np.tile(np.arange(partial.shape[1]), (len(q), 1))
            # the chosen rows' distances again, directly and in float64: OpenBLAS's float32 product writes other last
            # bits with one thread than with two on some CPUs (an AMD EPYC: OpenBLAS 0.3.31), and the expansion
            # above loses digits to cancellation for near neighbours; recomputed, they are the same at any count
            diff = q[:, None, :].astype(np.float64) - self.bank[nearest].astype(np.float64)
            exact = np.einsum("mkc,mkc->mk", diff, diff)
            order = np.lexsort((nearest, exact), axis=1)  # nearest first; a tie goes to the lower row
            indices.append(np.take_along_axis(nearest, order, axis=1))
            squared.append(np.take_along_axis(exact, order, axis=1))
        return np.concatenate(squared).astype(np.float32), np.concatenate(indices).astype(np.int64)


def _build_index(rows: np.ndarray, exact: bool, exact_limit: int | None, seed: int):
    with search_threads():  # the IVF's k-means (BLAS products) depends on the count too
        return _build(rows, exact, exact_limit, seed)


def _build(rows: np.ndarray, exact: bool, exact_limit: int | None, seed: int):
    import faiss

    size, dim = rows.shape
    if exact or size <= (EXACT_SEARCH_LIMIT if exact_limit is None else exact_limit):
        index = faiss.IndexFlatL2(dim)
    else:
        cells = max(1, round(size / IVF_ENTRIES_PER_CELL))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, cells)
        index.cp.seed = seed
        index.cp.min_points_per_centroid = 1  # no warning about few points per cell: that is the design
        index.cp.niter = IVF_TRAINING_ITERATIONS
        index.train(rows)
        index.nprobe = min(IVF_PROBES, cells)
    index.add(rows)
    return index


__all__ = ["BankSearch", "EXACT_SEARCH_LIMIT", "IVF_ENTRIES_PER_CELL", "IVF_PROBES", "SEARCH_THREADS", "search_threads"]
