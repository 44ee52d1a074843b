"""What keeps the web UI safe to leave running: path confinement, auth, upload limits, safe zips, clean errors.

Every path a user types goes through :func:`confine_path` (symlinks resolved, then checked against the allowed
data roots); every uploaded zip through :func:`safe_extract_zip` (no absolute paths, no ``..``, no links, limits
on member count and unpacked size); every exception through :func:`user_message` (an
:class:`~anomalens.errors.AnomalensError` shows its one line, anything else a short generic message while the
traceback goes to the server log).

>>> confine_path("../../etc", ["/srv/data"])   # doctest: +SKIP
Traceback (most recent call last):
DataError: ../../etc: outside the allowed data folders (/srv/data)
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from anomalens.errors import AnomalensError, Cancelled, ConfigError, DataError, storage_error
from anomalens.limits import (
    MAX_NAME_BYTES,
    MAX_ZIP_MEMBERS,
    MAX_ZIP_RATIO,
    MAX_ZIP_UNPACKED_BYTES,
    MIN_RATIO_CHECK_BYTES,
)

log = logging.getLogger("anomalens.ui")

AUTH_ENV = "ANOMALENS_UI_AUTH"
DEFAULT_MAX_UPLOAD_MB = 500
# the most --max-upload-mb takes: a zip unpacks to at most 4 GiB (limits.MAX_ZIP_UNPACKED_BYTES), and a video of
# 20 GB already takes a browser upload of many minutes
MAX_UPLOAD_MB = 20_000
GENERIC_ERROR = "Something went wrong on the server (details are in its log). Please check the input and try again."


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """``"user:password"`` -> ``("user", "password")``; empty -> None (no login)."""
    if text is None or not text.strip():
        return None
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth must look like user:password (both parts non-empty)")
    return user, password


def resolve_auth(flag: str | None, environ: dict[str, str] | None = None) -> tuple[str, str] | None:
    """The login from ``--auth``, else from the ``ANOMALENS_UI_AUTH`` environment variable, else none."""
    environ = os.environ if environ is None else environ
    return parse_auth(flag if flag else environ.get(AUTH_ENV))


def require_login_beyond_loopback(host: str, auth: tuple[str, str] | None) -> None:
    """Refuse to listen beyond this machine without a login (as ``anomalens serve`` refuses without a token)."""
    from anomalens.serve import is_loopback  # the one loopback test of both servers

    if auth is None and not is_loopback(host):
        raise ConfigError(f"refusing to listen on {host} without a login: set {AUTH_ENV}=user:password, "
                          "or listen on 127.0.0.1")


def resolve_roots(roots: Sequence[str | Path]) -> list[Path]:
    """Allowed data roots as absolute paths with symlinks resolved (missing ones are kept: they may appear later)."""
    return [Path(root).expanduser().resolve() for root in roots]


def confine_path(path: str | Path, roots: Sequence[str | Path]) -> Path:
    """Resolve ``path`` (relative paths are taken under the first root) and refuse it outside every root.

    Symlinks are resolved before the check, so a link inside a root that points elsewhere is refused too.
    """
    text = str(path).strip()
    if not text:
        raise DataError("no dataset folder given")
    if "\x00" in text:
        raise DataError("the path contains a NUL character", text.replace("\x00", "?"))
    allowed = resolve_roots(roots)
    if not allowed:
        raise DataError("no data folders are allowed on this server (start it with --data-root DIR)", text)
    candidate = Path(text).expanduser()
    if any(len(part.encode("utf-8", errors="replace")) > MAX_NAME_BYTES for part in candidate.parts):
        raise DataError(f"a folder name in this path is longer than {MAX_NAME_BYTES} bytes", text[:80] + "...")
    if not candidate.is_absolute():
        candidate = allowed[0] / candidate
    resolved = candidate.resolve()
    for root in allowed:
        if resolved == root or resolved.is_relative_to(root):
            return resolved
    raise DataError(f"outside the allowed data folders ({', '.join(str(r) for r in allowed)})", text)


@dataclass(frozen=True)
class ZipLimits:
    """What an uploaded zip may hold (defaults from :mod:`anomalens.limits`)."""

    max_members: int = MAX_ZIP_MEMBERS
    max_unpacked_bytes: int = MAX_ZIP_UNPACKED_BYTES
    max_ratio: float = MAX_ZIP_RATIO
    min_ratio_check_bytes: int = MIN_RATIO_CHECK_BYTES
    # a central directory entry is 46 bytes plus its name, extra field and comment: 1 KiB is generous for
    # dataset paths, and bounds what zipfile reads (and turns into ZipInfo objects) before we count members
    max_directory_bytes_per_member: int = 1024


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


def _check_central_directory(archive: Path, limits: ZipLimits) -> None:
    """Refuse a zip whose end record declares too many entries or too large a central directory, before
    :class:`zipfile.ZipFile` reads that directory whole into memory. Finds the end record as zipfile does
    (at the very end, else the last one within a 64 KiB comment); a file without one is left to zipfile."""
    try:
        with open(archive, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            tail_start = max(0, size - (_EOCD.size + 0xFFFF + _ZIP64_LOCATOR.size + _ZIP64_EOCD.size))
            handle.seek(tail_start)
            tail = handle.read()
    except OSError:
        return  # zipfile says why in its own words
    at = len(tail) - _EOCD.size
    if at < 0:
        return
    if tail[at:at + 4] != b"PK\x05\x06":
        at = tail.rfind(b"PK\x05\x06", 0, at)
        if at < 0:
            return
    _, _, _, _, entries, directory_bytes, _, _ = _EOCD.unpack_from(tail, at)
    locator = at - _ZIP64_LOCATOR.size
    record = locator - _ZIP64_EOCD.size
    if record >= 0 and tail[locator:locator + 4] == b"PK\x06\x07" and tail[record:record + 4] == b"PK\x06\x06":
        fields = _ZIP64_EOCD.unpack_from(tail, record)  # zip64: the real counts are here, not 0xFFFF
        entries, directory_bytes = fields[7], fields[8]
    if entries > limits.max_members:
        raise DataError(f"the zip declares {entries} entries; at most {limits.max_members} are accepted", archive.name)
    max_bytes = limits.max_members * limits.max_directory_bytes_per_member
    if directory_bytes > max_bytes:
        raise DataError(f"the zip's table of contents is {directory_bytes / 1e6:.0f} MB; at most "
                        f"{max_bytes / 1e6:.0f} MB is accepted (too many or too long entries)", archive.name)


def _check_member(info: zipfile.ZipInfo, archive: Path, limits: ZipLimits) -> PurePosixPath | None:
    name = info.filename.replace("\\", "/")
    if not name or info.is_dir():  # an empty name first: is_dir() indexes its last character
        return None
    member = PurePosixPath(name)
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in member.parts or "\x00" in name:
        raise DataError(f"unsafe path {info.filename!r} in the zip (absolute or with '..'); nothing was extracted", archive)
    if any(len(part.encode("utf-8", errors="replace")) > MAX_NAME_BYTES for part in member.parts):
        raise DataError(f"a name in the zip is longer than {MAX_NAME_BYTES} bytes ({info.filename[:40]!r}...)", archive)
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DataError(f"the zip contains a symbolic link ({info.filename!r}); nothing was extracted", archive)
    # image files are already compressed: a member that shrank a lot is padding or a bomb, whatever its size
    if info.file_size >= limits.min_ratio_check_bytes and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        raise DataError(f"{info.filename!r} unpacks to {info.file_size / max(info.compress_size, 1):.0f}x its packed "
                        f"size (at most {limits.max_ratio:g}x is accepted: zip bomb?)", archive)
    if not member.parts:
        return None  # named "." or "./.": nothing to write (and no folder to put it in)
    if member.parts[0] == "__MACOSX" or member.name.startswith("._") or member.name == ".DS_Store":
        return None  # Finder droppings, not data
    return member


def _copy_within(source: Any, sink: Any, declared: int, budget: int, name: str, archive: str) -> int:
    """Copy one member, stopping as soon as it passes its declared size or the zip's remaining budget."""
    written = 0
    while True:
        chunk = source.read(1 << 20)
        if not chunk:
            return written
        written += len(chunk)
        if written > declared:
            raise DataError(f"{name!r} unpacks to more than the {declared} bytes its header declares (forged zip); "
                            "extraction stopped", archive)
        if written > budget:
            raise DataError("the zip unpacks to more than the accepted total; extraction stopped", archive)
        sink.write(chunk)


