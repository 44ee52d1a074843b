"""Where results may be written: checked before the work, rescued when saving fails, cleaned after a kill.

Hours of training must not end in a traceback because the results folder is read-only or full, so
:func:`check_writable` and :func:`check_free_space` run before the work starts; if the disk still fills up
while saving, the run goes to a rescue folder (:func:`rescue_dirs`) and the error says where. A writer that
was killed (kill -9, power loss) leaves a hidden ``.<name>.pid<PID>.*.tmp`` folder: :func:`recover_temporary_runs`
renames a complete one into place and removes the rest.

>>> check_writable("results", "results folder")        # doctest: +SKIP
>>> recover_temporary_runs(Path("results"), is_complete=lambda folder: False)   # doctest: +SKIP
[]
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from anomalens.errors import OutputError
from anomalens.runtime import pid_alive

# the hidden folder a run is written into: ".<name>.pid<PID>.<random>.tmp" (see runtime.temporary_prefix)
_TEMPORARY_RUN = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)\.[^.]+\.tmp$")
RESCUE_ENV = "ANOMALENS_RESCUE_DIR"


def _existing_ancestor(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_writable(folder: str | Path, what: str = "output folder", create: bool = False) -> Path:
    """Prove a file can be written in ``folder`` (or, if it does not exist yet and ``create`` is False, in its
    nearest existing parent, so that a refusal leaves nothing behind); one-line OutputError if not."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"the {what} is a file, not a folder", folder)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=_existing_ancestor(folder))
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"the {what} is not writable ({exc.strerror or exc}); choose another one", folder) from None
    return folder


def check_writable_file(path: str | Path, what: str = "output file") -> Path:
    """Prove ``path`` can be written as a file, before the work that fills it (a folder there, or an unwritable
    parent, once surfaced only after a whole benchmark); one-line OutputError if not."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"the {what} is a folder; give a file name (e.g. {path / 'benchmark.json'})", path)
    check_writable(path.parent, f"folder of the {what}")
    return path


def check_free_space(folder: str | Path, min_free_bytes: int, what: str = "results folder") -> None:
    """Refuse to start when the disk of ``folder`` has less than ``min_free_bytes`` free."""
    free = shutil.disk_usage(_existing_ancestor(Path(folder))).free
    if free < min_free_bytes:
        raise OutputError(f"only {free / 2**20:.0f} MB free in the {what}; a run needs at least "
                          f"{min_free_bytes / 2**20:.0f} MB: free some space or choose another --results-dir", folder)


def rename_to_free_name(tmp: Path, parent: Path, name: str) -> Path:
    """Rename ``tmp`` to ``parent/name`` or the first free ``name_2``, ``name_3``, ..."""
    for attempt in range(1, 1000):
        target = parent / (name if attempt == 1 else f"{name}_{attempt}")
        if target.exists():
            continue
        try:
            os.rename(tmp, target)
            return target
        except OSError:
            if not target.exists():
                raise  # a real failure, not a name taken meanwhile by another run
    raise OutputError("no free run folder name", parent / name)


def recover_temporary_runs(results_dir: Path, is_complete: Callable[[Path], bool]) -> list[str]:
    """Temporary run folders whose writer was killed: a complete run (killed during the final rename) is renamed
    into place, so the model is kept; anything else is removed. Returns one line per folder handled."""
    done: list[str] = []
    try:
        entries = list(results_dir.iterdir())
    except OSError:
        return done
    for entry in entries:
        match = _TEMPORARY_RUN.match(entry.name)
        if not match or not entry.is_dir() or entry.is_symlink() or pid_alive(int(match["pid"])):
            continue
        if is_complete(entry):
            try:
                target = rename_to_free_name(entry, results_dir, match["name"])
                done.append(f"recovered a run that was complete when its process ended: {target}")
                continue
            except OSError:
                pass
        shutil.rmtree(entry, ignore_errors=True)
        done.append(f"removed the unfinished temporary folder {entry.name}")
    return done


def rescue_dirs() -> list[Path]:
    """Where a run goes when its results folder cannot take it: $ANOMALENS_RESCUE_DIR, the home folder, the temp folder."""
    folders = [Path(os.environ[RESCUE_ENV])] if os.environ.get(RESCUE_ENV) else []
    folders.append(Path.home() / "anomalens-rescued-runs")
    folders.append(Path(tempfile.gettempdir()) / "anomalens-rescued-runs")
    return folders


def short_name(name: str, max_bytes: int) -> str:
    """``name`` cut to ``max_bytes`` of UTF-8 (room left for temporary prefixes within one file name)."""
    data = name.encode("utf-8")
    return name if len(data) <= max_bytes else data[:max_bytes].decode("utf-8", errors="ignore").rstrip("._ ") or "run"
