"""Micro-batching: images of concurrent requests are scored together in one forward pass.

Each image waits in a bounded queue; one worker takes the first waiting image, then whatever else arrives
within ``max_wait`` seconds, up to ``max_batch`` images, and runs them as one batch on a single worker thread
(the engine's own threads do the parallel work). A full queue refuses new work at once (:class:`Busy`), which
the server turns into ``503`` with ``Retry-After``, instead of letting latency grow without bound.

>>> batcher = MicroBatcher(predictor.predict_prepared, max_batch=8, max_wait=0.01, queue_size=64)   # doctest: +SKIP
>>> results = await batcher.submit([image_a, image_b])                                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import numpy as np


class Busy(Exception):
    """The queue is full: try again later."""


class TooLarge(Exception):
    """More than the server could ever take at once (not worth retrying): a request larger than the queue, an
    image larger than the decode budget."""


class DecodeGate:
    """Admission to decoding uploads: at most ``workers`` decode at once (about the CPU count: more only share the
    same cores), and at most ``max_pixels`` native pixels are admitted at a time, waiting or decoding.

    The queue of :class:`MicroBatcher` bounds images at the model's size; this bounds the step before, where a
    215 KB PNG of 8192x8192 pixels becomes 200 MB and more: four of them decoded in parallel took +900 MB. The
    pixels come from the header (``anomalens.data.pixels.encoded_image_size``) before anything is decoded. Over the
    budget is :class:`Busy` (the server answers 503 with Retry-After, as for a full queue); a single image above
    the whole budget is :class:`TooLarge` (413). Used from the event loop's thread only, so no lock.

    >>> async with gate.admit(height * width):                                   # doctest: +SKIP
    ...     image = await run_in_threadpool(decode, data)
    """

    def __init__(self, workers: int, max_pixels: int) -> None:
        if workers < 1 or max_pixels < 1:
            raise ValueError("workers and max_pixels must be >= 1")
        self.workers = workers
        self.max_pixels = max_pixels
        self.pixels = 0  # admitted now
        self._slots = asyncio.Semaphore(workers)

    @contextlib.asynccontextmanager
    async def admit(self, pixels: int) -> AsyncIterator[None]:
        if pixels > self.max_pixels:
            raise TooLarge(f"an image of {_megapixels(pixels)} is more than this server decodes at once "
                           f"({_megapixels(self.max_pixels)})")
        if self.pixels + pixels > self.max_pixels:
            raise Busy(f"{_megapixels(self.pixels)} of images are being decoded (limit {_megapixels(self.max_pixels)})")
        self.pixels += pixels
        try:
            async with self._slots:
                yield
        finally:
            self.pixels -= pixels


@dataclass
class _Item:
    image: np.ndarray
    size: Any  # what run_batch needs beside the pixels: the image's own (height, width)
    future: asyncio.Future


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} megapixels"


class MicroBatcher:
    """Collects images from concurrent callers into batches for ``run_batch`` (``(N, H, W, 3)`` and the N images'
    own sizes -> N results)."""

    def __init__(self, run_batch: Callable[[np.ndarray, list[Any]], list[Any]], max_batch: int, max_wait: float, queue_size: int,
                 on_batch: Callable[[int], None] | None = None) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait < 0:
            raise ValueError("max_batch and queue_size must be >= 1 and max_wait >= 0")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.queue_size = queue_size
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Item] | None = None
        self.worker: asyncio.Task | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="anomalens-forward")

    @property
    def depth(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size)
        self.worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def submit(self, images: list[np.ndarray], sizes: list[Any] | None = None) -> list[Any]:
        """Queue ``images`` with their own ``sizes`` (all or none) and wait for their results, in order;
        :class:`Busy` when full, :class:`TooLarge` for more images than the queue holds."""
        assert self.queue is not None, "start() the batcher first"
        if len(images) > self.queue_size:  # would be Busy forever, even with an empty queue
            raise TooLarge(f"{len(images)} images at once; the queue holds {self.queue_size}")
        if self.queue.qsize() + len(images) > self.queue_size:
            raise Busy(f"{self.queue.qsize()} images are waiting (limit {self.queue_size})")
        loop = asyncio.get_running_loop()
        sizes = sizes if sizes is not None else [None] * len(images)
        if len(sizes) != len(images):
            raise ValueError(f"{len(images)} images but {len(sizes)} sizes")
        items = [_Item(image, size, loop.create_future()) for image, size in zip(images, sizes)]
        for item in items:
            self.queue.put_nowait(item)
        return list(await asyncio.gather(*(item.future for item in items)))

    async def _work(self) -> None:
        assert self.queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                if not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            live = [item for item in batch if not item.future.done()]  # a caller may have gone away
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, np.stack([i.image for i in live]),
                                                     [i.size for i in live])
            except Exception as exc:  # every waiting request hears about it; the worker keeps going
                for item in live:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(live))
            for item, result in zip(live, results):
                if not item.future.done():
                    item.future.set_result(result)
