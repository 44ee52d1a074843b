"""The same seed gives the same model and the same scores whatever CPUs the process may use.

faiss (its BLAS products and k-means) and MKL (torch's LAPACK) write other bits with another thread count, and each
takes its default count from the CPUs the process may use; the search without faiss recomputes its distances in
float64 after numpy's OpenBLAS product, which wrote other bits too on some CPUs (the last check). Each check computes in a child process allowed one CPU (``os.sched_setaffinity``)
and compares with the same computation here, where the process may use every CPU. Before the counts were fixed,
PatchCore's scores and threshold (faiss's exact search), its IVF cells (faiss's k-means) and PaDiM's precision
matrices (MKL's Cholesky factorisation) came out otherwise. README, "Reproducibility".
"""

from __future__ import annotations

import textwrap
import threading

import numpy as np
import pytest
import torch

from _one_cpu import run_script, skip_unless_comparable

pytest.importorskip("faiss")

skip_unless_comparable()

# A memory bank and queries like PatchCore's (152 channels, patch features clustered around training patches)
_DATA = textwrap.dedent("""
    import hashlib, sys
    import numpy as np, torch
    rng = np.random.default_rng(0)
    bank = rng.normal(0, 3, (int(sys.argv[1]), 152)).astype(np.float32)
    queries = (bank[rng.integers(0, len(bank), 2048)] + rng.normal(0, 1, (2048, 152))).astype(np.float32)
""")

_SEARCH = _DATA + textwrap.dedent("""
    from anomalens.models.components.search import NearestNeighbourIndex
    index = NearestNeighbourIndex(torch.from_numpy(bank))
    distances, indices = index.search(torch.from_numpy(queries), k=3)
    digest = hashlib.md5(distances.numpy().tobytes() + indices.numpy().tobytes())
    print(index.kind, digest.hexdigest())
""")

_PADIM = _DATA + textwrap.dedent("""
    from anomalens.models.image.padim import GaussianStatistics, spd_inverse
    samples = torch.from_numpy(queries[:64 * 30].reshape(64, 30, 152))
    statistics = GaussianStatistics()
    statistics.add(samples)
    covariance = statistics.shrunk_covariance(0, 64) + 0.01 * torch.eye(152, dtype=torch.float64)
    print(hashlib.md5(spd_inverse(covariance).numpy().tobytes()).hexdigest())
""")


def test_nearest_neighbours_do_not_depend_on_the_cpus_the_process_may_use():
    here = run_script(_SEARCH, ["3000"], one_cpu=False)
    assert here.split()[0] == "exact"
    assert run_script(_SEARCH, ["3000"], one_cpu=True) == here


def test_padim_precision_matrices_do_not_depend_on_the_cpus_either():
    assert run_script(_PADIM, ["16"], one_cpu=True) == run_script(_PADIM, ["16"], one_cpu=False)


def test_scores_do_not_depend_on_library_threads_or_on_the_searching_thread():
    """The live watch runs its libraries on fewer threads (``library_threads``) and searches in a thread of its own;
    a server searches in worker threads. faiss's count is per thread, so each search sets it again."""
    from anomalens.models.components.search import NearestNeighbourIndex
    from anomalens.runtime import library_threads

    rng = np.random.default_rng(1)
    bank = torch.from_numpy(rng.normal(0, 3, (3000, 152)).astype(np.float32))
    queries = bank[torch.from_numpy(rng.integers(0, 3000, 2048))] + torch.from_numpy(
        rng.normal(0, 1, (2048, 152)).astype(np.float32))
    index = NearestNeighbourIndex(bank)
    reference = index.search(queries, k=1)[0].numpy()
    with library_threads(1):
        assert np.array_equal(index.search(queries, k=1)[0].numpy(), reference)
        assert torch.get_num_threads() == 1  # torch reads the OpenMP count faiss sets: restored after the search
    found = []
    worker = threading.Thread(target=lambda: found.append(index.search(queries, k=1)[0].numpy()))
    worker.start()
    worker.join()
    assert np.array_equal(found[0], reference)


_NUMPY_SEARCH = _DATA + textwrap.dedent("""
    sys.modules["faiss"] = None  # a runtime installed without faiss: BankSearch's exact search in numpy
    from anomalens.neighbours import BankSearch
    search = BankSearch(bank)
    assert search.index is None
    distances, indices = search.search(queries, k=3)
    print(hashlib.md5(distances.tobytes() + indices.tobytes()).hexdigest())
""")


def test_the_search_without_faiss_does_not_depend_on_blas_threads_either():
    # numpy's OpenBLAS takes its count from the CPUs (or OPENBLAS_NUM_THREADS); its float32 product gave the same bits
    # at 1 to 16 threads on an Intel machine but not on an AMD EPYC (1 against 2 or more, OpenBLAS 0.3.31), so the
    # search computes the chosen rows' distances again in float64, which no thread count changes: this keeps it so
    results = {run_script(_NUMPY_SEARCH, ["3000"], one_cpu=False, env={"OPENBLAS_NUM_THREADS": str(threads)})
               for threads in (1, 4)}
    results.add(run_script(_NUMPY_SEARCH, ["3000"], one_cpu=True))
    assert len(results) == 1
