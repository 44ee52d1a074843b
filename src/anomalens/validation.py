"""What a valid field of a saved file is: the checks shared by ``config.json`` and ``bundle.json``.

The checkpoint schema (:mod:`anomalens.models.schema`) and the bundle reader (:mod:`anomalens.inference.bundle`)
both refuse a field that fails with one line naming it; both build those lines from the pieces here, so a number,
a range and a file written by a newer anomalens are judged and worded the same way in both. Torch-free: the runtime
of exported bundles imports it.

>>> check_number("batch_size", 8.0, int, Range(1, 4096))
8
>>> check_number("scale", 0, float, Range(0.0, None, open_low=True))
Traceback (most recent call last):
anomalens.validation.Invalid: scale: must be in (0, inf), got 0
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

from anomalens import __version__
from anomalens.errors import CheckpointError

# what a saved anomalens_version may look like to be quoted in a message (the file is untrusted)
_RELEASE = re.compile(r"[0-9A-Za-z.+-]{1,32}")


@dataclass(frozen=True)
class Range:
    """Allowed values of one number (``low``/``high`` inclusive unless ``open_low``/``open_high``)."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def problem(self, value: float) -> str | None:
        """What is wrong with ``value`` (``must be 1..4096``), or None when it is allowed."""
        too_low = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        too_high = self.high is not None and (value >= self.high if self.open_high else value > self.high)
        if not (too_low or too_high):
            return None
        left = "(" if self.open_low or self.low is None else "["
        right = ")" if self.open_high or self.high is None else "]"
        if self.low is not None and self.high is not None and not (self.open_low or self.open_high):
            return f"must be {_num(self.low)}..{_num(self.high)}"
        low = "-inf" if self.low is None else _num(self.low)
        high = "inf" if self.high is None else _num(self.high)
        return f"must be in {left}{low}, {high}{right}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class Invalid(Exception):
    """A field that failed its check. Callers turn it into their own one-line error naming the file (or the
    setting) and the field: ``field calibration.scale: must be in (0, inf), got 0``."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def show(value: Any) -> str:
    """``value`` as a message quotes it: its repr, cut to 40 characters (a field may hold megabytes)."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's digit limit for str()
        return f"an {type(value).__name__} too long to show"
    return text if len(text) <= 40 else text[:37] + "..."


def check_number(field: str, value: Any, kind: type, rule: Range | None) -> int | float:
    """``value`` as a JSON number of ``kind`` (int or float) within ``rule``; raises :class:`Invalid` naming
    ``field``. Booleans are not numbers, an integral float counts as an int (``8.0`` -> ``8``), NaN and
    infinities are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid(field, f"must be {'an integer' if kind is int else 'a number'}, got {show(value)}")
    if kind is int and isinstance(value, float):
        if not (math.isfinite(value) and value.is_integer()):
            raise Invalid(field, f"must be an integer, got {show(value)}")
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(field, f"must be a finite number, got {value}")
    if rule is not None:
        problem = rule.problem(value)
        if problem:
            raise Invalid(field, f"{problem}, got {show(value)}")
    return value


PLAUSIBLE_NEWER_VERSIONS = 100  # how far above the newest known version a file may be and still be a newer release's


def check_version(meta: Mapping[str, Any], field: str, readable: Collection[int], what: str, written: str,
                  file: str | Path) -> int:
    """The format version a parsed file records in ``meta[field]``, one of ``readable`` (the versions this
    anomalens reads; ``what`` names them, ``model format`` or ``bundle``); a CheckpointError naming ``file``
    otherwise.

    A version above all of ``readable`` is a file from a newer anomalens, and says so (``written`` is what
    happened to it, ``this bundle was exported``): its new fields would otherwise be refused one by one as unknown,
    or ignored, and the user would not learn that upgrading reads it. Anything else (not an integer, below the
    first version) is a damaged or edited file."""
    version = meta.get(field)
    if isinstance(version, bool) or not isinstance(version, int):  # "1" is not version 1 (nor is true)
        raise CheckpointError(f"field {field}: must be an integer, got {show(version)}", file)
    newest = max(readable)
    # a version far beyond the newest is no anomalens's (versions grow by one per release): a damaged file
    if newest < version <= newest + PLAUSIBLE_NEWER_VERSIONS:
        saved = meta.get("anomalens_version")
        by = f" {saved}" if isinstance(saved, str) and _RELEASE.fullmatch(saved) else ""
        raise CheckpointError(f"{written} by a newer anomalens{by} ({what} version {version}; anomalens {__version__} "
                              f"reads {what} versions up to {newest}): upgrade anomalens to load it", file)
    if version not in readable:
        raise CheckpointError(f"field {field}: {show(version)} is not a {what} version (anomalens {__version__} reads "
                              f"{', '.join(map(str, sorted(readable)))})", file)
    return version
