"""PatchCore's nearest-neighbour search in the runtime, between the bundle's two graphs (no torch).

The search itself is :class:`anomalens.neighbours.BankSearch`, the class the library searches with.

The bundle holds the memory bank (``memory_bank.npy``) and the library's own faiss index (``search_index.faiss``,
faiss's binary format: an IVF index for banks above 4,096 entries, as ``anomalens.neighbours``
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

import numpy as np

from anomalens.neighbours import BankSearch


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
