"""The folder of a run, shared by the image and the video workflows: how it is saved, found and reported.

A run is written into a hidden temporary folder and renamed into place when complete, so an interrupted
training never leaves a half-written run behind; output folders are staged the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from anomalens import __version__
from anomalens.errors import CheckpointError, ConfigError, DataError
from anomalens.models.base import Detector, resolve_model_dir
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import make_temp_dir, write_json_atomic, write_text_atomic

RUN_FILE = "run.json"
MODEL_DIR = "model"
EVALUATION_DIR = "evaluation"
PREDICTIONS_DIR = "predictions"


@dataclass
class TrainResult:
    run_dir: Path
    detector: Detector
    interrupted: bool


@dataclass
class LoggingReporter(Reporter):
    """Forwards everything to the caller's reporter and also keeps each logged line for ``train.log``."""

    inner: Reporter = field(default_factory=lambda: SILENT)
    lines: list[str] = field(default_factory=list)

    def update(self, stage: str, done: int, total: int | None, info: str = "") -> None:
        # our own cancel_event (the caller's, unless a model dropped it to finish calibrating after a stop)
        self.check_cancelled()
        if self.inner.callback is not None:
            self.inner.callback(stage, done, total, info)

    def log(self, message: str) -> None:
        self.lines.append(f"{datetime.now().isoformat(timespec='seconds')} {message}")
        self.inner.log(message)


def logging_reporter(reporter: Reporter) -> LoggingReporter:
    return LoggingReporter(callback=None, cancel_event=reporter.cancel_event, show_tqdm=reporter.show_tqdm,
                           interactive=reporter.interactive, inner=reporter)


@dataclass
class EvaluationResult:
    output_dir: Path
    metrics: dict
    report_path: Path
    figures: dict[str, Path]


def log_training_summary(log: Reporter, detector: Detector, fit_seconds: float, unit: str) -> None:
    """The closing line of ``train.log``: how training ended and how the threshold was chosen."""
    cal = detector.calibration_
    assert cal is not None
    ending = "stopped early; kept the best model so far" if detector.interrupted_ else "trained"
    log.log(
        f"{ending} in {fit_seconds:.1f} s; threshold {cal.threshold:.6g} from {cal.validation_count} validation {unit} "
        f"(mean {cal.validation_mean:.4g}, max {cal.validation_max:.4g}, target false-positive rate {cal.target_fpr:g})"
    )


def run_record(kind: str, category: str, data_dir: str | Path, model: str, started: datetime, seed: int,
               detector: Detector, validation_fraction: float, settings: dict[str, Any]) -> dict[str, Any]:
    """The fields every ``run.json`` starts with; each workflow adds what its data needs."""
    return {
        "anomalens_version": __version__,
        "kind": kind,
        "category": category,
        "data_dir": str(Path(data_dir).resolve()),
        "model": model,
        "created": started.isoformat(timespec="seconds"),
        "seed": seed,
        "device": str(detector.device),
        "image_size": list(detector.config.image_size),
        "validation_fraction": validation_fraction,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "config": detector.config.to_dict(),
    }


def evaluation_context(detector: Detector, category: str, data_dir: str | Path, model_dir: Path) -> dict[str, Any]:
    """The fields every ``metrics.json`` records about what was evaluated where."""
    return {
        "model": detector.name,
        "category": category,
        "data_dir": str(Path(data_dir).resolve()),
        "checkpoint": str(model_dir.resolve()),
        "image_size": list(detector.config.image_size),
        "device": str(detector.device),
    }


def save_run(results_dir: Path, name: str, detector: Detector, run: dict[str, Any], log_lines: list[str]) -> Path:
    """Fill a hidden temporary folder, then rename it to a free name (``name``, ``name_2``, ...)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(results_dir, prefix=f".{name}.")
    try:
        detector.save(tmp / MODEL_DIR)
        write_json_atomic(tmp / RUN_FILE, run)
        write_json_atomic(tmp / "history.json", detector.history_)
        write_text_atomic(tmp / "train.log", "\n".join(log_lines) + "\n")
        for attempt in range(1, 1000):
            target = results_dir / (name if attempt == 1 else f"{name}_{attempt}")
            if target.exists():
                continue
            try:
                os.rename(tmp, target)
                return target
            except OSError:
                if not target.exists():
                    raise  # a real failure, not a name taken meanwhile by another run
        raise ConfigError("no free run folder name", results_dir / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def open_run(checkpoint: str | Path) -> tuple[Path, Path, dict[str, Any]]:
    """(model folder, run folder, run.json or {}) for a run folder or a bare model folder."""
    model_dir = resolve_model_dir(checkpoint)
    run_dir = model_dir.parent if model_dir.name == MODEL_DIR and (model_dir.parent / RUN_FILE).is_file() else model_dir
    run: dict[str, Any] = {}
    if (run_dir / RUN_FILE).is_file():
        try:
            run = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"unreadable {RUN_FILE} ({exc})", run_dir / RUN_FILE) from None
    return model_dir, run_dir, run


@contextlib.contextmanager
def staged_dir(output_dir: str | Path | None) -> Iterator[Path | None]:
    """Write into a hidden folder inside ``output_dir``, then move the files in only if all went well.

    Unlike :func:`atomic_dir` this never removes what else the user keeps in that folder.
    """
    if output_dir is None:
        yield None
        return
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError("output folder is a file", output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(output_dir, prefix=".partial-", suffix="")
    try:
        yield tmp
        for item in sorted(tmp.iterdir()):
            os.replace(item, output_dir / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
