"""Finding earlier runs in a results folder (for the UI's model picker and for scripts).

A run is a folder with ``run.json`` and a ``model/`` subfolder, as written by the train workflows. Broken
or half-written folders (no run.json, unreadable JSON, no model) are skipped, never fatal.

>>> [r.run_dir.name for r in list_runs("results", kind="image")]   # doctest: +SKIP
['bottle_20261128_120000', 'bottle_20261127_093000']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from anomalens.errors import CheckpointError
from anomalens.models.schema import check_run_record, read_json

RUN_FILE = "run.json"
METRICS_FILE = "evaluation/metrics.json"


@dataclass
class RunInfo:
    run_dir: Path
    category: str
    model: str
    kind: str
    created: datetime
    metrics: dict | None


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)  # size-capped; a damaged file makes the run unlisted, not the list fail
    except CheckpointError:
        return None


def read_run(run_dir: str | Path) -> RunInfo | None:
    """The :class:`RunInfo` of one run folder, or None if it is not a complete run."""
    run_dir = Path(run_dir)
    run = _read_json(run_dir / RUN_FILE)
    if not isinstance(run, dict) or not (run_dir / "model" / "config.json").is_file():
        return None
    try:
        check_run_record(run, run_dir / RUN_FILE)
    except CheckpointError:
        return None
    try:
        created = datetime.fromisoformat(str(run["created"]))
        if created.tzinfo is not None:  # compare all runs in local time without a zone
            created = created.astimezone().replace(tzinfo=None)
        info = RunInfo(run_dir=run_dir, category=str(run["category"]), model=str(run["model"]),
                       kind=str(run.get("kind", "image")), created=created, metrics=None)
    except (KeyError, ValueError):
        return None
    metrics = _read_json(run_dir / METRICS_FILE)
    info.metrics = metrics if isinstance(metrics, dict) else None
    return info


def list_runs(results_dir: str | Path = "results", kind: str | None = None) -> list[RunInfo]:
    """Complete runs under ``results_dir`` (``kind``: ``"image"``, ``"video"`` or all), newest first."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    runs = []
    for folder in results_dir.iterdir():
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        info = read_run(folder)
        if info is not None and (kind is None or info.kind == kind):
            runs.append(info)
    runs.sort(key=lambda r: (r.created, r.run_dir.name), reverse=True)
    return runs
