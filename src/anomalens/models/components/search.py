"""Nearest-neighbour search over a memory bank: the one place every model finds its closest normal entries.

PatchCore's patch scores, its score reweighting, the tiling path (through PatchCore) and the video model's
appearance memory all call :class:`NearestNeighbourIndex`. The search runs through faiss on the CPU:

* banks of up to :data:`EXACT_SEARCH_LIMIT` entries (or any bank with ``exact=True``): exact search
  (``IndexFlatL2``);
* larger banks: an inverted-file index (``IndexIVFFlat``, about 64 entries per cell, 4 cells visited per query),
  which compares a query only with the entries of the cells nearest to it. Measured on bottle patch features
  against a 16,384-entry PatchCore bank (``benchmarks/search.py``, README "Scale"): recall@1 0.98 at 1/22 of the
  exact search's time; HNSW was 1.6x slower than IVF at the same recall (M 16, efSearch 16) and 4x slower at 0.998.

Banks on a GPU are searched exactly with batched matrix products in torch (faiss-cpu has no GPU kernels).
Nothing of the index is saved: models store the bank itself (safetensors) and rebuild the index on load,
which takes well under a second for the bank sizes used here and keeps checkpoints free of pickles and of
faiss's version-specific files.

>>> bank = torch.randn(5000, 152)
>>> index = NearestNeighbourIndex(bank)                 # exact: a small bank
>>> distances, indices = index.search(torch.randn(10, 152), k=1)
>>> distances.shape, indices.shape
(torch.Size([10, 1]), torch.Size([10, 1]))
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

# Banks up to this many entries are searched exactly; larger ones approximately (unless exact is forced)
EXACT_SEARCH_LIMIT = 4096
# Inverted file: about this many bank entries per cell, and this many cells visited per query
IVF_ENTRIES_PER_CELL = 64
IVF_PROBES = 4
# k-means iterations placing the cells: 10 give the recall of faiss's default 25 on bottle (0.988) at 2.5x less time
IVF_TRAINING_ITERATIONS = 10
TORCH_SEARCH_BUDGET = 1 << 23  # distance-matrix elements per step of the torch search (32 MB)


def set_search_threads(threads: int | None = None) -> None:
    """Run faiss on as many threads as torch (``threads`` if given), so both libraries share the cores alike."""
    faiss.omp_set_num_threads(max(1, threads if threads is not None else torch.get_num_threads()))


class NearestNeighbourIndex:
    """Euclidean nearest neighbours of query rows among the rows of ``bank`` ``(K, C)``.

    ``exact``: always search exactly (``--exact-search``); otherwise banks larger than ``exact_limit`` (default
    :data:`EXACT_SEARCH_LIMIT`) get an approximate index. ``seed`` fixes the clustering of the approximate index, so results are reproducible.
    """

    def __init__(
        self, bank: torch.Tensor, exact: bool = False, exact_limit: int | None = None, seed: int = 0
    ) -> None:
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"the memory bank must be a non-empty (K, C) matrix, got shape {tuple(bank.shape)}")
        self.bank = bank.float()
        self.size, self.dim = bank.shape
        self.device = bank.device
        self.index: faiss.Index | None = None
        if self.device.type != "cpu":
            self.kind = "torch-exact"
            self._bank_norms = (self.bank * self.bank).sum(dim=1)
            return
        set_search_threads()
        rows = np.ascontiguousarray(self.bank.numpy(), dtype=np.float32)
        if exact or self.size <= (EXACT_SEARCH_LIMIT if exact_limit is None else exact_limit):
            self.kind = "exact"
            self.index = faiss.IndexFlatL2(self.dim)
        else:
            self.kind = "ivf"
            cells = max(1, round(self.size / IVF_ENTRIES_PER_CELL))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.dim), self.dim, cells)
            self.index.cp.seed = seed
            self.index.cp.min_points_per_centroid = 1  # no warning about few points per cell: that is the design
            self.index.cp.niter = IVF_TRAINING_ITERATIONS
            self.index.train(rows)
            self.index.nprobe = min(IVF_PROBES, cells)
        self.index.add(rows)

    def __len__(self) -> int:
        return self.size

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances ``(M, k)`` from each query ``(M, C)`` to its ``k`` nearest bank rows, nearest first, and
        their indices ``(M, k)`` (``int64``), on the queries' device."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (M, {self.dim}), got {tuple(queries.shape)}")
        k = min(k, self.size)
        if self.index is None:
            return self._torch_search(queries.to(self.device), k)
        rows = np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32)
        squared, indices = self.index.search(rows, k)
        if (indices < 0).any():
            # an approximate index found fewer than k entries in the cells it visited: ask the exact one
            missing = (indices < 0).any(axis=1)
            exact = faiss.IndexFlatL2(self.dim)
            exact.add(np.ascontiguousarray(self.bank.numpy()))
            squared[missing], indices[missing] = exact.search(rows[missing], k)
        distances = torch.from_numpy(np.sqrt(np.maximum(squared, 0.0, out=squared), out=squared))
        return distances.to(queries.device), torch.from_numpy(indices).to(queries.device)

    def _torch_search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = max(1, TORCH_SEARCH_BUDGET // self.size)
        distances, indices = [], []
        for start in range(0, queries.shape[0], chunk):
            value, index = exact_search_block(queries[start : start + chunk], self.bank, k, self._bank_norms)
            distances.append(value)
            indices.append(index)
        if not distances:
            return torch.zeros((0, k), device=queries.device), torch.zeros((0, k), dtype=torch.long, device=queries.device)
        return torch.cat(distances), torch.cat(indices)


def exact_search_block(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 1, bank_norms: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact search of all ``queries`` at once with one matrix product, in torch: the GPU path above (in chunks)
    and the search inside exported ONNX graphs (``anomalens.export``, where faiss cannot be traced)."""
    bank = bank.float()
    norms = (bank * bank).sum(dim=1) if bank_norms is None else bank_norms
    q = queries.float()
    # ||q - b||^2 = ||b||^2 - 2 q.b + ||q||^2; the last term is the same along a row, so add it after the min
    partial = torch.addmm(norms[None, :], q, bank.T, alpha=-2.0)
    value, index = partial.topk(k, dim=1, largest=False)
    value = value + (q * q).sum(dim=1, keepdim=True)
    return value.clamp(min=0.0).sqrt(), index


def nearest_neighbour_distances(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 1, exact: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One-off search (the index is built and dropped): distances and indices of the ``k`` nearest rows of ``bank``.

    Exact by default; callers that search the same bank repeatedly keep a :class:`NearestNeighbourIndex`.
    """
    return NearestNeighbourIndex(bank, exact=exact).search(queries, k)


def recall_at_1(index: NearestNeighbourIndex, queries: torch.Tensor) -> float:
    """Share of queries for which ``index`` returns the exact nearest neighbour (ties count as found)."""
    exact = NearestNeighbourIndex(index.bank, exact=True)
    true_distance, _ = exact.search(queries, 1)
    found_distance, _ = index.search(queries, 1)
    return float((found_distance <= true_distance * (1 + 1e-5) + 1e-6).float().mean())


__all__ = ["EXACT_SEARCH_LIMIT", "NearestNeighbourIndex", "exact_search_block", "nearest_neighbour_distances", "recall_at_1", "set_search_threads"]