def safe_extract_zip(archive: str | Path, destination: str | Path, limits: ZipLimits = ZipLimits()) -> Path:
    """Check every member of ``archive`` first, then extract it under ``destination``; return the dataset root.

    The headers are checked before anything is written (member count, each path, each member's packing
    ratio, the declared total against ``max_unpacked_bytes``), and the budget is enforced again while
    extracting, so a zip whose headers lie stops at the budget. The root is the single top-level folder when
    the zip has one (``bottle/train/good/...``), else ``destination`` itself. A bad zip raises
    :class:`DataError` and leaves nothing behind under ``destination``.
    """
    archive = Path(archive)
    destination = Path(destination)
    _check_central_directory(archive, limits)
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise DataError(f"not a readable zip file ({exc})", archive.name) from None
    with bundle:
        infos = bundle.infolist()
        if len(infos) > limits.max_members:
            raise DataError(f"the zip has {len(infos)} entries; at most {limits.max_members} are accepted", archive.name)
        members = [(info, _check_member(info, Path(archive.name), limits)) for info in infos]
        members = [(info, m) for info, m in members if m is not None]
        total = sum(info.file_size for info, _ in members)
        if total > limits.max_unpacked_bytes:
            raise DataError(f"the zip unpacks to {total / 1e9:.1f} GB; at most {limits.max_unpacked_bytes / 1e9:.1f} GB "
                            "is accepted", archive.name)
        if not members:
            raise DataError("the zip contains no files", archive.name)
        existed = destination.exists()
        destination.mkdir(parents=True, exist_ok=True)
        remaining = limits.max_unpacked_bytes
        try:
            for info, member in members:
                target = destination.joinpath(*member.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, open(target, "wb") as sink:
                    remaining -= _copy_within(source, sink, info.file_size, remaining, info.filename, archive.name)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError, NotImplementedError) as exc:
            _remove(destination, existed)
            reason = storage_error(exc) if isinstance(exc, OSError) else None
            raise DataError(f"the zip could not be extracted ({reason.message if reason else exc})", archive.name) from None
        except BaseException:
            _remove(destination, existed)
            raise
    tops = {member.parts[0] for _, member in members}
    if len(tops) == 1 and (destination / next(iter(tops))).is_dir():
        return destination / next(iter(tops))
    return destination


