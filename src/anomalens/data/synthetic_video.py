"""A small synthetic industrial video category for tests and the demo: parts travelling on a conveyor.

Each clip shows orange parts riding a striped conveyor belt from left to right under a machine housing.
Normal clips vary the way a real line does: belt speed differs by a few percent between clips and jitters
from frame to frame, parts differ in spacing, size, height on the belt and shade, the light flickers and
there is sensor noise. Anomalies (each test clip has one, labelled per frame):

* ``foreign_object``: a dark blue blob rides the belt between two parts (anomalous while it is in view),
* ``stop``: the belt stops for a while (anomalous while stopped; a still frame looks normal on its own),
* ``speed_change``: the belt runs 2.5x faster for a while,
* ``colour_change``: one part is green instead of orange (anomalous while it is in view).

Layout (the original system's): ``<category>/train/normal/clip_000.mp4``, ``test/<type>/clip_000.mp4`` with a
sidecar ``clip_000.labels.csv`` (``start_frame,end_frame``), ``test/normal/``; with ``as_files=False`` each clip
is a folder of PNG frames and the labels go to ``labels_frame.json``. Deterministic for a seed.

>>> root = make_synthetic_video_dataset("/tmp/anomalens_video")   # doctest: +SKIP
>>> sorted(p.name for p in (root / "synthetic_conveyor" / "test").iterdir())   # doctest: +SKIP
['colour_change', 'foreign_object', 'speed_change', 'stop']
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from anomalens.data.video_datasets import write_interval_csv
from anomalens.data.video_io import write_video
from anomalens.runtime import atomic_dir

DEFAULT_VIDEO_CATEGORY = "synthetic_conveyor"
ANOMALY_TYPES = ("foreign_object", "stop", "speed_change", "colour_change")
_TEST_CYCLE = ANOMALY_TYPES + ("normal",)

_PART_RGB = np.array([222.0, 138.0, 44.0])
_GREEN_RGB = np.array([96.0, 176.0, 70.0])
_FOREIGN_RGB = np.array([40.0, 52.0, 120.0])


def synthetic_clip(
    seed: int, n_frames: int = 60, size: tuple[int, int] = (96, 128), anomaly: str | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """One clip: RGB ``uint8`` frames ``(H, W, 3)`` and 0/1 labels per frame (all 0 when ``anomaly`` is None)."""
    if anomaly is not None and anomaly not in ANOMALY_TYPES:
        raise ValueError(f"unknown anomaly type {anomaly!r}; choose from {', '.join(ANOMALY_TYPES)}")
    if n_frames < 8:
        raise ValueError(f"n_frames must be at least 8, got {n_frames}")
    rng = np.random.default_rng(seed)
    h, w = size
    belt_top, belt_bottom = int(h * 0.32), int(h * 0.80)
    belt_mid = (belt_top + belt_bottom) / 2.0

    # Belt motion: clip-level speed, small per-frame jitter, and the timed anomalies
    speed = (w / 40.0) * rng.uniform(0.92, 1.08)
    speeds = speed * (1.0 + 0.03 * rng.standard_normal(n_frames))
    start = int(rng.integers(n_frames // 4, n_frames // 2))
    end = min(n_frames - 1, start + max(n_frames // 3, 4))
    labels = np.zeros(n_frames, dtype=np.int64)
    if anomaly == "stop":
        speeds[start : end + 1] = 0.0
        labels[start : end + 1] = 1
    elif anomaly == "speed_change":
        speeds[start : end + 1] *= 2.5
        labels[start : end + 1] = 1
    belt_pos = np.cumsum(speeds) + w  # parts already fill the belt at frame 0

    # Parts placed along the belt; a part at belt coordinate u is at screen x = belt_pos - u
    parts = []
    u = 0.0
    while u < belt_pos[-1] + w:
        pw = h * 0.24 * rng.uniform(0.92, 1.08)
        ph = pw * rng.uniform(0.8, 0.95)
        parts.append(
            dict(u=u, w=pw, h=ph, y=belt_mid + rng.uniform(-2.0, 2.0), rgb=_PART_RGB + rng.normal(0, 6, 3), kind="part")
        )
        u += w * 0.36 * rng.uniform(0.85, 1.15)
    if anomaly == "colour_change":
        # The part that enters the view at the start of the interval turns green
        entering = min(parts, key=lambda p: abs((belt_pos[start] - p["u"]) + p["w"]))
        entering["rgb"] = _GREEN_RGB + rng.normal(0, 4, 3)
        entering["kind"] = "anomaly"
    elif anomaly == "foreign_object":
        radius = h * 0.07
        # Between two parts, entering the view at the start of the interval
        target = belt_pos[start] + 2 * radius
        gaps = [(a["u"] + b["u"]) / 2.0 for a, b in zip(parts, parts[1:])]
        u_blob = min(gaps, key=lambda g: abs(g - target))
        parts.append(dict(u=u_blob, w=2 * radius, h=2 * radius, y=belt_mid + rng.uniform(-4, 4), rgb=_FOREIGN_RGB, kind="blob"))

    background = _static_background(h, w, belt_top, belt_bottom)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    frames = []
    for t in range(n_frames):
        frame = background.copy()
        stripes = ((xx[belt_top:belt_bottom] - belt_pos[t]) % 12.0) < 3.0
        frame[belt_top:belt_bottom][stripes] = 88.0
        anomalous_pixels = 0
        for part in parts:
            x0 = belt_pos[t] - part["u"]
            if x0 >= w or x0 + part["w"] <= 0:
                continue
            if part["kind"] == "blob":
                cx, cy, r = x0 + part["w"] / 2, part["y"], part["w"] / 2
                inside = (xx - cx) ** 2 + ((yy - cy) * 1.3) ** 2 <= r * r
            else:
                inside = (np.abs(xx - (x0 + part["w"] / 2)) <= part["w"] / 2) & (np.abs(yy - part["y"]) <= part["h"] / 2)
                # A darker rim makes the parts look like boxes seen from above
                rim = inside & ~((np.abs(xx - (x0 + part["w"] / 2)) <= part["w"] / 2 - 2) & (np.abs(yy - part["y"]) <= part["h"] / 2 - 2))
                frame[rim] = part["rgb"] * 0.7
                inside = inside & ~rim
            frame[inside] = part["rgb"]
            if part["kind"] != "part":
                anomalous_pixels += int(inside.sum())
        if anomaly in ("foreign_object", "colour_change"):
            labels[t] = int(anomalous_pixels >= 6)
        gain = 1.0 + 0.015 * np.sin(2 * np.pi * t / 37.0 + phase)
        frame = frame * gain + rng.normal(0.0, 2.5, frame.shape)
        frames.append(np.clip(frame + 0.5, 0, 255).astype(np.uint8))
    return frames, labels


def _static_background(h: int, w: int, belt_top: int, belt_bottom: int) -> np.ndarray:
    image = np.empty((h, w, 3), dtype=np.float32)
    image[:belt_top] = (72.0, 76.0, 82.0)  # machine housing
    image[belt_bottom:] = (52.0, 54.0, 58.0)  # floor
    image[belt_top:belt_bottom] = (118.0, 118.0, 114.0)  # belt
    image[belt_top : belt_top + 2] = (30.0, 30.0, 30.0)
    image[belt_bottom - 2 : belt_bottom] = (30.0, 30.0, 30.0)
    for x in range(6, w, 24):  # bolts on the housing
        image[belt_top // 2 - 1 : belt_top // 2 + 2, x : x + 3] = (150.0, 150.0, 155.0)
    return image


def make_synthetic_video_dataset(
    root: str | Path,
    category: str = DEFAULT_VIDEO_CATEGORY,
    n_train: int = 3,
    n_test: int = 4,
    n_frames: int = 60,
    size: tuple[int, int] = (96, 128),
    fps: float = 10,
    seed: int = 0,
    as_files: bool = True,
) -> Path:
    """Write ``root/category`` (replacing an existing one, atomically) and return ``root`` (the ``--data-dir``).

    Test clips cycle through foreign_object, stop, speed_change, colour_change, then a normal clip.
    """
    root = Path(root)
    if n_train < 1:
        raise ValueError("n_train must be at least 1")
    seeds = np.random.SeedSequence(seed).generate_state(n_train + n_test)
    labels_json: dict[str, list[int]] = {}
    with atomic_dir(root / category) as tmp:
        for i in range(n_train):
            frames, _ = synthetic_clip(int(seeds[i]), n_frames, size, None)
            _write_clip(tmp / "train" / "normal" / f"train_{i:03d}", frames, fps, as_files)
        for i in range(n_test):
            kind = _TEST_CYCLE[i % len(_TEST_CYCLE)]
            frames, labels = synthetic_clip(int(seeds[n_train + i]), n_frames, size, None if kind == "normal" else kind)
            name = f"test_{i:03d}"
            target = tmp / "test" / kind / name
            _write_clip(target, frames, fps, as_files)
            if kind == "normal":
                continue
            if as_files:
                write_interval_csv(target.parent / f"{name}.labels.csv", labels)
            else:
                labels_json[name] = labels.tolist()
        if labels_json:
            payload = {"_meta": {"fps": fps, "generator": "anomalens.data.synthetic_video", "seed": seed}, **labels_json}
            (tmp / "labels_frame.json").write_text(json.dumps(payload) + "\n", encoding="utf-8")
    return root


def _write_clip(target: Path, frames: list[np.ndarray], fps: float, as_files: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if as_files:
        write_video(target.with_suffix(".mp4"), frames, fps)
        return
    target.mkdir()
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(target / f"{t:04d}.png")
