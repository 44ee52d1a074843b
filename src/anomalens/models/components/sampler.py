"""Memory-bank reduction (greedy k-center coreset) and nearest-neighbour search, in plain torch.

:func:`greedy_coreset` is PatchCore's k-center greedy: start from a seeded random point, then repeatedly add
the point farthest from everything chosen so far, measuring distances after a random projection. The exact
algorithm costs ``N * k`` distance evaluations, which on a CPU takes minutes for PatchCore-sized banks; here
the points are dealt at random into chunks of at most ``chunk_size`` and each chunk keeps its share with the
exact greedy rule. A chunk's working set stays in the CPU cache, memory stays bounded (no ``N x N`` matrix), and
for ``N <= chunk_size`` the result is exactly PatchCore's.

:func:`nearest_neighbour_distances` is a batched brute-force search with matmul distances.

>>> features = torch.randn(5000, 152)
>>> keep = greedy_coreset(features, ratio=0.1, seed=0)
>>> distances, indices = nearest_neighbour_distances(torch.randn(10, 152), features[keep], k=1)
"""

from __future__ import annotations

import math

import torch

from anomalens.progress import SILENT, Reporter

DEFAULT_CHUNK_SIZE = 16384
SEARCH_BUDGET = 1 << 23  # distance-matrix elements per step of the nearest-neighbour search (32 MB)


def coreset_size(n_points: int, n_keep: int | None = None, ratio: float | None = None) -> int:
    """How many points to keep: ``n_keep`` if given, else ``ceil(ratio * n_points)``; at least 1."""
    if n_keep is None:
        if ratio is None or not 0.0 < ratio <= 1.0:
            raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
        n_keep = math.ceil(ratio * n_points)
    return max(1, min(int(n_keep), n_points))


def greedy_coreset(
    features: torch.Tensor,
    n_keep: int | None = None,
    ratio: float | None = None,
    seed: int = 0,
    projection_dim: int | None = 128,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    reporter: Reporter = SILENT,
) -> torch.Tensor:
    """Indices (``int64``, sorted) of ``n_keep`` (or ``ratio * N``) spread-out rows of ``features`` ``(N, C)``."""
    n_points = features.shape[0]
    total_keep = coreset_size(n_points, n_keep, ratio)
    if total_keep >= n_points:
        return torch.arange(n_points)
    generator = torch.Generator().manual_seed(seed)
    projection = None
    if projection_dim is not None and projection_dim < features.shape[1]:
        projection = torch.randn(features.shape[1], projection_dim, generator=generator) / projection_dim**0.5
    n_chunks = math.ceil(n_points / chunk_size)
    order = torch.randperm(n_points, generator=generator) if n_chunks > 1 else torch.arange(n_points)
    bounds = [round(i * n_points / n_chunks) for i in range(n_chunks + 1)]
    # Share the points to keep among chunks in proportion to their sizes (largest remainders get the rest)
    sizes = [bounds[i + 1] - bounds[i] for i in range(n_chunks)]
    shares = [total_keep * s / n_points for s in sizes]
    quotas = [int(q) for q in shares]
    for i in sorted(range(n_chunks), key=lambda i: quotas[i] - shares[i])[: total_keep - sum(quotas)]:
        quotas[i] += 1
    kept = []
    for i in reporter.iter(range(n_chunks), "coreset", total=n_chunks):
        members = order[bounds[i] : bounds[i + 1]]
        points = features[members].float()
        if projection is not None:
            points = points @ projection.to(points.device)
        start = int(torch.randint(len(members), (1,), generator=generator))
        kept.append(members[_k_center_greedy(points, quotas[i], start).cpu()])
    return torch.sort(torch.cat(kept)).values


def _k_center_greedy(points: torch.Tensor, n_keep: int, start: int) -> torch.Tensor:
    """Exact k-center greedy on one chunk: indices in the order chosen."""
    chosen = torch.empty(n_keep, dtype=torch.long, device=points.device)
    squared_norms = (points * points).sum(dim=1)
    min_distance = torch.full_like(squared_norms, float("inf"))
    index = start
    for step in range(n_keep):
        chosen[step] = index
        centre = points[index]
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: one matrix-vector product per step
        distance = torch.addmv(squared_norms + squared_norms[index], points, centre, alpha=-2.0)
        torch.minimum(min_distance, distance, out=min_distance)
        index = int(torch.argmax(min_distance))
    return chosen


