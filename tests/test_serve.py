"""The REST server through real HTTP against a real uvicorn process (started on a free 127.0.0.1 port, stopped
by its PID: tests/_serve_parts.py), plus the micro-batcher on its own."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from _serve_parts import AUTH, serving, with_batcher
from anomalens.cli import main
from anomalens.inference import Inferencer
from anomalens.serve.backends import load_predictor
from anomalens.serve.batching import Busy, MicroBatcher


@pytest.fixture(scope="module")
def server(onnx_bundle):
    with serving(onnx_bundle, ["--max-request-mb", "1", "--max-wait-ms", "50"]) as url:
        yield url


@pytest.fixture(scope="module")
def images(synthetic_image_dataset):
    root, category = synthetic_image_dataset
    return sorted((root / category / "test" / "good").glob("*.png"))[:2] + sorted((root / category / "test" / "scratch").glob("*.png"))[:2]


def test_predict_gives_the_runtime_verdicts_with_heatmap_and_mask(server, images, onnx_bundle):
    expected = Inferencer.load(onnx_bundle).predict(images)
    raw = httpx.post(f"{server}/v1/predict?heatmap=true&mask=1", content=images[-1].read_bytes(), headers=AUTH, timeout=30)
    assert raw.status_code == 200, raw.text
    result = raw.json()["results"][0]
    assert result["score"] == pytest.approx(expected[-1].score, rel=1e-6)
    assert result["anomalous"] == expected[-1].anomalous and result["threshold"] == pytest.approx(expected[-1].threshold)
    assert result["regions"] == [r.to_dict() for r in expected[-1].regions]
    assert (result["image_height"], result["image_width"]) == expected[-1].image_size == (128, 128)  # the upload's own
    heatmap = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["heatmap_png"]))))
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["mask_png"])))) > 0
    assert heatmap.shape == (64, 64)  # the model's input size
    assert mask.shape == (128, 128) and np.array_equal(mask, expected[-1].image_mask())  # the image's, as the regions

    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
    multi = httpx.post(f"{server}/v1/predict", files=files, headers=AUTH, timeout=30)
    assert multi.status_code == 200, multi.text
    got = multi.json()["results"]
    assert [r["name"] for r in got] == [p.name for p in images]
    assert [r["anomalous"] for r in got] == [r.anomalous for r in expected]
    assert "heatmap_png" not in got[0]


def test_auth_is_required(server, images):
    body = images[0].read_bytes()
    assert httpx.post(f"{server}/v1/predict", content=body, timeout=30).status_code == 401
    wrong = httpx.post(f"{server}/v1/predict", content=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert wrong.status_code == 401 and wrong.json() == {"error": "missing or wrong bearer token"}
    assert httpx.get(f"{server}/v1/model", timeout=10).status_code == 401
    assert httpx.get(f"{server}/healthz", timeout=10).json()["status"] == "ok"  # liveness needs no token


def test_bad_input_gets_a_clean_json_error(server):
    bad = httpx.post(f"{server}/v1/predict", content=b"not an image at all", headers=AUTH, timeout=30)
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]
    assert "Traceback" not in bad.text
    empty = httpx.post(f"{server}/v1/predict", content=b"", headers=AUTH, timeout=30)
    assert empty.status_code == 400 and "no image" in empty.json()["error"]
    huge = httpx.post(f"{server}/v1/predict", content=b"x" * (2 << 20), headers=AUTH, timeout=30)
    assert huge.status_code == 413 and "limit" in huge.json()["error"]
    assert httpx.get(f"{server}/docs", timeout=10).status_code == 404  # no interactive docs (no CDN assets)


@pytest.fixture(scope="module")
def anomalous_image(synthetic_image_dataset, onnx_bundle):
    root, category = synthetic_image_dataset
    paths = sorted((root / category / "test").rglob("*.png"))
    results = Inferencer.load(onnx_bundle).predict(paths)
    best = int(np.argmax([r.score for r in results]))
    assert results[best].anomalous
    return paths[best]


def test_model_metrics_and_micro_batching(server, anomalous_image):
    info = httpx.get(f"{server}/v1/model", headers=AUTH, timeout=10).json()
    assert info["model"] == "patchcore" and info["engine"] == "onnx" and info["image_size"] == [64, 64]
    assert "token" not in info["server"]
    body = anomalous_image.read_bytes()
    statuses: list[int] = []

    def client() -> None:
        statuses.append(httpx.post(f"{server}/v1/predict", content=body, headers=AUTH, timeout=60).status_code)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 8
    text = httpx.get(f"{server}/metrics", headers=AUTH, timeout=10).text
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and not line.startswith("#")}
    assert values['anomalens_requests_total{endpoint="/v1/predict",status="200"}'] >= 10
    assert values["anomalens_anomalies_total"] >= 8
    assert values["anomalens_batch_size_count"] < values["anomalens_images_total"]  # some passes held several images
    assert 'anomalens_request_seconds_bucket{endpoint="/v1/predict",le="+Inf"}' in values


def test_refuses_to_listen_beyond_loopback_without_a_token(onnx_bundle, monkeypatch, capsys):
    monkeypatch.delenv("ANOMALENS_SERVE_TOKEN", raising=False)
    assert main(["serve", "--model", str(onnx_bundle), "--host", "0.0.0.0"]) == 2
    assert "without authentication" in capsys.readouterr().err


def test_batcher_refuses_sizes_that_do_not_match_the_images():
    async def scenario(batcher: MicroBatcher) -> None:
        with pytest.raises(ValueError, match="2 images but 1 sizes"):
            await batcher.submit([np.zeros((2, 2, 3), np.uint8)] * 2, [(5, 6)])
        assert await batcher.submit([np.zeros((2, 2, 3), np.uint8)] * 2, [(5, 6), (7, 8)]) == [(5, 6), (7, 8)]

    with_batcher(scenario)


def test_batcher_refuses_when_full_and_batches_what_waits():
    seen: list[int] = []
    running, release = threading.Event(), threading.Event()

    def slow(batch: np.ndarray, sizes: list) -> list[int]:
        assert sizes == [None] * len(batch)  # submitted without sizes
        seen.append(len(batch))
        running.set()
        release.wait(10)  # the first batch holds until the test has filled the queue (no timing guesses)
        return [int(x[0, 0, 0]) for x in batch]

    async def scenario(batcher: MicroBatcher) -> tuple[list, bool]:
        image = lambda v: np.full((2, 2, 3), v, np.uint8)  # noqa: E731
        first = asyncio.create_task(batcher.submit([image(1)]))
        assert await asyncio.get_running_loop().run_in_executor(None, running.wait, 10)  # the first batch runs
        waiting = [asyncio.create_task(batcher.submit([image(v)])) for v in (2, 3, 4)]
        for _ in range(1000):  # until the three wait in the queue
            if batcher.depth == 3:
                break
            await asyncio.sleep(0.001)
        try:
            await batcher.submit([image(5)])
            refused = False
        except Busy:
            refused = True
        release.set()  # the three that waited then go together
        return [await first] + [await w for w in waiting], refused

    results, refused = with_batcher(scenario, slow, max_wait=0.05, queue_size=3)
    assert results == [[1], [2], [3], [4]] and refused
    assert seen == [1, 3]


def test_a_run_folder_is_served_by_the_library_with_the_same_verdicts(patchcore_run, onnx_bundle, images):
    library, runtime = load_predictor(patchcore_run, device="cpu"), load_predictor(onnx_bundle)
    batch = np.stack([library.prepare(p.read_bytes(), p.name) for p in images])
    assert np.array_equal(batch, np.stack([runtime.prepare(p) for p in images]))  # the same pixels
    ours, theirs = library.predict_prepared(batch), runtime.predict_prepared(batch)
    assert [r.anomalous for r in ours] == [r.anomalous for r in theirs]
    assert max(abs(a.score - b.score) for a, b in zip(ours, theirs)) <= 1e-4 * library.calibration.scale
    assert library.describe()["engine"] == "pytorch" and runtime.describe()["engine"] == "onnx"