def _remove(destination: Path, existed: bool) -> None:
    if existed:
        for child in destination.iterdir():
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
    else:
        shutil.rmtree(destination, ignore_errors=True)


def check_upload_size(path: str | Path, max_bytes: int) -> Path:
    """Refuse an uploaded file over the limit (Gradio enforces it too; this covers files reaching us otherwise),
    and say so when it is gone (a zip refused as unsafe is deleted; Gradio empties its cache after some hours)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DataError("the uploaded file is gone from the server; upload it again", path.name) from None
    if size > max_bytes:
        raise DataError(f"{size / 1e6:.0f} MB is over the upload limit of {max_bytes / 1e6:.0f} MB", path.name)
    return path


def user_message(exc: BaseException) -> str:
    """The line a user sees for ``exc``: the error's own line for user errors, a generic one for bugs."""
    if isinstance(exc, AnomalensError):
        return str(exc)
    storage = storage_error(exc)  # a read-only or full disk: the machine's state, said in one line
    if storage is not None:
        return str(storage)
    if isinstance(exc, Cancelled):
        return "Stopped on request."
    log.error("unexpected error in the UI", exc_info=exc)
    return GENERIC_ERROR


# ---- login -------------------------------------------------------------------------------------------
class LoginThrottle:
    """The login check given to Gradio: the right user and password, with failed attempts slowed down.

    After ``free_attempts`` failures for a user name within ``window`` seconds, each further attempt for that
    name waits 1, 2, 4, ... up to ``max_delay`` seconds before it is answered, and attempts for one name are
    answered one at a time, so parallel requests gain nothing: 200 guesses take hours, not 0.4 s. A success
    clears the count. It is a coroutine, so a waiting attempt does not hold up anyone else's page.
    """

    def __init__(self, user: str, password: str, free_attempts: int = 3, max_delay: float = 30.0,
                 window: float = 900.0, max_names: int = 10_000) -> None:
        self._user = user.encode("utf-8")
        self._password = password.encode("utf-8")
        self.free_attempts = free_attempts
        self.max_delay = max_delay
        self.window = window
        self.max_names = max_names
        self._failures: dict[str, list[float]] = {}
        self._locks: dict[str, Any] = {}

    def delay_for(self, user: str, now: float | None = None) -> float:
        """Seconds the next attempt for ``user`` will wait."""
        now = time.monotonic() if now is None else now
        recent = [t for t in self._failures.get(user, []) if now - t < self.window]
        extra = len(recent) - self.free_attempts
        return 0.0 if extra < 0 else min(self.max_delay, 2.0**extra)

    async def check(self, user: str, password: str) -> bool:
        """The coroutine Gradio calls (give it ``throttle.check``: Gradio awaits only real coroutine functions,
        and would take the coroutine object of a callable instance as a successful login)."""
        import asyncio

        key = user[:128]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            delay = self.delay_for(key)
            if delay:
                await asyncio.sleep(delay)
            ok = hmac.compare_digest(user.encode("utf-8"), self._user) & hmac.compare_digest(
                password.encode("utf-8"), self._password)
            now = time.monotonic()
            if ok:
                self._failures.pop(key, None)
            else:
                recent = [t for t in self._failures.get(key, []) if now - t < self.window]
                self._failures[key] = recent[-64:] + [now]
                log.warning("failed login for user %r (%d recent failures)", key, len(self._failures[key]))
                if len(self._failures) > self.max_names:
                    self._forget(now)
            return bool(ok)

    def _forget(self, now: float) -> None:
        """A flood of made-up names filled the table: forget the tenth that matters least, with their locks.

        Fewest recent failures go first, then the least recently failed, so made-up names cannot push out a
        name that is being guessed (forgetting the oldest record would reset its delay). Once per tenth of the
        table, so a flood costs a sort per thousand failures, not a scan per failure.
        """
        def weight(name: str) -> tuple[int, float]:
            times = self._failures[name]
            return sum(now - t < self.window for t in times), times[-1]

        for name in sorted(self._failures, key=weight)[: len(self._failures) - self.max_names * 9 // 10]:
            del self._failures[name]
            self._locks.pop(name, None)  # a waiting attempt keeps its own reference; the table stays bounded


# Gradio routes that answer without a login even when the app has one (checked against every route in the
# tests): with a login configured they need it too.
LOGIN_REQUIRED_PREFIXES = (
    "/gradio_api/runs", "/gradio_api/run-history", "/gradio_api/cancel", "/gradio_api/reset",
    "/gradio_api/heartbeat", "/gradio_api/stream", "/gradio_api/monitoring", "/monitoring",
    "/gradio_api/vibe", "/gradio_api/undo-vibe", "/gradio_api/custom_component",
)


class LoginGate:
    """ASGI middleware: when the app has a login, the routes in :data:`LOGIN_REQUIRED_PREFIXES` need its cookie.

    Gradio checks the login on most routes, but not on all of them (run history, cancel, reset, heartbeat,
    streams); this closes them with 401 without touching the login page itself.
    """

    def __init__(self, app: Any, prefixes: Sequence[str] = LOGIN_REQUIRED_PREFIXES) -> None:
        self.app = app
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and self._closed(scope) and not self._logged_in(scope):
            body = b'{"detail":"Not authenticated"}'
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)

    def _closed(self, scope: Any) -> bool:
        app = scope.get("app")
        if getattr(app, "auth", None) is None:
            return False
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        return any(path == p or path.startswith(p + "/") or path.startswith(p + "-") for p in self.prefixes)

    @staticmethod
    def _logged_in(scope: Any) -> bool:
        app = scope.get("app")
        tokens = getattr(app, "tokens", {}) or {}
        cookie_id = getattr(app, "cookie_id", "")
        cookies: dict[str, str] = {}
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                for part in value.decode("latin-1").split(";"):
                    key, _, val = part.strip().partition("=")
                    cookies[key] = val
        token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
        return token is not None and token in tokens


