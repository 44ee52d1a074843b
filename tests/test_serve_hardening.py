"""The server against hostile uploads and settings, through real HTTP against a real uvicorn process (started as
for tests/test_serve.py, by tests/_serve_parts.py): formats Pillow has but anomalens does not accept (EPS ran
Ghostscript), damaged files whose decoder raises an unusual error, media types in upper case, a queue smaller than
a request, a budget of decoded pixels, and a token no client can send; plus the admission gate and the batcher on
their own."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from _serve_parts import AUTH, SRC, serving, with_batcher
from anomalens.serve.batching import Busy, DecodeGate, MicroBatcher, TooLarge
from anomalens.serve.process import free_port

# a bounded busy loop, then a 10x10 drawing: decoded by Pillow's EpsImagePlugin, which runs Ghostscript
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 1 4000000 {pop} for\n0 0 moveto 10 10 lineto stroke\nshowpage\n"


def png(side: int, seed: int = 0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((side, side, 3)) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def tiff_with_rational_strip_offsets() -> bytes:
    """A TIFF whose StripOffsets entry is retyped SRATIONAL: Pillow's decoder raises TypeError (found by fuzzing),
    an error type the decoder's old list of exceptions did not have (a 500)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 20, 3), 90, np.uint8)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == 273:  # StripOffsets
            struct.pack_into("<H", data, entry + 2, 10)  # type 10: SRATIONAL
    return bytes(data)


@pytest.fixture(scope="module")
def server(onnx_bundle):
    # a queue of 2 images and a decode budget of 10,000 pixels: a 64x64 upload (4,096) fits, a 128x128 (16,384) not
    with serving(onnx_bundle, ["--queue-size", "2", "--max-decode-mp", "0.01"]) as url:
        yield url


def _post(server: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{server}/v1/predict", headers={**AUTH, **kwargs.pop("headers", {})}, timeout=60, **kwargs)


def test_formats_anomalens_does_not_accept_are_refused_without_running_them(server):
    eps = _post(server, content=EPS)
    assert eps.status_code == 400 and eps.json()["error"].startswith("body: not an image anomalens reads")
    assert "PNG, JPEG, BMP, TIFF, WEBP" in eps.json()["error"]
    gif = io.BytesIO()
    Image.new("P", (64, 64)).save(gif, "GIF")  # Pillow reads GIF; IMAGE_EXTENSIONS does not list it
    named = _post(server, files=[("f", ("part.png", gif.getvalue(), "image/png"))])
    assert named.status_code == 400 and named.json()["error"].startswith("part.png: not an image anomalens reads")


def test_a_decoder_error_of_any_type_is_a_400_naming_the_upload(server):
    damaged = _post(server, files=[("f", ("good.png", png(64))), ("f", ("broken.tif", tiff_with_rational_strip_offsets()))])
    assert damaged.status_code == 400, damaged.text
    assert damaged.json()["error"].startswith("broken.tif: cannot decode image (")
    assert _post(server, content=png(64)).status_code == 200  # and the server goes on


def test_a_multipart_media_type_in_capitals_is_read_as_a_form(server):
    form = httpx.Request("POST", server, files=[("f", ("a.png", png(64, 1))), ("f", ("b.png", png(64, 2)))])
    media_type = form.headers["content-type"].replace("multipart/form-data", "Multipart/Form-Data")
    answer = _post(server, content=form.read(), headers={"Content-Type": media_type})
    assert answer.status_code == 200, answer.text
    assert [r["name"] for r in answer.json()["results"]] == ["a.png", "b.png"]


def test_a_request_larger_than_the_queue_is_413_not_503_forever(server):
    info = httpx.get(f"{server}/v1/model", headers=AUTH, timeout=10).json()["server"]
    assert info["queue_size"] == 2 and info["max_images_per_request"] == 2
    for count in (3, 20):  # 20: past the form parser's own file limit, the same answer
        answer = _post(server, files=[("f", (f"{i}.png", png(64, i))) for i in range(count)])
        assert answer.status_code == 413, answer.text
        assert "the limit is 2 (the server's queue size)" in answer.json()["error"]
        assert "retry-after" not in answer.headers  # retrying cannot help
    assert _post(server, files=[("f", (f"{i}.png", png(64, i))) for i in range(2)]).status_code == 200


def test_an_image_above_the_decode_budget_is_413_before_it_is_decoded(server):
    answer = _post(server, files=[("f", ("large.png", png(128)))])
    assert answer.status_code == 413, answer.text
    assert answer.json()["error"] == ("large.png: an image of 0.0164 megapixels is more than this server decodes at "
                                      "once (0.01 megapixels)")
    assert httpx.get(f"{server}/healthz", timeout=10).json()["queue_depth"] == 0


def test_the_decode_gate_bounds_pixels_in_flight_and_concurrent_decodes():
    async def scenario() -> None:
        gate = DecodeGate(workers=1, max_pixels=100_000)
        async with gate.admit(60_000):
            assert gate.pixels == 60_000
            with pytest.raises(Busy, match=r"0.06 megapixels of images are being decoded \(limit 0.1 megapixels\)"):
                async with gate.admit(50_000):
                    pass
            assert gate.pixels == 60_000  # a refusal holds nothing
            second = asyncio.Event()

            async def waiting() -> None:
                async with gate.admit(40_000):  # admitted (100,000 in all) but waits for the one worker
                    second.set()

            task = asyncio.create_task(waiting())
            for _ in range(100):
                await asyncio.sleep(0)
            assert gate.pixels == 100_000 and not second.is_set()
            with pytest.raises(Busy):  # waiting pixels count: they are about to be decoded
                async with gate.admit(1):
                    pass
        await task
        assert second.is_set() and gate.pixels == 0
        with pytest.raises(TooLarge, match="0.1 megapixels is more than this server decodes at once"):
            async with gate.admit(100_001):
                pass
        async with gate.admit(100_000):
            assert gate.pixels == 100_000

    asyncio.run(scenario())


def test_the_batcher_refuses_more_images_than_its_queue_holds():
    async def scenario(batcher: MicroBatcher) -> None:
        with pytest.raises(TooLarge, match="3 images at once; the queue holds 2"):
            await batcher.submit([np.zeros((2, 2, 3), np.uint8)] * 3)
        assert await batcher.submit([np.zeros((2, 2, 3), np.uint8)] * 2, [1, 2]) == [1, 2]

    with_batcher(scenario, queue_size=2)


@pytest.mark.parametrize("token", ["s3crét", " padded", "tab\tinside"])
def test_a_token_no_client_can_send_is_refused_at_start(onnx_bundle, token):
    # a real process with a time limit: a server that started anyway would serve until stopped
    done = subprocess.run([sys.executable, "-m", "anomalens", "serve", "--model", str(onnx_bundle), "--port",
                           str(free_port())], env={**os.environ, "PYTHONPATH": str(SRC), "ANOMALENS_SERVE_TOKEN": token},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "token must be printable ASCII" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert token.strip() not in done.stderr  # a secret is never echoed
