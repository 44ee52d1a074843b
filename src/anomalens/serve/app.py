"""The REST inference server (FastAPI): ``POST /v1/predict``, ``GET /v1/model``, ``GET /healthz``, ``GET /metrics``.

A thin layer: decoding, scoring and regions are the library's (``backends.py``); this module adds HTTP,
authentication, limits, micro-batching (``batching.py``) and Prometheus metrics. Clients never see a traceback:
every error is ``{"error": "..."}`` with a fitting status. The interactive API docs are off (no CDN assets).

>>> app = create_app(load_predictor("bundles/bottle_onnx"), ServeSettings(token="s3cret"))   # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from anomalens.data.pixels import encoded_image_size
from anomalens.errors import ConfigError, DataError
from anomalens.inference.results import InferenceResult
from anomalens.limits import MAX_IMAGE_PIXELS
from anomalens.serve.backends import Predictor
from anomalens.serve.batching import Busy, DecodeGate, MicroBatcher, TooLarge

log = logging.getLogger("anomalens.serve")
RETRY_AFTER_SECONDS = 1


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching of the server (``anomalens serve`` flags)."""

    token: str | None = None
    max_batch: int | None = None  # default: the model's own batch size
    max_wait_ms: float = 10.0
    queue_size: int = 64
    max_request_bytes: int = 20 << 20
    max_images_per_request: int = 16  # at most queue_size: a larger request could never be queued (413)
    # native pixels of uploads admitted to decoding at once (two of the largest images accepted), and how many
    # decode at a time (default: the CPUs this process may use); see batching.DecodeGate
    max_decode_pixels: int = 2 * MAX_IMAGE_PIXELS
    decode_workers: int | None = None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity, which containers and taskset narrow), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def check_token(token: str | None) -> None:
    """Refuse a token that clients cannot send as the server reads it: HTTP headers carry ASCII, and a client
    encodes anything else its own way (curl sends UTF-8, the server reads the header as Latin-1), so a token such
    as ``s3crét`` could never match. Also refused: control characters and spaces at either end (the server
    strips those from the header). The token itself is never shown."""
    if token is not None and not (token.isascii() and token.isprintable() and token == token.strip()):
        raise ConfigError("token must be printable ASCII without spaces at either end: clients send HTTP headers "
                          "as ASCII, so none could send it as the server reads it")


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("anomalens_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("anomalens_request_seconds", "request latency", ["endpoint"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.images = Counter("anomalens_images", "images scored", registry=self.registry)
        self.anomalies = Counter("anomalens_anomalies", "images judged anomalous", registry=self.registry)
        self.batch_size = Histogram("anomalens_batch_size", "images per forward pass", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64))
        self.queue_depth = Gauge("anomalens_queue_depth", "images waiting for a forward pass", registry=self.registry)


