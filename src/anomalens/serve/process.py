"""Run ``anomalens serve`` as a child process on a free 127.0.0.1 port and stop it by its PID.

For the load test (``benchmarks/serve_load.py``) and the HTTP tests, which talk to a real uvicorn process.

>>> with served("bundles/bottle_onnx", token="t") as server:              # doctest: +SKIP
...     httpx.get(f"{server.url}/healthz")
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import httpx

from anomalens.errors import AnomalensError


@dataclass
class ServedModel:
    url: str
    process: subprocess.Popen

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served(model: str | Path, token: str | None = None, extra_args: Sequence[str] = (), startup_timeout: float = 120.0,
           env: dict[str, str] | None = None) -> Iterator[ServedModel]:
    """Start the server for ``model``, wait until ``/healthz`` answers, yield it, then terminate it (kill after 20 s)."""
    port = free_port()
    child_env = {**os.environ, **(env or {})}
    if token is not None:
        child_env["ANOMALENS_SERVE_TOKEN"] = token  # not on the command line, where `ps` would show it
    process = subprocess.Popen(
        [sys.executable, "-m", "anomalens", "serve", "--model", str(model), "--port", str(port), *extra_args],
        env=child_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise AnomalensError(f"the server exited during start-up: {(process.stdout.read() or '')[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AnomalensError(f"the server did not answer within {startup_timeout:.0f} s")
            time.sleep(0.3)
        yield ServedModel(url=url, process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
