"""The run folder, in one place: how a run is saved, opened, found and listed.

A run (written by :mod:`anomalens.workflows.train`)::

    results/<name>/
        model/            config.json + weights.safetensors (the detector's own save)
        run.json          what was trained on what: kind, data, settings, seed, validation split
        history.json      per-epoch records of models that train in epochs
        train.log         the messages shown during training
        evaluation/       written by evaluate (metrics.json, report.md, figures)
        predictions/      written by predict_images; analysis/<video>_<time>/ by analyze_video (one folder
                          per video with --engine ray: see claim_new_dir)

A run is written into a hidden temporary folder and renamed into place when complete, so an interrupted
training never leaves a half-written run behind; output folders are staged the same way. Broken or
half-written folders are skipped by :func:`list_runs`, never fatal.

>>> [r.run_dir.name for r in list_runs("results", kind="image")]   # doctest: +SKIP
['bottle_20261128_120000', 'bottle_20261127_093000']
>>> detector = load_detector("results/bottle_20261128_120000")     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, Sequence

from safetensors import SafetensorError

from anomalens import limits
from anomalens.errors import CheckpointError, ConfigError, OutputError
# a run folder or its model folder: resolved, read and loaded in one place, the models' own (importable from here too)
from anomalens.models.base import (  # noqa: F401
    CONFIG_FILE,
    MODEL_DIR,
    WEIGHTS_FILE,
    BaseDetector,
    load_detector,
    read_model_config,
    resolve_model_dir,
)
from anomalens.models.schema import check_run_record, read_json
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import make_temp_dir, remove_dead_temporaries, temporary_prefix, write_json_atomic, write_text_atomic
from anomalens.workflows.storage import (
    check_free_space,
    check_writable,
    recover_temporary_runs,
    rename_to_free_name,
    rescue_dirs,
    short_name,
)

RUN_FILE = "run.json"
HISTORY_FILE = "history.json"
LOG_FILE = "train.log"
EVALUATION_DIR = "evaluation"
METRICS_FILE = "metrics.json"
PREDICTIONS_DIR = "predictions"
ANALYSIS_DIR = "analysis"


def load_fitted_detector(checkpoint: str | Path | BaseDetector, kind: str, device: str = "auto") -> BaseDetector:
    """A fitted detector of ``kind`` from a run/model folder (or passed through); refuses the other kind."""
    if isinstance(checkpoint, BaseDetector):
        detector = checkpoint
        if detector.kind != kind:
            article = "an" if detector.kind == "image" else "a"
            raise CheckpointError(f"this is {article} {detector.kind} model ({detector.name}); a {kind} model is needed here")
    else:
        model_dir, _, _ = open_run(checkpoint)  # run.json too, checked here as evaluate checks it
        detector = load_detector(model_dir, device=device, kind=kind)
    if detector.calibration_ is None:
        unit = "images" if kind == "image" else "clips"
        raise CheckpointError(f"this model has no threshold (it was never fitted with validation {unit})")
    return detector


def safe_name(name: str) -> str:
    """``name`` usable as a file or folder name (a clip or video name in an output path)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "clip"


def check_run_name(name: str) -> str:
    """``name`` if it is a plain folder name for a run, else a one-line ConfigError: a separator or ``..`` would
    put the run outside the results folder, a leading dot hides it from :func:`list_runs`. Checked before
    training (and again when saving), so that no training is lost to a name that cannot be saved."""
    separators = {"/", "\\"} | ({os.sep, os.altsep} - {None})
    if (not name.strip() or name.startswith(".") or any(sep in name for sep in separators)
            or any(ord(ch) < 32 for ch in name)):
        raise ConfigError(f"run_name {name!r} is not a plain folder name (no / or \\, no leading dot, no control "
                          "characters)")
    return name


