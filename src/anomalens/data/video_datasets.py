"""Video datasets on disk: which clips are normal training data, which are test clips, and their labels.

Two layouts are recognised (a clip is a video file or a folder of frames)::

    <data_dir>/<category>/train/normal/<clip>          the original system's layout
    <data_dir>/<category>/test/normal/<clip>           normal in every frame
    <data_dir>/<category>/test/<anomaly_type>/<clip>

    <data_dir>/<category>/training/frames/<clip>/      UCSD Ped2, Avenue, ShanghaiTech, IPAD
    <data_dir>/<category>/testing/frames/<clip>/       (``training/videos/*.avi`` works too)

Frame labels (1 = anomalous), first found wins: ``labels_frame.json`` in the category folder
(``{clip: [0/1 per frame]}``, keys such as ``_meta`` ignored; ``<type>/<clip>`` keys also accepted), a per-clip
``test_label/<clip>.npy`` (IPAD) or ``test_frame_mask/<clip>.npy`` (ShanghaiTech), or a sidecar
``<clip>.labels.csv`` beside the clip with header ``start_frame,end_frame`` (0-based, inclusive intervals).
A test clip of an anomaly type without frame labels is evaluated at video level only. Frame folders play
at ``_meta.fps`` of ``labels_frame.json`` when given (a stated rate); else their rate is unknown (25 frames/s
assumed for timing only, see ``VideoClip.stated_fps``).

>>> category = discover_video_category("../shared/data", "ucsd_ped2")   # doctest: +SKIP
>>> len(category.train), len(category.test), category.test[0].frame_labels.shape   # doctest: +SKIP
(16, 12, (180,))
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomalens.data.preprocessing import Preprocessing
from anomalens.data.video_io import VideoClip, is_frame_folder, is_video_file, list_frames, natural_key, open_clip
from anomalens.errors import DataError
from anomalens.limits import MAX_FPS, is_frame_rate
from anomalens.progress import SILENT, Reporter

NORMAL_TYPE = "normal"
NORMAL_ALIASES = ("normal", "good")
LABELS_JSON = "labels_frame.json"
LABEL_SUFFIX = ".labels.csv"
NPY_LABEL_FOLDERS = ("test_label", "test_frame_mask")
UNKNOWN_LABEL = -1


@dataclass
class ClipRef:
    """A clip found on disk: nothing decoded yet.

    ``frame_labels``: 0/1 per frame when known (all zeros for normal clips whose length is known);
    ``video_label``: 0 normal, 1 anomalous, -1 unknown (a test clip with no label source).
    """

    path: Path
    name: str
    anomaly_type: str
    frame_labels: np.ndarray | None
    video_label: int
    num_frames: int | None = None
    fps: float | None = None  # frame folders: ``_meta.fps`` of labels_frame.json, else None (unknown) when opened

    @property
    def has_frame_labels(self) -> bool:
        return self.frame_labels is not None or self.video_label == 0

    def labels_for(self, num_frames: int) -> np.ndarray | None:
        """Frame labels for a clip that decoded ``num_frames`` frames (zeros for a normal clip); None if unknown."""
        if self.frame_labels is None:
            return np.zeros(num_frames, dtype=np.int64) if self.video_label == 0 else None
        if len(self.frame_labels) != num_frames:
            raise DataError(
                f"clip {self.name} has {num_frames} frames but its frame labels have {len(self.frame_labels)} entries",
                self.path,
            )
        return self.frame_labels

    def open(self, preprocessing: Preprocessing, reporter: Reporter = SILENT, fps: float | None = None) -> VideoClip:
        rate = fps if fps is not None else (self.fps if self.path.is_dir() else None)
        return open_clip(self.path, preprocessing, reporter, fps=rate)


@dataclass
class VideoCategory:
    """The clips of one category: ``train`` are normal; ``test`` carry labels where known."""

    root: Path
    train: list[ClipRef]
    test: list[ClipRef] = field(default_factory=list)
    layout: str = "original"  # "original" (train/normal) or "frames" (training/frames)

    @property
    def name(self) -> str:
        return self.root.name


def _clip_entries(folder: Path) -> list[Path]:
    """Video files and frame folders directly inside ``folder``."""
    if not folder.is_dir():
        return []
    entries = [p for p in folder.iterdir() if not p.name.startswith(".") and (is_video_file(p) or is_frame_folder(p))]
    return sorted(entries, key=natural_key)


def _train_folder(root: Path) -> tuple[str, Path] | None:
    for alias in NORMAL_ALIASES:
        folder = root / "train" / alias
        if _clip_entries(folder):
            return "original", folder
    for sub in ("frames", "videos"):
        folder = root / "training" / sub
        if _clip_entries(folder):
            return "frames", folder
    return None


def is_video_category(data_dir: str | Path, category: str) -> bool:
    """Whether ``data_dir/category`` holds video clips (files or frame folders) rather than still images."""
    root = Path(data_dir) / category
    return root.is_dir() and _train_folder(root) is not None


def discover_video_category(data_dir: str | Path, category: str) -> VideoCategory:
    """Find the clips and labels of ``category``; raise :class:`DataError` naming what is missing or wrong."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError("data directory not found", data_dir)
    root = data_dir / category
    if not root.is_dir():
        found = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and is_video_category(data_dir, p.name))
        hint = f"; video categories here: {', '.join(found)}" if found else ""
        raise DataError(f"category {category!r} not found{hint}", data_dir)
    located = _train_folder(root)
    if located is None:
        raise DataError(
            "no normal training clips: expected video files or frame folders in train/normal/ or training/frames/",
            root,
        )
    layout, train_folder = located
    label_json, fps = _read_labels_json(root)
    train = [_make_ref(p, NORMAL_TYPE, 0, None) for p in _clip_entries(train_folder)]
    if layout == "original":
        test = _original_test_clips(root, label_json)
    else:
        test_folder = root / "testing" / train_folder.name
        if not test_folder.is_dir():
            other = root / "testing" / ("videos" if train_folder.name == "frames" else "frames")
            test_folder = other if other.is_dir() else test_folder
        test = [_labelled_ref(root, p, "anomaly", label_json) for p in _clip_entries(test_folder)]
    for ref in train + test:
        ref.fps = fps
    return VideoCategory(root=root, train=train, test=test, layout=layout)