# ---- no outgoing requests ----------------------------------------------------------------------------
# Gradio's file routes fetch and stream back any http(s) URL given as the "path" (``/gradio_api/file=https://...``),
# and an input whose file "path" is a URL is downloaded into its cache: either way the server would make requests
# on the plant network for whoever reaches the page. The UI never needs either: it serves its own files and takes
# files from uploads only.
_URL_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.\-]+:")  # http:, https:, ftp:, data:, file:, ... (not "C:")
_FILE_ROUTE = re.compile(r"(?:/gradio_api)?/(?:file=|file/|proxy=)")
NO_URLS_MESSAGE = "this server fetches no URLs: files come from uploads and from what its views produced"


def names_a_url(text: str) -> bool:
    """``text`` starts with a URL scheme, also percent-encoded (``https%3A//``, ``https%253A//``)."""
    from urllib.parse import unquote

    for _ in range(4):
        if _URL_SCHEME.match(text):
            return True
        decoded = unquote(text)
        if decoded == text:
            return False
        text = decoded
    return True  # encoded over and over: no file of this server is named like that


def _url_file_paths(data: Any) -> bool:
    """Whether a request body holds a file object (a dict with a ``path``) whose path names a URL."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            path = item.get("path")
            if isinstance(path, str) and names_a_url(path):
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class NoRemoteFiles:
    """ASGI middleware: 403 for a file route whose target is a URL (Gradio would fetch it) and for any
    ``/proxy=`` route (this app loads no remote Space), and 403 for a JSON request whose file inputs name a
    URL instead of an upload (Gradio would download it). With or without a login: no one may make the server
    send requests."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        route = _FILE_ROUTE.match(path)
        if route and (route.group(0).endswith("proxy=") or names_a_url(path[route.end():])):
            await _refuse(send)
            return
        if scope.get("method") == "POST" and _is_json(scope):
            body, more = b"", True
            while more:  # the whole body first (Gradio reads it whole too): it is small, files come by /upload
                message = await receive()
                if message["type"] != "http.request":
                    await self.app(scope, _replay(b"", message, receive), send)
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
            try:
                data = json.loads(body) if body else None
            except (ValueError, RecursionError):
                data = None  # not JSON after all: Gradio says so
            if _url_file_paths(data):
                await _refuse(send)
                return
            receive = _replay(body, None, receive)
        await self.app(scope, receive, send)