def read_run_file(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a run folder ({} if there is none), every known field checked; a bad one is an error."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return {}
    return check_run_record(read_json(path), path)


def check_results_dir(results_dir: str | Path, min_free_bytes: int | None = None, reporter: Reporter = SILENT) -> Path:
    """Before hours of training: the results folder is writable and has room; what killed runs left is finished."""
    folder = check_writable(results_dir, "results folder")
    check_free_space(folder, limits.MIN_FREE_BYTES_FOR_RUN if min_free_bytes is None else min_free_bytes)
    for message in recover_temporary_runs(folder, _complete_run):
        reporter.log(message)
    return folder


def _complete_run(folder: Path) -> bool:
    model = folder / MODEL_DIR
    return (folder / RUN_FILE).is_file() and (model / CONFIG_FILE).is_file() and (model / WEIGHTS_FILE).is_file()


def save_run(results_dir: Path, name: str, detector: BaseDetector, run: dict[str, Any], log_lines: list[str]) -> Path:
    """Fill a hidden temporary folder, then rename it to a free name (``name``, ``name_2``, ...).

    If the results folder cannot take it (disk full, made read-only during training), the run is written to a
    rescue folder instead and the error names it, so that hours of training are not lost.
    """
    name = short_name(check_run_name(name), limits.MAX_NAME_BYTES - 60)
    try:
        return _write_run(results_dir, name, detector, run, log_lines)
    except (OSError, SafetensorError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        for rescue in rescue_dirs():
            try:
                saved = _write_run(rescue, name, detector, run, log_lines)
            except (OSError, SafetensorError):
                continue
            raise OutputError(
                f"could not save the run here ({reason}); the trained model was saved to {saved} instead: move it "
                f"into the results folder once there is room (mv {saved} {results_dir}/)", results_dir) from None
        raise OutputError(f"could not save the run ({reason}), nor in a rescue folder "
                          f"({', '.join(str(p) for p in rescue_dirs())}); free some space and train again",
                          results_dir) from None


def _write_run(results_dir: Path, name: str, detector: BaseDetector, run: dict[str, Any], log_lines: list[str]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(results_dir, prefix=temporary_prefix(name))
    try:
        detector.save(tmp / MODEL_DIR)
        write_json_atomic(tmp / RUN_FILE, run)
        write_json_atomic(tmp / HISTORY_FILE, detector.history_)
        write_text_atomic(tmp / LOG_FILE, "\n".join(log_lines) + "\n")
        return rename_to_free_name(tmp, results_dir, name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def open_run(checkpoint: str | Path) -> tuple[Path, Path, dict[str, Any]]:
    """(model folder, run folder, run.json or {}) for a run folder or a bare model folder."""
    model_dir = resolve_model_dir(checkpoint)
    run_dir = model_dir.parent if model_dir.name == MODEL_DIR and (model_dir.parent / RUN_FILE).is_file() else model_dir
    return model_dir, run_dir, read_run_file(run_dir)


def missing_folders(folder: str | Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first: what creating it will create."""
    folder = Path(folder)
    return [f for f in (folder, *folder.parents) if not f.exists()]


@contextlib.contextmanager
def staged_dir(output_dir: str | Path | None, created: Sequence[Path] = ()) -> Iterator[Path | None]:
    """Write into a hidden folder inside ``output_dir``, then move the files in only if all went well.

    Unlike :func:`atomic_dir` this never removes what else the user keeps in that folder; if the work fails,
    the folders this call created for it go again, when empty: those missing now, and ``created`` (deepest first:
    a folder claimed for the call by :func:`claim_new_dir` and the parents that claiming it made).
    """
    if output_dir is None:
        yield None
        return
    output_dir = Path(output_dir)
    missing = [*created, *missing_folders(output_dir)]
    done = False
    try:
        output_dir = check_writable(output_dir, create=True)
        remove_dead_temporaries(output_dir, "partial")
        tmp = make_temp_dir(output_dir, prefix=temporary_prefix("partial"))
        try:
            yield tmp
            _move_into(tmp, output_dir)
            done = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        for folder in missing if not done else ():
            try:
                folder.rmdir()  # only an empty folder: never what another writer put there meanwhile
            except OSError:
                break


def claim_new_dir(parent: str | Path, stem: str = "", now: datetime | None = None) -> Path:
    """Create and return a new, empty ``parent/<stem>_<YYYYmmdd_HHMMSS>`` (``parent/<YYYYmmdd_HHMMSS>`` without a
    stem), or the first free ``..._2``, ``..._3`` when that name is taken; ``now``: the time to stamp (a fixed
    clock in tests).

    The name is taken by an exclusive mkdir, not chosen by an exists check and created later: two callers in the
    same second (several Ray tasks analysing videos of one name, two processes) could both pass such a check and
    write into one folder, one result overwriting the other.
    """
    parent = Path(parent)
    stamp = f"{now or datetime.now():%Y%m%d_%H%M%S}"
    name = f"{stem}_{stamp}" if stem else stamp
    for attempt in range(1, 10_000):
        target = parent / (name if attempt == 1 else f"{name}_{attempt}")
        try:
            if attempt == 1:
                check_writable(parent, create=True)  # a file there, or no permission: one line, not a traceback
            target.mkdir()
        except FileExistsError:
            continue  # taken, by an earlier call or by another caller this very moment
        except OSError as exc:
            raise OutputError(f"cannot create an output folder here ({exc.strerror or exc}); choose another one",
                              parent) from None
        return target
    raise OutputError("no free folder name", parent / name)


def claim_fresh_dir(parent: str | Path, stem: str = "", now: datetime | None = None) -> list[Path]:
    """:func:`claim_new_dir`, and every folder that claiming it created, deepest first: the claimed folder, then
    the parents that did not exist (what :func:`staged_dir`'s ``created`` removes again if the work fails)."""
    made = missing_folders(parent)
    return [claim_new_dir(parent, stem, now), *made]


def _move_into(source: Path, target: Path) -> None:
    """Move the files of ``source`` into ``target``, merging sub-folders that already exist there."""
    for item in sorted(source.iterdir()):
        destination = target / item.name
        if item.is_dir() and destination.is_dir():
            _move_into(item, destination)
        else:
            os.replace(item, destination)


# ---- finding runs -------------------------------------------------------------------------------
@dataclass
class RunInfo:
    run_dir: Path
    category: str
    model: str
    kind: str
    created: datetime
    metrics: dict | None


def read_run(run_dir: str | Path) -> RunInfo | None:
    """The :class:`RunInfo` of one run folder, or None if it is not a complete run."""
    run_dir = Path(run_dir)
    run = _read_json(run_dir / RUN_FILE)
    if not isinstance(run, dict) or not (run_dir / MODEL_DIR / CONFIG_FILE).is_file():
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
    metrics = _read_json(run_dir / EVALUATION_DIR / METRICS_FILE)
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


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)  # size-capped; a damaged file makes the run unlisted, not the list fail
    except CheckpointError:
        return None
