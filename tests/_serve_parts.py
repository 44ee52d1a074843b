"""The REST server for the serve tests (tests/test_serve.py, tests/test_serve_hardening.py): a real uvicorn process
on a free 127.0.0.1 port with a bearer token, waited for until ``/healthz`` answers and stopped by its PID
(:func:`anomalens.serve.process.served`); and the micro-batcher on its own, in an event loop of its own.

>>> with serving(onnx_bundle, ["--queue-size", "2"]) as url:                      # doctest: +SKIP
...     httpx.post(f"{url}/v1/predict", content=png, headers=AUTH)
>>> async def scenario(batcher): return await batcher.submit([image], [(5, 6)])  # doctest: +SKIP
>>> with_batcher(scenario)                                                       # doctest: +SKIP
[(5, 6)]
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Sequence, TypeVar

import numpy as np

from anomalens.serve.batching import MicroBatcher
from anomalens.serve.process import served

T = TypeVar("T")

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SRC = Path(__file__).resolve().parents[1] / "src"


@contextlib.contextmanager
def serving(model: str | Path, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """The server for ``model`` with :data:`TOKEN` and the settings ``extra_args``, as its base URL."""
    # PYTHONPATH: the child process imports the same source tree as the tests
    with served(model, token=TOKEN, extra_args=list(extra_args), env={"PYTHONPATH": str(SRC)}) as handle:
        yield handle.url


def echo_sizes(batch: np.ndarray, sizes: list[Any]) -> list[Any]:
    """A batch function that answers each image with the size it was submitted with."""
    return list(sizes)


def with_batcher(scenario: Callable[[MicroBatcher], Awaitable[T]], run_batch: Callable[[np.ndarray, list[Any]], list[Any]] = echo_sizes,
                 *, max_batch: int = 4, max_wait: float = 0.01, queue_size: int = 8) -> T:
    """What ``scenario`` returns, run on a started :class:`MicroBatcher` in a new event loop; the batcher is stopped
    whatever happens (its worker task would otherwise outlive the loop)."""

    async def run() -> T:
        batcher = MicroBatcher(run_batch, max_batch=max_batch, max_wait=max_wait, queue_size=queue_size)
        await batcher.start()
        try:
            return await scenario(batcher)
        finally:
            await batcher.stop()

    return asyncio.run(run())
