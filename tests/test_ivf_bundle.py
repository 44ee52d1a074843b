"""A PatchCore bank large enough for the approximate (IVF) search, end to end: checkpoint, ONNX bundle, runtime, server.

A real run (MVTec bottle: 16,384 entries) is searched with faiss's ``IndexIVFFlat`` (banks above
``EXACT_SEARCH_LIMIT``), and its bundle carries that index (``search_index.faiss``) and its ``nprobe``; the other
fixtures' banks are a few hundred entries, searched exactly. Here the synthetic widgets are trained at 128 px with
``coreset_ratio`` 1.0: 36 training images x 16 x 16 patches = 9,216 entries, an IVF of 144 cells visiting 4, built the
library's ordinary way (no patched limit), in about 15 s; the export takes about 35 s more.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

faiss = pytest.importorskip("faiss")

from anomalens.export import export_model  # noqa: E402
from anomalens.inference import Inferencer, read_bundle  # noqa: E402
from anomalens.models.base import to_float  # noqa: E402
from anomalens.neighbours import EXACT_SEARCH_LIMIT, IVF_ENTRIES_PER_CELL, IVF_PROBES, BankSearch  # noqa: E402
from anomalens.workflows.runs import load_detector  # noqa: E402

from test_export import _test_paths, assert_parity  # noqa: E402

BANK = 36 * 16 * 16  # training images (40 minus 4 held out) x patches of a 128 px image (stride 8)
CELLS = round(BANK / IVF_ENTRIES_PER_CELL)


@pytest.fixture(scope="module")
def ivf_run(synthetic_image_dataset, tmp_path_factory):
    from anomalens.workflows.train import train_image_model

    root, category = synthetic_image_dataset
    results = tmp_path_factory.mktemp("ivf_results")
    return train_image_model(root, category, "patchcore", results, image_size=128, seed=0, device="cpu",
                             coreset_ratio=1.0, run_name="patchcore_ivf").run_dir


@pytest.fixture(scope="module")
def ivf_bundle(ivf_run, tmp_path_factory):
    return export_model(ivf_run, "onnx", "fp32", tmp_path_factory.mktemp("ivf_bundles") / "onnx_fp32").folder


@pytest.fixture(scope="module")
def test_queries(ivf_run, synthetic_image_dataset):
    """The checkpoint's patch features of every synthetic test image: the queries its search answers."""
    detector = load_detector(ivf_run, device="cpu")
    images = detector.preprocessing.load_images(_test_paths(*synthetic_image_dataset))
    with torch.no_grad():
        features = torch.cat([detector.features(to_float(images[i : i + 8])) for i in range(0, len(images), 8)])
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).numpy()


def test_a_large_bank_is_searched_with_an_ivf_index_and_it_is_approximate(ivf_run, test_queries):
    detector = load_detector(ivf_run, device="cpu")
    bank = detector.memory_bank_.numpy()
    assert len(bank) == BANK > EXACT_SEARCH_LIMIT
    index = detector.index_.index
    assert detector.index_.kind == "ivf" and isinstance(index, faiss.IndexIVFFlat)
    assert index.nlist == CELLS == 144 and index.nprobe == IVF_PROBES == 4 and index.ntotal == BANK
    assert detector.size_summary()["search"] == "ivf"
    assert f"memory bank: {BANK} of {BANK} training patches (ivf search)" in (ivf_run / "train.log").read_text()
    # the IVF really answers: visiting 4 of 144 cells misses the true nearest entry of a few test patches
    distances, indices = detector.index_.search(torch.from_numpy(test_queries), k=1)
    exact_distances, exact_indices = BankSearch(bank, exact=True, build=True).search(test_queries, k=1)
    missed = indices.numpy()[:, 0] != exact_indices[:, 0]
    assert 0 < missed.sum() < 0.05 * len(test_queries)
    assert (distances.numpy()[missed, 0] > exact_distances[missed, 0] + 1e-3).all()  # farther, not a tie


