"""Memory-bank reduction: greedy k-center coresets (the one implementation) and reservoir sampling.

:func:`greedy_coreset` is PatchCore's k-center greedy: start from a seeded random point, then repeatedly add
the point farthest from everything chosen so far, measuring distances after a random projection. The exact
algorithm costs ``N * k`` distance evaluations, which on a CPU takes minutes for PatchCore-sized banks; here
the points are dealt at random into chunks of at most ``chunk_size`` and each chunk keeps its share with the
exact greedy rule. A chunk's working set stays in the CPU cache, memory stays bounded (no ``N x N`` matrix), and
for ``N <= chunk_size`` the result is exactly PatchCore's. The cost is ``n_keep * chunk_size`` distance
evaluations whatever ``N``, so a bounded bank (``n_keep`` capped) is selected in time linear in ``N``.

:func:`batched_greedy_coreset` runs the same rule for many small sets at once (the video model's per-cell
memories); both call :func:`k_center_greedy`. Nearest-neighbour search lives in :mod:`.search`.

>>> features = torch.randn(5000, 152)
>>> keep = greedy_coreset(features, ratio=0.1, seed=0)
>>> features[keep].shape
torch.Size([500, 152])
"""

from __future__ import annotations

import math

import torch

from anomalens.progress import SILENT, Reporter

DEFAULT_CHUNK_SIZE = 16384


def coreset_size(n_points: int, n_keep: int | None = None, ratio: float | None = None) -> int:
    """How many points to keep: ``n_keep`` if given, else ``ceil(ratio * n_points)``; at least 1."""
    if n_keep is None:
        if ratio is None or not 0.0 < ratio <= 1.0:
            raise ValueError(f"coreset ratio must be in (0, 1], got {ratio}")
        n_keep = math.ceil(ratio * n_points)
    return max(1, min(int(n_keep), n_points))


def bounded_coreset_size(n_points: int, ratio: float, cap: int | None) -> int:
    """``ceil(ratio * n_points)``, but at most ``cap`` (``None``: no cap): the size of a bounded memory bank."""
    size = coreset_size(n_points, ratio=ratio)
    return size if cap is None else min(size, max(1, int(cap)))


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
        start = torch.randint(len(members), (1,), generator=generator).to(points.device)
        if quotas[i]:
            kept.append(members[k_center_greedy(points[None], quotas[i], start)[0].cpu()])
    return torch.sort(torch.cat(kept)).values


def batched_greedy_coreset(points: torch.Tensor, size: int, seed: int = 0, projection_dim: int = 32) -> torch.Tensor:
    """Greedy k-center selection run for many small sets at once: ``(P, N, C)`` -> indices ``(P, size)``.

    Each of the P sets (the video model's grid cells) keeps ``size`` entries covering its normal variety. As in
    PatchCore, distances are measured after a seeded random projection to ``projection_dim`` channels.
    """
    p, n, c = points.shape
    size = min(size, n)
    generator = torch.Generator().manual_seed(seed)
    if projection_dim < c:
        points = points @ (torch.randn(c, projection_dim, generator=generator) / projection_dim**0.5).to(points)
    starts = torch.randint(0, n, (p,), generator=generator).to(points.device)
    return k_center_greedy(points, size, starts)


def k_center_greedy(points: torch.Tensor, n_keep: int, starts: torch.Tensor) -> torch.Tensor:
    """Exact k-center greedy on ``P`` sets ``(P, N, C)`` at once, from the given first picks ``(P,)``:
    indices ``(P, n_keep)`` in the order chosen. Memory is ``O(P * N)``: no distance matrix."""
    points = points.contiguous()
    p, n, _ = points.shape
    picked = torch.empty(p, n_keep, dtype=torch.long, device=points.device)
    picked[:, 0] = starts
    rows = torch.arange(p, device=points.device)
    nearest = torch.full((p, n), math.inf, device=points.device, dtype=points.dtype)
    norms = points.pow(2).sum(-1)
    for k in range(1, n_keep + 1):
        chosen = points[rows, picked[:, k - 1]].unsqueeze(2)  # (P, C, 1)
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2: one matrix-vector product per set and step
        if p == 1:  # one set (PatchCore's chunks): addmv is twice as fast as a batched product of one
            distance = torch.addmv(norms[0] + chosen.pow(2).sum(), points[0], chosen[0, :, 0], alpha=-2.0)[None]
        else:
            distance = torch.baddbmm(norms.unsqueeze(2), points, chosen, alpha=-2.0).squeeze(2)
            distance += chosen.pow(2).sum(1)
        torch.minimum(nearest, distance, out=nearest)
        if k < n_keep:
            picked[:, k] = nearest.argmax(dim=1)
    return picked


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
        self.tags: torch.Tensor | None = None  # where each kept row came from (e.g. clip and frame), if given
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, rows: torch.Tensor, tags: torch.Tensor | None = None) -> None:
        """Offer a batch of rows ``(N, C)``; each row seen so far stays in the sample with equal probability.
        ``tags`` ``(N, K)`` integers travel with their rows (the same in every call, or never)."""
        if self.rows is None:
            self.rows = torch.empty(self.capacity, rows.shape[1], dtype=rows.dtype)
            if tags is not None:
                self.tags = torch.empty(self.capacity, tags.shape[1], dtype=torch.long)
        filled = min(self.seen, self.capacity)
        take = min(len(rows), self.capacity - filled)
        self.rows[filled : filled + take] = rows[:take]
        if self.tags is not None and tags is not None:
            self.tags[filled : filled + take] = tags[:take]
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
            if self.tags is not None and tags is not None:
                self.tags[replaced] = tags[take:][winner[replaced]]
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

    @property
    def sample_tags(self) -> torch.Tensor | None:
        """The tags of the kept rows, in the order of :attr:`sample` (None if rows came without tags)."""
        return None if self.tags is None else self.tags[: min(self.seen, self.capacity)]
