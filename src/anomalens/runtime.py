"""Devices, seeds and atomic file writes: the small utilities every part needs."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import queue
import random
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from anomalens.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
T = TypeVar("T")


def share_cpu_fairly() -> None:
    """Make idle worker threads sleep instead of spinning, so that another job on the same CPU keeps its share.

    OpenMP pools (PyTorch, faiss) busy-wait between parallel regions by default; with two jobs on two cores
    that halved a job's rate beyond its fair share (NOTES.md). Only effective before those libraries load:
    the command line calls it first thing; a library user sets ``OMP_WAIT_POLICY=PASSIVE`` themselves.
    ONNX Runtime's pools are told not to spin in :mod:`anomalens.models.components.onnx_backbone`.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")  # the same for Intel's OpenMP, where a build uses it


# library_threads' users now and the counts to restore when the last one leaves: torch's count is process-wide, and
# two watches that overlap must not restore in the wrong order (the first to stop left torch at 1 thread for good).
_LIBRARY_THREADS_LOCK = threading.Lock()
_library_users = 0
_library_before: tuple[int, int] = (0, 0)


@contextlib.contextmanager
def library_threads(threads: int | None) -> Iterator[None]:
    """Within the block, the thread pools of torch, OpenCV and ONNX Runtime sessions created meanwhile run
    ``threads`` threads each (None: left as they are); afterwards torch's and OpenCV's counts are restored. faiss
    keeps its fixed count (:data:`anomalens.neighbours.SEARCH_THREADS`): its results depend on it.

    For work that is already split across threads of its own (the live watch's reader, feature and scorer
    threads): a second level of parallelism inside each library only adds synchronisation. On the 640x480
    stream the watch took 8-16% less CPU per frame with one thread per library than with two
    (``benchmarks/live_soak.py budget``). torch's count is process-wide, so other work of the process sees it too;
    blocks that overlap (two watches) share it, and the counts from before the first are restored when the last ends.
    """
    global _library_users, _library_before
    if threads is None:
        yield
        return
    import cv2
    import torch

    threads = max(1, int(threads))
    with _LIBRARY_THREADS_LOCK:
        if _library_users == 0:
            _library_before = torch.get_num_threads(), cv2.getNumThreads()
        _library_users += 1
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    try:
        yield
    finally:
        with _LIBRARY_THREADS_LOCK:
            _library_users -= 1
            if _library_users == 0:
                torch.set_num_threads(_library_before[0])
                cv2.setNumThreads(_library_before[1])


