"""The folder of a run, shared by the image and the video workflows: how it is saved, found and reported.

A run is written into a hidden temporary folder and renamed into place when complete, so an interrupted
training never leaves a half-written run behind; output folders are staged the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from anomalens import __version__
from safetensors import SafetensorError

from anomalens.errors import CheckpointError, OutputError
from anomalens import limits
from anomalens.limits import MAX_NAME_BYTES
from anomalens.models.base import Detector, resolve_model_dir
from anomalens.models.schema import check_run_record, read_json
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import (
    pid_alive,
    remove_dead_temporaries,
    temporary_prefix,
    write_json_atomic,
    write_text_atomic,
)

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
    return LoggingReporter(callback=None, cancel_event=reporter.cancel_event, show_tqdm=reporter.show_tqdm, inner=reporter)


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


# the hidden folder a run is written into: ".<name>.pid<PID>.<random>.tmp" (the PID tells a live writer from a dead one)
_TEMP_RUN = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)\.[^.]+\.tmp$")
RESCUE_ENV = "ANOMALENS_RESCUE_DIR"


def check_results_dir(results_dir: str | Path, min_free_bytes: int | None = None, reporter: Reporter = SILENT) -> Path:
    """Before hours of training: the results folder exists (or can be made), is writable and has room.

    Also finishes what killed runs left: see :func:`recover_temporary_runs`.
    """
    folder = check_writable(results_dir, "results folder")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    min_free_bytes = limits.MIN_FREE_BYTES_FOR_RUN if min_free_bytes is None else min_free_bytes
    if free < min_free_bytes:
        raise OutputError(f"only {free / 2**20:.0f} MB free in the results folder; a run needs at least "
                          f"{min_free_bytes / 2**20:.0f} MB: free some space or choose another --results-dir", folder)
    for message in recover_temporary_runs(folder):
        reporter.log(message)
    return folder


def check_writable(folder: str | Path, what: str = "output folder", create: bool = False) -> Path:
    """Prove a file can be written in ``folder`` (or, if it does not exist yet and ``create`` is False, in its
    nearest existing parent, so a failure leaves nothing behind); one-line OutputError if not."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the {what} is a file, not a folder", folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        probe_dir = folder
        while not probe_dir.exists() and probe_dir != probe_dir.parent:
            probe_dir = probe_dir.parent
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"the {what} is not writable ({exc.strerror or exc}); choose another one", folder) from None
    return folder


def _complete_run(folder: Path) -> bool:
    model = folder / MODEL_DIR
    return (folder / RUN_FILE).is_file() and (model / "config.json").is_file() and (model / "weights.safetensors").is_file()


def recover_temporary_runs(results_dir: str | Path) -> list[str]:
    """Temporary run folders whose writer was killed (kill -9, power loss): a complete run is renamed into
    place (it was killed during the final rename: the model is kept), anything else is removed. Returns what was done.
    """
    results_dir = Path(results_dir)
    done: list[str] = []
    try:
        entries = list(results_dir.iterdir())
    except OSError:
        return done
    for entry in entries:
        match = _TEMP_RUN.match(entry.name)
        if not match or not entry.is_dir() or pid_alive(int(match["pid"])):
            continue
        if _complete_run(entry):
            try:
                target = _rename_to_free_name(entry, results_dir, match["name"])
                done.append(f"recovered a run that was complete when its process ended: {target}")
                continue
            except OSError:
                pass
        shutil.rmtree(entry, ignore_errors=True)
        done.append(f"removed the unfinished temporary folder {entry.name}")
    return done


def _rename_to_free_name(tmp: Path, results_dir: Path, name: str) -> Path:
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
    raise OutputError("no free run folder name", results_dir / name)


def _short_name(name: str) -> str:
    """A run name that leaves room for the temporary prefix and suffix within one file-name's bytes."""
    budget = MAX_NAME_BYTES - 60
    data = name.encode("utf-8")
    return name if len(data) <= budget else data[:budget].decode("utf-8", errors="ignore").rstrip("._ ") or "run"


def save_run(results_dir: Path, name: str, detector: Detector, run: dict[str, Any], log_lines: list[str]) -> Path:
    """Fill a hidden temporary folder, then rename it to a free name (``name``, ``name_2``, ...).

    If the results folder cannot take it (disk full, made read-only during training), the run is written to a
    rescue folder instead and the error names it, so hours of training are not lost.
    """
    name = _short_name(name)
    try:
        return _write_run(results_dir, name, detector, run, log_lines)
    except (OSError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        for rescue in _rescue_dirs():
            try:
                saved = _write_run(rescue, name, detector, run, log_lines)
            except (OSError, SafetensorError):
                continue
            raise OutputError(
                f"could not save the run here ({reason}); the trained model was saved to {saved} instead: move it "
                f"into the results folder once there is room (mv {saved} {results_dir}/)", results_dir) from None
        raise OutputError(f"could not save the run ({reason}), nor in a rescue folder "
                          f"({', '.join(str(p) for p in _rescue_dirs())}); free some space and train again",
                          results_dir) from None


def _rescue_dirs() -> list[Path]:
    """Where a run goes when its results folder cannot take it: $ANOMALENS_RESCUE_DIR, the home folder, the temp folder."""
    folders = [Path(os.environ[RESCUE_ENV])] if os.environ.get(RESCUE_ENV) else []
    folders.append(Path.home() / "anomalens-rescued-runs")
    folders.append(Path(tempfile.gettempdir()) / "anomalens-rescued-runs")
    return folders


def _write_run(results_dir: Path, name: str, detector: Detector, run: dict[str, Any], log_lines: list[str]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix(name), suffix=".tmp", dir=results_dir))
    try:
        detector.save(tmp / MODEL_DIR)
        write_json_atomic(tmp / RUN_FILE, run)
        write_json_atomic(tmp / "history.json", detector.history_)
        write_text_atomic(tmp / "train.log", "\n".join(log_lines) + "\n")
        return _rename_to_free_name(tmp, results_dir, name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def open_run(checkpoint: str | Path) -> tuple[Path, Path, dict[str, Any]]:
    """(model folder, run folder, run.json or {}) for a run folder or a bare model folder."""
    model_dir = resolve_model_dir(checkpoint)
    run_dir = model_dir.parent if model_dir.name == MODEL_DIR and (model_dir.parent / RUN_FILE).is_file() else model_dir
    run: dict[str, Any] = {}
    if (run_dir / RUN_FILE).is_file():
        run = check_run_record(read_json(run_dir / RUN_FILE), run_dir / RUN_FILE)
    return model_dir, run_dir, run


@contextlib.contextmanager
def staged_dir(output_dir: str | Path | None) -> Iterator[Path | None]:
    """Write into a hidden folder inside ``output_dir``, then move the files in only if all went well.

    Unlike :func:`atomic_dir` this never removes what else the user keeps in that folder.
    """
    if output_dir is None:
        yield None
        return
    output_dir = check_writable(output_dir, create=True)
    remove_dead_temporaries(output_dir, "partial")
    tmp = Path(tempfile.mkdtemp(prefix=temporary_prefix("partial"), suffix=".tmp", dir=output_dir))
    try:
        yield tmp
        for item in sorted(tmp.iterdir()):
            os.replace(item, output_dir / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
