"""Nearest-neighbour search for the models, on torch tensors: an adapter over :mod:`anomalens.neighbours`.

PatchCore's patch scores, its score reweighting, the tiling path (through PatchCore) and the video model's
appearance memory all call :class:`NearestNeighbourIndex`. On the CPU it hands the rows to
:class:`anomalens.neighbours.BankSearch` (faiss: exact up to 4,096 entries, an IVF index above; the torch-free
runtime searches with the same class), so the choice of index lives in one file. Banks on a GPU are searched
exactly with batched matrix products in torch (faiss-cpu has no GPU kernels). Models save the bank itself
(safetensors) and rebuild the index on load, which keeps checkpoints free of pickles and of faiss's
version-specific files; an exported bundle carries the index in faiss's own format (``BankSearch.write_index``).

>>> bank = torch.randn(5000, 152)
>>> index = NearestNeighbourIndex(bank)                 # IVF: a large bank
>>> distances, indices = index.search(torch.randn(10, 152), k=1)
>>> distances.shape, indices.shape
(torch.Size([10, 1]), torch.Size([10, 1]))
"""

from __future__ import annotations

import torch

from anomalens.neighbours import EXACT_SEARCH_LIMIT, IVF_ENTRIES_PER_CELL, IVF_PROBES, BankSearch

TORCH_SEARCH_BUDGET = 1 << 23  # distance-matrix elements per step of the torch search (32 MB)


class NearestNeighbourIndex:
    """Euclidean nearest neighbours of query rows among the rows of ``bank`` ``(K, C)``.

    ``exact``: always search exactly (``--exact-search``); otherwise banks larger than ``exact_limit`` (default
    :data:`anomalens.neighbours.EXACT_SEARCH_LIMIT`) get an approximate index. ``seed`` fixes the clustering of the
    approximate index, so results are reproducible.
    """

    def __init__(
        self, bank: torch.Tensor, exact: bool = False, exact_limit: int | None = None, seed: int = 0
    ) -> None:
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"the memory bank must be a non-empty (K, C) matrix, got shape {tuple(bank.shape)}")
        self.bank = bank.float()
        self.size, self.dim = bank.shape
        self.device = bank.device
        self.cpu_search: BankSearch | None = None
        if self.device.type != "cpu":
            self.kind = "torch-exact"
            self._bank_norms = (self.bank * self.bank).sum(dim=1)
            return
        self.cpu_search = BankSearch(self.bank.numpy(), exact=exact, exact_limit=exact_limit, seed=seed, build=True)
        self.kind = self.cpu_search.kind

    @property
    def index(self):
        """The faiss index searched on the CPU (None on a GPU)."""
        return None if self.cpu_search is None else self.cpu_search.index

    def __len__(self) -> int:
        return self.size

    def search(self, queries: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Distances ``(M, k)`` from each query ``(M, C)`` to its ``k`` nearest bank rows, nearest first, and
        their indices ``(M, k)`` (``int64``), on the queries' device."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (M, {self.dim}), got {tuple(queries.shape)}")
        k = min(k, self.size)
        if self.cpu_search is None:
            return self._torch_search(queries.to(self.device), k)
        distances, indices = self.cpu_search.search(queries.detach().cpu().numpy(), k)
        return torch.from_numpy(distances).to(queries.device), torch.from_numpy(indices).to(queries.device)

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


__all__ = ["EXACT_SEARCH_LIMIT", "IVF_ENTRIES_PER_CELL", "IVF_PROBES", "NearestNeighbourIndex", "exact_search_block", "nearest_neighbour_distances", "recall_at_1"]