# torch's thread count for the CPU operations whose bits depend on it (MKL's LAPACK: PaDiM's Cholesky factorisation
# wrote other precision matrices with another count, and torch's default count is the number of CPUs available).
# 2 is that default on the two-core machine that measured the published figures, so its models stay bit-identical.
LAPACK_THREADS = 2


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Within the block torch runs ``threads`` threads (its count restored afterwards), whatever CPUs the process
    may use: for work whose result depends on the count. Given the count, MKL writes the same bits with one CPU as
    with many (``tests/test_thread_counts.py``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """The items of ``items``, produced in a background thread up to ``depth`` ahead of the consumer, so that
    producing the next one overlaps with consuming this one on another core (the libraries doing the work, PIL,
    OpenCV, ONNX Runtime, faiss and torch, release the GIL). Errors surface in the consumer's thread; a consumer
    that stops early stops the producer."""
    ready: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                ready.put((True, item))
            ready.put((False, None))
        except BaseException as exc:  # handed to the consumer, which raises it
            ready.put((False, exc))

    thread = threading.Thread(target=produce, name="anomalens-ahead", daemon=True)
    thread.start()
    try:
        while True:
            more, item = ready.get()
            if not more:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue, then let it finish
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass


def resolve_device(name: str = "auto") -> "torch.device":
    """Turn ``auto|cpu|cuda|mps`` into a device; ``auto`` prefers CUDA, then MPS, then CPU."""
    import torch  # imported here so that `anomalens --help` stays fast

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in DEVICE_CHOICES:
        raise ConfigError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but CUDA is not available on this machine")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("--device mps was asked for but MPS is not available on this machine")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that a run with the same seed gives the same model."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting it and setting it back, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def make_temp_file(directory: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """An empty temporary file in ``directory`` with the permissions a new file would get (``0666 & ~umask``).

    ``mkstemp`` creates files readable by their owner alone (0600); results renamed from it would stay
    unreadable to colleagues, so the mode is widened to what ``open()`` would have given.
    """
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def make_temp_dir(directory: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """A temporary folder in ``directory`` with the permissions ``mkdir`` would give (``0777 & ~umask``, not 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=directory))
    tmp.chmod(0o777 & ~current_umask())
    return tmp


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a temporary file named after a dead writer can go)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists but owned by someone else, or not a PID we can ask about: leave its files alone
    return True


def temporary_prefix(name: str) -> str:
    """``.<name>.pid<PID>.``: hidden, and naming its writer so that a killed writer's leftovers can be found."""
    return f".{name}.pid{os.getpid()}."


def remove_dead_temporaries(parent: Path, name: str) -> int:
    """Remove ``parent/.<name>.pid<PID>.*.tmp`` left by writers that were killed; returns how many went."""
    removed = 0
    try:
        entries = list(parent.glob(f".{glob_escape(name)}.pid*.tmp"))
    except OSError:
        return 0
    for entry in entries:
        pid = entry.name[len(name) + 5:].split(".", 1)[0]
        if not pid.isdigit() or pid_alive(int(pid)):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _fresh_temporary(target: Path, make: Callable[..., Path]) -> Path:
    """A new temporary file or folder (``make``) beside ``target``, once those that dead processes left are gone."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(target.parent, target.name)
    return make(target.parent, prefix=temporary_prefix(target.name))


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` only if the block succeeds.

    Readers never see a half-written file, and a failure or Ctrl-C leaves the old file untouched.
    """
    tmp_path = _fresh_temporary(Path(target), make_temp_file)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(target: str | Path, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # how checkpoints and bundles record a file's checksum
HASH_CHUNK_BYTES = 1 << 20  # streamed, so a file of any size is hashed in constant memory


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file as lowercase hex, read in chunks (``config.json``'s ``weights_sha256``, a bundle's
    ``files_sha256``: neither safetensors, ONNX, OpenVINO nor ``.npy`` has a checksum of its own)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def json_text(payload: Any, indent: int | None = 2) -> str:
    """``payload`` as strict JSON: NaN and infinities become ``null`` (bare ``NaN`` is not JSON, and strict
    receivers refuse the whole message), NumPy values plain numbers; ``indent`` None: one compact line."""
    separators = None if indent is not None else (",", ":")
    return json.dumps(_finite(payload), indent=indent, separators=separators, default=_json_default, allow_nan=False)


def write_json_atomic(target: str | Path, payload: Any) -> Path:
    """Write ``payload`` as JSON (:func:`json_text`)."""
    return write_text_atomic(target, json_text(payload) + "\n")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, through dicts, lists and NumPy values."""
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    return value


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a folder: fill a temporary folder, then swap it in whole.

    Two writers of one folder (two evaluations of a model in the UI's threads) each move the folder they replace
    aside under a name of their own (a fixed one made the second fail, and blocked every later swap), and the last
    to finish wins, as with a file. If the new folder cannot be renamed into place, the one moved aside is put back:
    a failed swap leaves the old folder, never none (the old copy went before it was known whether the new one
    would arrive)."""
    target = Path(target)
    tmp = _fresh_temporary(target, make_temp_dir)
    try:
        yield tmp
        for attempt in range(SWAP_ATTEMPTS):
            old, moved = None, False
            if target.exists():
                # an empty folder of its own to rename over (a killed writer's is found by its PID, as temporaries are)
                old = make_temp_dir(target.parent, prefix=temporary_prefix(target.name), suffix=".old.tmp")
                try:
                    os.replace(target, old)
                    moved = True
                except FileNotFoundError:  # another writer moved it aside first
                    pass
            swapped = False
            try:
                os.replace(tmp, target)
                swapped = True
                break
            except OSError as exc:  # another writer swapped its folder in meanwhile: move that one aside too
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == SWAP_ATTEMPTS - 1:
                    raise
            finally:
                if old is not None:
                    if moved and not swapped and not target.exists():
                        _put_back(old, target)
                    else:  # replaced (or another writer's folder stands there now, the newer one): the old copy goes
                        shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _put_back(old: Path, target: Path) -> None:
    """Rename the folder ``old`` back to ``target`` after a failed swap. If another writer's folder stands there by
    then (it swapped its own in between), that newer, complete folder wins and the old copy goes, as after a swap
    (it had been left beside it: CI once found two); if the rename fails with no folder there at all, the old copy
    stays under its temporary name (``.<name>.pid<PID>.*.old.tmp``, recoverable while this process runs)."""
    try:
        os.replace(old, target)
    except OSError:
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)


# how often atomic_dir moves a folder aside that another writer swapped in while it did the same
SWAP_ATTEMPTS = 20


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def onnxruntime_session(path: str | Path, threads: int | None = None, arena: bool = False) -> Any:
    """An ONNX Runtime CPU session as anomalens runs every graph (the feature cache, exported bundles).

    Idle threads sleep instead of spinning (spinning pools collapse throughput when the CPU is shared), and no
    memory arena: the arena keeps the largest batch's buffers for good (150 MB more peak memory for the feature
    extractor; +300 MB of RSS in a server for PatchCore's distance matrix), at the same speed (measured here).
    Needs only ``onnxruntime`` (the torch-free runtime calls it too). ``arena``: keep the buffers after all, for a
    caller that runs the same small batch again and again (a live watch): in a process that mapped every block
    above 256 KB afresh (the watch's former memory setting, ``steady_memory("mmap")`` in
    ``anomalens.live.reader``), allocating them anew cost 7-10 ms per frame.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = arena
    # errors only: the optimiser's notes (constants of a branch it removed as unused) are not the user's concern
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