def _original_test_clips(root: Path, label_json: dict[str, list[int]]) -> list[ClipRef]:
    test_root = root / "test"
    if not test_root.is_dir():
        return []
    refs: list[ClipRef] = []
    for type_dir in sorted((p for p in test_root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=natural_key):
        entries = _clip_entries(type_dir)
        if type_dir.name in NORMAL_ALIASES:
            refs.extend(_make_ref(p, NORMAL_TYPE, 0, None) for p in entries)
        elif is_frame_folder(type_dir) and not entries:
            continue
        else:
            refs.extend(_labelled_ref(root, p, type_dir.name, label_json, default_video_label=1) for p in entries)
    return refs


def _make_ref(path: Path, anomaly_type: str, video_label: int, labels: np.ndarray | None) -> ClipRef:
    name = path.name if path.is_dir() else path.stem
    return ClipRef(path=path, name=name, anomaly_type=anomaly_type, frame_labels=labels, video_label=video_label)


def _labelled_ref(
    root: Path, path: Path, anomaly_type: str, label_json: dict[str, list[int]], default_video_label: int = UNKNOWN_LABEL
) -> ClipRef:
    ref = _make_ref(path, anomaly_type, default_video_label, None)
    labels, source = _find_labels(root, path, ref.name, anomaly_type, label_json)
    if labels is None:
        return ref
    if path.is_dir():
        count = len(list_frames(path))
        ref.num_frames = count
        if len(labels) != count:
            raise DataError(
                f"frame labels of clip {ref.name} have {len(labels)} entries but the clip has {count} frames", source
            )
    ref.frame_labels = labels
    ref.video_label = int(labels.any())
    return ref


def _find_labels(
    root: Path, path: Path, name: str, anomaly_type: str, label_json: dict[str, list[int]]
) -> tuple[np.ndarray | None, Path]:
    for key in (f"{anomaly_type}/{name}", name):
        if key in label_json:
            return _as_labels(label_json[key], root / LABELS_JSON, key), root / LABELS_JSON
    for folder in NPY_LABEL_FOLDERS:
        npy = root / folder / f"{name}.npy"
        if npy.is_file():
            try:
                values = np.load(npy, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise DataError(f"cannot read frame labels ({exc})", npy) from None
            return _as_labels(values, npy, name), npy
    sidecar = path.parent / f"{name}{LABEL_SUFFIX}"
    if sidecar.is_file():
        count = len(list_frames(path)) if path.is_dir() else _video_frame_count(path)
        return _read_interval_csv(sidecar, count), sidecar
    return None, path


def _as_labels(values, source: Path, key: str) -> np.ndarray:
    array = np.asarray(values).ravel()
    if array.size == 0 or not np.isin(array, (0, 1)).all():
        raise DataError(f"frame labels of {key!r} must be a non-empty list of 0/1 values", source)
    return array.astype(np.int64)


def _read_labels_json(root: Path) -> tuple[dict[str, list[int]], float | None]:
    """The per-clip labels of ``labels_frame.json`` and the frame rate in its ``_meta`` (if any)."""
    path = root / LABELS_JSON
    if not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable frame labels ({exc})", path) from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object {clip: [0/1 per frame]}", path)
    meta = data.get("_meta")
    if meta is not None and not isinstance(meta, dict):
        raise DataError(f"_meta must be an object such as {{\"fps\": 25}}, got {_kind(meta)}", path)
    fps = (meta or {}).get("fps")
    # checked here, so that a bad rate names this file and field rather than a --fps the user never passed
    if fps is not None and not is_frame_rate(fps):
        raise DataError(f"_meta.fps {fps!r}: must be a frame rate above 0 and at most {MAX_FPS:g} (or absent: unknown)",
                        path)
    return {k: v for k, v in data.items() if not k.startswith("_") and isinstance(v, list)}, (
        None if fps is None else float(fps))


def _kind(value: object) -> str:
    return "a list" if isinstance(value, list) else f"{type(value).__name__} {value!r}"[:60]


def _video_frame_count(path: Path) -> int:
    clip = open_clip(path, Preprocessing(image_size=None))
    return clip.count_frames()


def _read_interval_csv(path: Path, num_frames: int) -> np.ndarray:
    labels = np.zeros(num_frames, dtype=np.int64)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not {"start_frame", "end_frame"} <= {f.strip() for f in reader.fieldnames}:
                raise DataError("expected a header 'start_frame,end_frame'", path)
            for line, row in enumerate(reader, start=2):
                row = {k.strip(): v for k, v in row.items() if k is not None}
                try:
                    start, end = int(row["start_frame"]), int(row["end_frame"])
                except (TypeError, ValueError):
                    raise DataError(f"line {line}: start_frame and end_frame must be integers", path) from None
                if end < start:
                    raise DataError(f"line {line}: interval {start}-{end} is reversed (start_frame after end_frame); "
                                    f"write it as {end},{start}", path)
                if start < 0 or end >= num_frames:
                    raise DataError(
                        f"line {line}: interval {start}-{end} is outside the clip's {num_frames} frames "
                        "(0-based, inclusive)",
                        path,
                    )
                labels[start : end + 1] = 1
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read labels ({exc})", path) from None
    return labels


def write_interval_csv(path: str | Path, labels: np.ndarray) -> Path:
    """Write 0/1 frame labels as a ``start_frame,end_frame`` sidecar (0-based inclusive intervals)."""
    from anomalens.runtime import write_text_atomic

    lines = ["start_frame,end_frame"]
    for start, end in label_intervals(labels):
        lines.append(f"{start},{end}")
    return write_text_atomic(path, "\n".join(lines) + "\n")


def label_intervals(labels: np.ndarray) -> list[tuple[int, int]]:
    """Runs of 1s as (start, end) inclusive."""
    flags = np.asarray(labels).astype(bool)
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(s), int(e) - 1) for s, e in zip(edges[::2], edges[1::2])]
