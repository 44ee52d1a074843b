"""The REST inference server behind ``anomalens serve``.

>>> from anomalens.serve import serve
>>> serve("bundles/bottle_onnx", host="127.0.0.1", port=8000, token="s3cret")   # doctest: +SKIP

Listening beyond this machine (a host that is not loopback) needs a token.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path
from typing import Callable

from anomalens.errors import ConfigError
from anomalens.serve.app import ServeSettings, create_app
from anomalens.serve.backends import load_predictor

TOKEN_ENV = "ANOMALENS_SERVE_TOKEN"

__all__ = ["TOKEN_ENV", "ServeSettings", "create_app", "is_loopback", "load_predictor", "serve"]


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def resolve_token(token: str | None) -> str | None:
    """The token from the flag, else from ``ANOMALENS_SERVE_TOKEN``; empty means none."""
    value = token if token is not None else os.environ.get(TOKEN_ENV)
    return value or None


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          settings: ServeSettings | None = None, device: str = "auto", threads: int | None = None,
          announce: Callable[[str], None] | None = None) -> None:
    """Load ``model`` (a bundle or a run folder) and serve it with uvicorn until stopped."""
    import uvicorn

    token = resolve_token(token)
    if not is_loopback(host) and token is None:
        raise ConfigError(f"refusing to listen on {host} without authentication: give a token (or set {TOKEN_ENV}), "
                          "or listen on 127.0.0.1")
    settings = dataclasses.replace(settings or ServeSettings(), token=token)
    app = create_app(load_predictor(model, device=device, threads=threads), settings)
    if announce is not None:
        announce(f"serving {model} at http://{host}:{port}" + (" (bearer token required)" if token else ""))
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
