"""The REST inference server behind ``anomalens serve``.

>>> from anomalens.serve import serve
>>> serve("bundles/bottle_onnx", host="127.0.0.1", port=8000, token="s3cret")   # doctest: +SKIP

Listening beyond this machine (a host that is not loopback) needs a token.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
from pathlib import Path
from typing import Callable

from anomalens.errors import ConfigError
from anomalens.serve.app import ServeSettings, check_token, create_app
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


def bind_listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for ``host:port`` (each address the name resolves to, as uvicorn binds them), or a one-line
    ConfigError naming the address (in use, not this machine's, unknown), before anything is announced."""
    address = f"{host}:{port}"
    if not 0 <= port <= 65535:  # getaddrinfo would wrap it (99999 -> 34463) and bind another port
        raise ConfigError(f"cannot listen on {address}: ports run from 1 to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError, OverflowError) as exc:
        raise ConfigError(f"cannot listen on {address}: {getattr(exc, 'strerror', None) or exc}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # its own address only, as asyncio binds it beside the IPv4 one
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
    except (OSError, OverflowError) as exc:  # OverflowError: a port beyond 65535
        for sock in sockets:
            sock.close()
        raise ConfigError(f"cannot listen on {address}: {getattr(exc, 'strerror', None) or exc}") from None
    return sockets


def serve(model: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          settings: ServeSettings | None = None, device: str = "auto", threads: int | None = None,
          announce: Callable[[str], None] | None = None) -> None:
    """Load ``model`` (a bundle or a run folder) and serve it with uvicorn until stopped."""
    import uvicorn

    token = resolve_token(token)
    check_token(token)  # before the port is bound and the model loaded
    if not is_loopback(host) and token is None:
        raise ConfigError(f"refusing to listen on {host} without authentication: give a token (or set {TOKEN_ENV}), "
                          "or listen on 127.0.0.1")
    settings = dataclasses.replace(settings or ServeSettings(), token=token)
    sockets = bind_listening_sockets(host, port)  # a port in use is one line, before loading or announcing
    try:
        app = create_app(load_predictor(model, device=device, threads=threads), settings)
        if announce is not None:
            announce(f"serving {model} at http://{host}:{port}" + (" (bearer token required)" if token else ""))
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, server_header=False)
        uvicorn.Server(config).run(sockets=sockets)
    finally:
        for sock in sockets:
            sock.close()