def nearest_neighbour_distances(
    queries: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distances ``(M, k)`` from each query ``(M, C)`` to its ``k`` nearest rows of ``bank`` ``(K, C)``,
    nearest first, and their indices ``(M, k)``. Queries go in chunks so the distance matrix stays small."""
    if bank.shape[0] == 0:
        raise ValueError("the memory bank is empty")
    k = min(k, bank.shape[0])
    bank = bank.float()
    bank_norms = (bank * bank).sum(dim=1)
    if torch.compiler.is_exporting():
        # An exported graph (anomalens.export) has no Python loop over a symbolic size: one block, and the
        # runtime that runs the graph bounds the batch instead.
        return _nearest_block(queries.float(), bank, bank_norms, k)
    if chunk is None:
        chunk = max(1, SEARCH_BUDGET // bank.shape[0])
    distances, indices = [], []
    for start in range(0, queries.shape[0], chunk):
        value, index = _nearest_block(queries[start : start + chunk].float(), bank, bank_norms, k)
        distances.append(value)
        indices.append(index)
    if not distances:
        return torch.zeros((0, k), device=queries.device), torch.zeros((0, k), dtype=torch.long, device=queries.device)
    return torch.cat(distances), torch.cat(indices)


def _nearest_block(
    q: torch.Tensor, bank: torch.Tensor, bank_norms: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # ||q - b||^2 = ||b||^2 - 2 q.b + ||q||^2; the last term is the same along a row, so add it after the min
    partial = torch.addmm(bank_norms[None, :], q, bank.T, alpha=-2.0)
    if k == 1:
        value, index = partial.min(dim=1, keepdim=True)
    else:
        value, index = partial.topk(k, dim=1, largest=False)
    value = value + (q * q).sum(dim=1, keepdim=True)
    return value.clamp(min=0.0).sqrt(), index


class Reservoir:
    """A uniform random sample of at most ``capacity`` rows from a stream of row batches (Vitter's algorithm R).

    Memory stays at ``capacity`` rows however long the stream (hours of training video), and the sample is
    the same for the same seed and stream.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError(f"reservoir capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.seen = 0
        self.rows: torch.Tensor | None = None
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, rows: torch.Tensor) -> None:
        """Offer a batch of rows ``(N, C)``; each row seen so far stays in the sample with equal probability."""
        if self.rows is None:
            self.rows = torch.empty(self.capacity, rows.shape[1], dtype=rows.dtype)
        filled = min(self.seen, self.capacity)
        take = min(len(rows), self.capacity - filled)
        self.rows[filled : filled + take] = rows[:take]
        rest = rows[take:]
        if len(rest):
            # row number i (0-based over the whole stream) replaces a random slot with probability capacity/(i+1)
            number = self.seen + take + torch.arange(len(rest))
            slot = (torch.rand(len(rest), generator=self.generator, dtype=torch.float64) * (number + 1)).long()
            kept = slot < self.capacity
            # when two rows of this batch draw the same slot, the later one wins, as in the sequential algorithm
            winner = torch.full((self.capacity,), -1, dtype=torch.long)
            winner.scatter_reduce_(0, slot[kept], torch.arange(len(rest))[kept], reduce="amax")
            replaced = (winner >= 0).nonzero().squeeze(1)
            self.rows[replaced] = rest[winner[replaced]]
        self.seen += len(rows)

    @property
    def size(self) -> int:
        """How many rows the sample holds."""
        return min(self.seen, self.capacity)

    @property
    def sample(self) -> torch.Tensor:
        """The rows kept so far ``(min(seen, capacity), C)``."""
        if self.rows is None:
            raise ValueError("the reservoir is empty")
        return self.rows[: min(self.seen, self.capacity)]
