"""The REST server for the serve tests (tests/test_serve.py, tests/test_serve_hardening.py): a real uvicorn process
on a free 127.0.0.1 port with a bearer token, waited for until ``/healthz`` answers and stopped by its PID
(:func:`anomalens.serve.process.served`).

>>> with serving(onnx_bundle, ["--queue-size", "2"]) as url:                      # doctest: +SKIP
...     httpx.post(f"{url}/v1/predict", content=png, headers=AUTH)
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

from anomalens.serve.process import served

TOKEN = "test-token-123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SRC = Path(__file__).resolve().parents[1] / "src"


@contextlib.contextmanager
def serving(model: str | Path, extra_args: Sequence[str] = ()) -> Iterator[str]:
    """The server for ``model`` with :data:`TOKEN` and the settings ``extra_args``, as its base URL."""
    # PYTHONPATH: the child process imports the same source tree as the tests
    with served(model, token=TOKEN, extra_args=list(extra_args), env={"PYTHONPATH": str(SRC)}) as handle:
        yield handle.url
