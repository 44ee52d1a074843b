"""Connecting to a Ray cluster: the one place that imports Ray, lazily, and ships this package to the workers.

``address``: ``"HOST:PORT"`` of an existing cluster's head (``ray start --head --port PORT``), ``"auto"`` for
the cluster this machine belongs to, or None for a private single-machine Ray started in this process.
Workers must see the same files under the same paths as the driver (a shared filesystem); the anomalens
code itself travels with the job (Ray's ``py_modules``), so the workers run exactly the driver's version.

>>> ray = connect("127.0.0.1:6379")          # doctest: +SKIP
>>> cluster_cpus()                            # doctest: +SKIP
2.0
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from anomalens.errors import ConfigError

# environment of every worker: idle OpenMP threads sleep instead of spinning (NOTES: spinning pools hurt badly
# when anything else runs on the same cores)
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}


def import_ray() -> ModuleType:
    """``ray``, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--engine ray needs Ray: pip install 'anomalens[ray]'") from None
    return ray


def connect(address: str | None = None) -> ModuleType:
    """Join the cluster at ``address`` (once per process) and return the ``ray`` module."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    import anomalens

    package = str(Path(anomalens.__file__).parent)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
    options: dict[str, Any] = {}
    if address is None:
        options["include_dashboard"] = False  # a private Ray needs no web dashboard
    try:
        ray.init(
            address=address,
            runtime_env={"py_modules": [package], "env_vars": dict(WORKER_ENV), "excludes": ["__pycache__", "*.pyc"]},
            logging_level="WARNING",
            **options,
        )
    except ConnectionError as exc:
        raise ConfigError(f"cannot reach a Ray cluster at {address!r} ({exc})") from None
    _quiet_data_progress(ray)
    return ray


def _quiet_data_progress(ray: ModuleType) -> None:
    """Our own progress bar reports blocks; Ray Data's per-operator bars would draw over it."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False


def cluster_device(device: str) -> str:
    """``cpu`` or ``cuda`` for the workers: ``auto`` means cuda when the cluster has GPUs (the driver may have none)."""
    import ray

    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device {device} is not available on a Ray cluster; use auto, cpu or cuda")
    if device == "auto":
        return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    return device


def cluster_cpus() -> float:
    """CPUs of the nodes alive now."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0.0))


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]