def _png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def result_json(name: str, result: InferenceResult, heatmap: bool, mask: bool) -> dict[str, Any]:
    data = {"name": name, **result.to_dict()}
    if heatmap:  # normalised map, 0.5 at the threshold, as an 8-bit grey PNG at the model's input size
        data["heatmap_png"] = _png_base64((np.clip(result.heatmap, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    if mask:  # at the image's own size, like the regions: the pixels they count
        data["mask_png"] = _png_base64(result.image_mask().astype(np.uint8) * 255)
    return data


TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(request: Request, name: str) -> bool:
    """A boolean query parameter; a value that is neither (``?heatmap=maybe``) is a 400 naming it, not false."""
    value = request.query_params.get(name, "false").strip().lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise ApiError(400, f"query parameter {name}={value[:40]!r} is not a boolean: use true or false")
    return value in TRUE_WORDS


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _uploads(request: Request, body: bytes, max_images: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image: every file part of a multipart form, or the raw body as one image."""
    # media types are case-insensitive (RFC 9110): "Multipart/Form-Data" was read as one raw image
    if not request.headers.get("content-type", "").lstrip().lower().startswith("multipart/form-data"):
        return [("body", body)] if body else []

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, receive=replay).form(max_files=max_images, max_fields=max_images + 8)
    files = []
    for key, value in form.multi_items():
        if hasattr(value, "read"):
            files.append((value.filename or key, await value.read()))
    return files


def create_app(predictor: Predictor, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The FastAPI application serving ``predictor``; a setting it cannot serve with is a ConfigError."""
    check_token(settings.token)
    metrics = _Metrics()
    max_batch = settings.max_batch or predictor.max_batch
    batcher = MicroBatcher(predictor.predict_prepared, max_batch=max_batch, max_wait=settings.max_wait_ms / 1000.0,
                           queue_size=settings.queue_size, on_batch=metrics.batch_size.observe)
    # a request of more images than the queue holds would be refused as busy forever: its limit is the queue's
    max_images = min(settings.max_images_per_request, settings.queue_size)
    decode_workers = settings.decode_workers or usable_cpus()
    decoding = DecodeGate(decode_workers, settings.max_decode_pixels)
    model_info = predictor.describe()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # one full batch before the first request: engines compile and allocate now, not on a client's time
        warm_up = np.zeros((max_batch, *predictor.image_size, 3), dtype=np.uint8)
        await asyncio.get_running_loop().run_in_executor(batcher.executor, predictor.predict_prepared, warm_up)
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="anomalens", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    def authorize(request: Request) -> None:
        if settings.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), settings.token.encode()):
            raise ApiError(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        endpoint = request.url.path if request.url.path in ("/v1/predict", "/v1/model", "/healthz", "/metrics") else "other"
        try:
            response = await call_next(request)
        except Exception:  # last line of defence: log it here, say nothing more to the client
            log.exception("unhandled error on %s", request.url.path)
            response = JSONResponse({"error": "internal server error"}, status_code=500)
        metrics.requests.labels(endpoint, str(response.status_code)).inc()
        metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal server error"}, status_code=500)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": model_info.get("model"), "queue_depth": batcher.depth}

    @app.get("/v1/model")
    async def model(request: Request) -> dict[str, Any]:
        authorize(request)
        return {**model_info, "server": {k: v for k, v in asdict(settings).items() if k != "token"}
                | {"max_batch": max_batch, "max_images_per_request": max_images, "decode_workers": decode_workers}}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        authorize(request)
        metrics.queue_depth.set(batcher.depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/predict")
    async def predict(request: Request) -> dict[str, Any]:
        authorize(request)
        heatmap, mask = _flag(request, "heatmap"), _flag(request, "mask")  # before the work, not after it
        body = await _read_limited(request, settings.max_request_bytes)
        why = " (the server's queue size)" if max_images < settings.max_images_per_request else ""
        try:
            uploads = await _uploads(request, body, max_images)
        except StarletteHTTPException as exc:
            # Starlette's own refusal past max_files: the same 413 as a count we see ourselves
            if exc.status_code == 400 and str(exc.detail).startswith("Too many files"):
                raise ApiError(413, f"more than {max_images} images in one request; the limit is {max_images}{why}") from None
            raise
        except Exception:
            raise ApiError(400, "malformed multipart body") from None
        if not uploads:
            raise ApiError(400, "no image: send it as the request body or as multipart file parts")
        if len(uploads) > max_images:
            raise ApiError(413, f"{len(uploads)} images in one request; the limit is {max_images}{why}")
        images, sizes = [], []
        for name, data in uploads:
            try:
                # the header only (off the event loop: some formats scan far for it): what decoding will hold
                height, width = await run_in_threadpool(encoded_image_size, data, name)
                async with decoding.admit(height * width):
                    image, size = await run_in_threadpool(predictor.prepare_sized, data, name)
            except DataError as exc:
                raise ApiError(400, str(exc)) from None
            except TooLarge as exc:
                raise ApiError(413, f"{name}: {exc}") from None
            except Busy as exc:
                raise ApiError(503, f"server busy: {exc}", {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
            images.append(image)
            sizes.append(size)
        try:
            results = await batcher.submit(images, sizes)
        except Busy as exc:
            raise ApiError(503, f"server busy: {exc}", {"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        except TooLarge as exc:  # not reached: max_images is at most the queue's size
            raise ApiError(413, str(exc)) from None
        metrics.images.inc(len(results))
        metrics.anomalies.inc(sum(r.anomalous for r in results))
        return {"model": model_info.get("model"),
                "results": [result_json(name, r, heatmap, mask) for (name, _), r in zip(uploads, results)]}

    return app
