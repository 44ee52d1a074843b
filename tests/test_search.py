"""The nearest-neighbour search module and the bounded memory bank built on it (small synthetic data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _textures import add_spot, woven_textures
from anomalens.models import load_detector
from anomalens import neighbours
from anomalens.models.components.sampler import bounded_coreset_size, greedy_coreset
from anomalens.models.components.search import NearestNeighbourIndex, recall_at_1
from anomalens.models.image import patchcore
from anomalens.models.image.patchcore import PatchCore, PatchCoreConfig


def _clustered(n_bank: int, n_queries: int, dim: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Bank and queries drawn around the same 40 centres, as patch features are (not uniform noise)."""
    generator = torch.Generator().manual_seed(seed)
    centres = 5 * torch.randn(40, dim, generator=generator)
    bank = centres[torch.randint(40, (n_bank,), generator=generator)] + torch.randn(n_bank, dim, generator=generator)
    queries = centres[torch.randint(40, (n_queries,), generator=generator)] + torch.randn(n_queries, dim, generator=generator)
    return bank, queries


@pytest.mark.parametrize("k", [1, 3])
def test_exact_search_matches_brute_force(k):
    generator = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(300, 24, generator=generator), torch.randn(500, 24, generator=generator)
    index = NearestNeighbourIndex(bank)
    assert index.kind == "exact"
    distances, indices = index.search(queries, k=k)
    expected = torch.cdist(queries.double(), bank.double()).topk(k, dim=1, largest=False)
    assert torch.allclose(distances.double(), expected.values, atol=1e-4)
    assert torch.equal(indices, expected.indices)


def test_approximate_search_agrees_with_exact_on_clustered_data():
    bank, queries = _clustered(6000, 2000)
    approximate = NearestNeighbourIndex(bank, exact_limit=1000)
    assert approximate.kind == "ivf"
    assert NearestNeighbourIndex(bank, exact=True, exact_limit=1000).kind == "exact"  # --exact-search
    assert recall_at_1(approximate, queries) >= 0.95
    found, _ = approximate.search(queries)
    truth = torch.cdist(queries.double(), bank.double()).min(dim=1).values
    assert float((found[:, 0].double() / truth).mean()) < 1.01  # misses are near misses
    # the same bank and seed give the same index, so a reloaded model scores the same
    again = NearestNeighbourIndex(bank.clone(), exact_limit=1000)
    assert torch.equal(again.search(queries)[1], approximate.search(queries)[1])


def test_bank_is_bounded_by_the_cap():
    assert bounded_coreset_size(100_000, ratio=0.1, cap=16384) == 10_000
    assert bounded_coreset_size(1_000_000, ratio=0.1, cap=16384) == 16384
    assert bounded_coreset_size(1_000_000, ratio=0.1, cap=None) == 100_000
    points = torch.randn(3000, 8, generator=torch.Generator().manual_seed(1))
    assert len(greedy_coreset(points, n_keep=bounded_coreset_size(3000, 0.5, 200), chunk_size=512)) == 200


def test_patchcore_bank_stays_under_the_cap_over_several_passes(monkeypatch):
    # 10 images of 64 px = 640 patches; passes of 200 patches, each keeping up to 60, then one last coreset to 60
    monkeypatch.setattr(patchcore, "MAX_BUFFERED_PATCHES", 200)
    detector = PatchCore(PatchCoreConfig(image_size=(64, 64), coreset_ratio=0.5, memory_bank_size=60, batch_size=4))
    detector.fit(woven_textures(10, seed=0), woven_textures(2, seed=1))
    assert detector.memory_bank_.shape[0] == 60
    assert detector.history_[-1] == {"training_patches": 640, "memory_bank": 60}
    normal = woven_textures(2, seed=2)
    prediction = detector.predict(torch.cat([normal, add_spot(normal, top=30, left=30, side=6)]))
    assert prediction.scores[2:].min() > prediction.scores[:2].max()


def test_save_and_load_with_an_approximate_index_give_identical_scores(monkeypatch, tmp_path):
    monkeypatch.setattr(neighbours, "EXACT_SEARCH_LIMIT", 100)
    detector = PatchCore(PatchCoreConfig(image_size=(64, 64), coreset_ratio=0.5))
    detector.fit(woven_textures(8, seed=0), woven_textures(2, seed=1))
    assert detector.index_.kind == "ivf" and len(detector.memory_bank_) == 256
    images = add_spot(woven_textures(3, seed=5), top=10, left=40, side=5)
    before = detector.predict(images)
    detector.save(tmp_path / "model")
    loaded = load_detector(tmp_path / "model")
    assert loaded.index_.kind == "ivf"
    np.testing.assert_array_equal(before.scores, loaded.predict(images).scores)
    np.testing.assert_array_equal(before.maps, loaded.predict(images).maps)


def test_the_runtime_search_reads_the_library_index_and_numpy_finds_the_same_neighbours(tmp_path):
    # one search class for the library and the torch-free runtime: an index written by the library and read back,
    # and numpy's exact search (a line PC without faiss), give the library's neighbours
    generator = np.random.default_rng(0)
    bank = generator.normal(size=(300, 16)).astype(np.float32)
    queries = generator.normal(size=(50, 16)).astype(np.float32)
    library = NearestNeighbourIndex(torch.from_numpy(bank), exact=True)
    expected_distances, expected_indices = library.search(torch.from_numpy(queries), k=3)
    assert library.cpu_search.write_index(tmp_path / "index.faiss")
    read_back = neighbours.BankSearch(bank, index_path=tmp_path / "index.faiss")
    plain = neighbours.BankSearch(bank)
    plain.index = None  # as without faiss
    for search_ in (read_back, plain):
        distances, indices = search_.search(queries, k=3)
        np.testing.assert_array_equal(indices, expected_indices.numpy())
        np.testing.assert_allclose(distances, expected_distances.numpy(), rtol=1e-5, atol=1e-5)
