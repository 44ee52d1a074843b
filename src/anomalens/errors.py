"""User-facing errors: one line that names the file and the problem.

The CLI turns an :class:`AnomalensError` into ``anomalens: <message>`` and exit code 2;
the UI shows the same line in the page. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
from pathlib import Path


class AnomalensError(Exception):
    """A problem with the user's input (data, checkpoint, flags), not with anomalens."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path is not None else self.message


class DataError(AnomalensError):
    """A dataset, image, mask or video that cannot be used."""


class CheckpointError(AnomalensError):
    """A model folder that is missing, of another type, or from an incompatible version."""


class ConfigError(AnomalensError):
    """A setting the model or data cannot take (for example an image size)."""


class OutputError(AnomalensError):
    """A result that cannot be written where it was asked for (read-only folder, disk full, name too long)."""


# errors of the machine's storage, not of anomalens: reported in one line like the user's own mistakes
STORAGE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENAMETOOLONG, errno.EFBIG}


def storage_error(exc: BaseException) -> OutputError | None:
    """An :class:`OSError` of the storage (read-only, full, name too long) as an :class:`OutputError`, else None."""
    if not isinstance(exc, OSError) or exc.errno not in STORAGE_ERRNOS:
        return None
    path = exc.filename if isinstance(exc.filename, (str, Path)) else None
    return OutputError(str(exc.strerror or exc), path)


class Cancelled(Exception):
    """Raised inside long work when the user asked to stop (Ctrl-C or the UI's Cancel)."""