def _is_json(scope: Any) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return b"json" in value.lower()
    return False


def _replay(body: bytes, pending: Any, receive: Any) -> Any:
    """A ``receive`` that gives the body already read (or the message that ended the reading), then the rest."""
    first = [pending if pending is not None else {"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Any:
        if first:
            return first.pop()
        return await receive()

    return replay


async def _refuse(send: Any) -> None:
    body = json.dumps({"detail": NO_URLS_MESSAGE}).encode()
    await send({"type": "http.response.start", "status": 403,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---- files the page may serve ----------------------------------------------------------------------
SESSIONS_PREFIX = "anomalens-ui-"
SERVER_FILE = ".server"  # in a sessions root: "<pid> <host>|<pid namespace>" of the server that made it


def served_sessions_root() -> Path:
    """A private folder (mode 700) for this server's per-session outputs, outside the results folder.

    Only what a view returns is copied from here into Gradio's cache and served; the folder itself, the
    results folder (weights, configs, logs) and the data folders are never on Gradio's allowed paths. It records
    the server's process, so that a later start can remove it if this server was killed before its exit handler
    ran (:func:`remove_dead_servers_roots`).
    """
    root = Path(tempfile.mkdtemp(prefix=SESSIONS_PREFIX))
    (root / SERVER_FILE).write_text(f"{os.getpid()} {_process_space()}\n", encoding="utf-8")
    return root


def _process_space() -> str:
    """Where a process number means this process: the host and, on Linux, the PID namespace (containers on the
    host's network share its name but not its process numbers, and may share a /tmp)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}|{namespace}"


def remove_dead_servers_roots(parent: str | Path | None = None) -> int:
    """Remove the sessions roots (under ``parent``, default the temporary folder) of servers that are gone, such
    as one killed with SIGKILL; returns how many went.

    Only folders of this user, that are real folders, that record a server of this host whose process no longer
    exists. Kept: one without the record (older versions, or not ours to judge), one of another host (a shared
    ``/tmp`` seen from a container), one whose process is alive, or whose number was reused by another process.
    """
    parent = Path(tempfile.gettempdir() if parent is None else parent)
    host, removed = _process_space(), 0
    for folder in parent.glob(SESSIONS_PREFIX + "*"):
        try:
            info = folder.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            with open(folder / SERVER_FILE, "rb") as handle:
                pid_text, _, owner = handle.read(200).decode("utf-8", "replace").strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if owner != host or pid <= 0 or pid == os.getpid() or _process_exists(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only the check
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process (EPERM): alive
    return True