def test_the_bundle_carries_the_ivf_index_and_reproduces_the_checkpoint(ivf_run, ivf_bundle, synthetic_image_dataset):
    meta = read_bundle(ivf_bundle)
    search = meta["search"]
    assert search["kind"] == "ivf" and search["index"] == "search_index.faiss"
    written = faiss.read_index(str(ivf_bundle / "search_index.faiss"))
    assert isinstance(written, faiss.IndexIVFFlat) and written.nlist == CELLS and written.ntotal == BANK
    assert np.load(ivf_bundle / "memory_bank.npy", allow_pickle=False).shape[0] == BANK
    check = meta["export_check"]
    assert check["images"] > 0 and check["same_verdicts"] and check["max_score_difference_over_scale"] < 1e-4

    inferencer = Inferencer.load(ivf_bundle)
    assert isinstance(inferencer.search.index, faiss.IndexIVFFlat)  # the runtime searches the IVF, not numpy
    assert inferencer.describe()["search"] == "faiss IndexIVFFlat"
    _, results = assert_parity(ivf_run, ivf_bundle, _test_paths(*synthetic_image_dataset))
    assert any(r.anomalous for r in results) and not all(r.anomalous for r in results)


def test_the_bundle_searches_with_the_nprobe_the_library_used(ivf_run, ivf_bundle, test_queries, tmp_path):
    detector = load_detector(ivf_run, device="cpu")
    library_nprobe = detector.index_.index.nprobe
    assert read_bundle(ivf_bundle)["search"]["nprobe"] == library_nprobe == IVF_PROBES
    runtime = Inferencer.load(ivf_bundle).search
    assert runtime.index.nprobe == library_nprobe
    # the same neighbours as the library for every test patch, including those the IVF gets wrong
    library_distances, library_indices = detector.index_.search(torch.from_numpy(test_queries), k=1)
    distances, indices = runtime.search(test_queries, k=1)
    assert np.array_equal(indices, library_indices.numpy())
    assert np.abs(distances - library_distances.numpy()).max() < 1e-4

    # bundle.json's nprobe is what the runtime applies: visiting every cell finds the exact neighbours
    changed = tmp_path / "all_cells"
    shutil.copytree(ivf_bundle, changed)
    meta = json.loads((changed / "bundle.json").read_text())
    meta["search"]["nprobe"] = CELLS
    (changed / "bundle.json").write_text(json.dumps(meta))
    everywhere = Inferencer.load(changed).search
    assert everywhere.index.nprobe == CELLS
    _, exact_indices = BankSearch(detector.memory_bank_.numpy(), exact=True, build=True).search(test_queries, k=1)
    assert np.array_equal(everywhere.search(test_queries, k=1)[1], exact_indices)
    assert not np.array_equal(indices, exact_indices)  # so the bundle's own nprobe (4) is not "every cell"


def test_the_server_scores_the_ivf_bundle_as_the_runtime(ivf_bundle, synthetic_image_dataset):
    from fastapi.testclient import TestClient

    from anomalens.serve.app import ServeSettings, create_app
    from anomalens.serve.backends import load_predictor

    root, category = synthetic_image_dataset
    good = sorted((root / category / "test" / "good").glob("*.png"))[0]
    defective = sorted((root / category / "test" / "scratch").glob("*.png"))[0]
    expected = Inferencer.load(ivf_bundle).predict([good, defective])
    assert [r.anomalous for r in expected] == [False, True]
    predictor = load_predictor(ivf_bundle)
    assert isinstance(predictor.search.index, faiss.IndexIVFFlat)
    with TestClient(create_app(predictor, ServeSettings(token="t0ken"))) as client:  # runs the lifespan (warm-up)
        headers = {"Authorization": "Bearer t0ken"}
        assert client.get("/v1/model", headers=headers).json()["search"] == "faiss IndexIVFFlat"
        for path, reference in zip([good, defective], expected):
            response = client.post("/v1/predict", content=path.read_bytes(), headers=headers)
            assert response.status_code == 200, response.text
            result = response.json()["results"][0]
            assert result["score"] == pytest.approx(reference.score, rel=1e-6)
            assert result["anomalous"] == reference.anomalous
            assert result["threshold"] == pytest.approx(reference.threshold)
            assert len(result["regions"]) == len(reference.regions)
