"""Score a video with an exported video bundle, without torch: per-frame scores, verdicts and events.

A video bundle (``anomalens export`` of a ``stfeatures`` or ``convlstm`` run) holds the graphs described in
:mod:`anomalens.export.video`; this module does what stays outside them, with the library's own torch-free code:
decoding (PyAV, :mod:`anomalens.data.video_io`) and resizing (:mod:`anomalens.data.pixels`), the DIS optical
flow (OpenCV, :mod:`anomalens.data.flow`), the temporal smoothing of each cue (:mod:`anomalens.metrics.smoothing`,
taps, median width and cap from ``bundle.json``), the sliding windows of the ConvLSTM, and the verdicts and events with the model's
calibration (:mod:`anomalens.metrics.events`). It gives ``analyze-video``'s per-frame scores.

Needs numpy, Pillow, ONNX Runtime or OpenVINO, plus PyAV to read video files and ``opencv-python-headless``
for the motion cue of ``stfeatures``.

>>> inferencer = VideoInferencer.load("bundles/conveyor_onnx")                # doctest: +SKIP
>>> result = inferencer.predict_video("line_camera.mp4")                       # doctest: +SKIP
>>> result.scores.shape, result.anomalous.sum(), result.events[0]["start_time"]  # doctest: +SKIP
>>> result.close()  # a long video's maps are memory-mapped from a temporary file: free it # doctest: +SKIP
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from anomalens.data.pixels import resize_rgb_array, rgb_array
from anomalens.errors import CheckpointError, DataError
from anomalens.inference.bundle import load_constants, open_graphs, read_bundle
from anomalens.inference.engines import Engine
from anomalens.inference.frame_buffer import MEMORY_LIMIT, FrameBuffer
from anomalens.metrics.events import attach_peak_cues, attach_peak_regions, calibrated_events
from anomalens.metrics.smoothing import smooth_scores
from anomalens.metrics.threshold import Calibration

@dataclass
class VideoInferenceResult:
    """Per-frame results of one video of T frames: raw ``scores`` ``(T,)``, ``normalized_scores`` (0.5 at the
    threshold), ``anomalous`` verdicts, ``events`` (as ``analyze-video``'s events.json), raw ``maps`` ``(T, h, w)``
    on the score's scale (float16, as the library keeps them), each cue's share of the score (``stfeatures``), and the frame rate
    (``fps_stated`` false: nothing stated it, 25 is assumed for the events' times and motion is measured per frame).

    The maps are kept as the library keeps them (:class:`~anomalens.inference.frame_buffer.FrameBuffer`): in RAM up
    to ``predict_video``'s ``memory_limit``, beyond it a read-only ``np.memmap`` of an anonymous temporary file, so
    that a long video costs disk rather than RAM. :meth:`close` (or ``with``) gives that space back at once; otherwise
    it goes when the result is garbage-collected, and the file leaves nothing behind when the process ends."""

    scores: np.ndarray
    normalized_scores: np.ndarray
    anomalous: np.ndarray
    threshold: float
    events: list[dict[str, Any]]
    maps: np.ndarray
    fps: float
    fps_stated: bool
    cues: dict[str, np.ndarray] = field(default_factory=dict)
    # seconds from the first frame to each, where the file's timestamps are uneven (a variable frame rate); None:
    # frame t is at t / fps
    times: np.ndarray | None = None

    def close(self) -> None:
        """Release the maps (``maps`` becomes empty): a temporary file behind them is freed, once arrays taken from
        ``maps`` before are dropped too (they stay readable until then)."""
        # a memmap cannot be unmapped while numpy holds it, so dropping the result's reference is what frees it
        self.maps = np.zeros((0, *self.maps.shape[1:]), self.maps.dtype)

    def __enter__(self) -> "VideoInferenceResult":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (no maps)."""
        return {"frames": int(self.scores.size), "fps": self.fps, "fps_stated": self.fps_stated, "threshold": self.threshold,
                "variable_frame_rate": self.times is not None,
                "scores": self.scores.tolist(), "normalized_scores": self.normalized_scores.tolist(),
                "anomalous": self.anomalous.tolist(), "events": self.events,
                "cues": {name: values.tolist() for name, values in self.cues.items()}}


class VideoInferencer:
    """A loaded video bundle. ``predict_video`` takes a video file, a folder of frames, or RGB ``uint8`` frames."""

    def __init__(self, folder: Path, meta: dict[str, Any], engines: dict[str, Engine], constants: dict[str, np.ndarray]) -> None:
        self.folder = folder
        self.meta = meta
        self.engines = engines
        self.constants = constants
        self.calibration = Calibration.from_dict(meta["calibration"])
        self.image_size: tuple[int, int] = tuple(meta["input"]["image_size"])  # type: ignore[assignment]
        self.video = meta["video"]

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> "VideoInferencer":
        """Open ``folder`` (``anomalens export`` of a video run) on the engine it was exported for."""
        folder = Path(folder)
        meta = read_bundle(folder)
        if meta["model"].get("kind") != "video":
            raise CheckpointError("this bundle holds an image model: use anomalens.inference.Inferencer", folder)
        runtime = meta["runtime"]
        engines = open_graphs(folder, {name: graph["file"] for name, graph in meta["graphs"].items()}, runtime, threads)
        return cls(folder, meta, engines, load_constants(folder, meta))

    @property
    def model_name(self) -> str:
        return self.meta["model"]["name"]

    def frames(self, source: str | Path | Iterable[np.ndarray], fps: float | None = None) -> tuple[Iterator[np.ndarray], float | None]:
        """Frames at the model's size (RGB ``uint8`` ``(H, W, 3)``) of ``source``, decoded front to back, and the
        rate stated by ``fps`` or the file (as ``VideoClip.stated_fps``); None when nothing states one."""
        frames, stated, _, _ = self._frames(source, fps)
        return frames, stated

    def _frames(self, source: str | Path | Iterable[np.ndarray], fps: float | None) -> tuple[Iterator[np.ndarray], float | None, list[tuple[int, int]], Any]:
        """:meth:`frames`, a list that holds the first frame's own (H, W) once it was decoded (the events'
        regions are given in it; the call's own, so that two videos scored at once keep their sizes apart), and
        the opened clip of a file (None for frames in memory), whose ``frame_times()`` time a variable rate."""
        from anomalens.data.video_io import check_fps, open_clip

        if isinstance(source, (str, Path)):
            clip = open_clip(source, None, fps=check_fps(fps))  # type: ignore[arg-type]  (native frames only)
            native, stated = clip.iter_native(), clip.stated_fps
        else:
            native, stated, clip = iter(source), check_fps(fps), None
        size: list[tuple[int, int]] = []

        def at_model_size(frame: np.ndarray) -> np.ndarray:
            if not size:
                size.append((int(frame.shape[0]), int(frame.shape[1])))
            return resize_rgb_array(frame, self.image_size)

        return (at_model_size(rgb_array(frame)) for frame in native), stated, size, clip

    def predict_video(self, source: str | Path | Iterable[np.ndarray], fps: float | None = None, *,
                      memory_limit: int = MEMORY_LIMIT, spill_dir: str | Path | None = None) -> VideoInferenceResult:
        """Score every frame of ``source`` with the model's threshold; events as ``analyze-video`` finds them.

        ``memory_limit``: bytes of maps kept in RAM; beyond it they go to a temporary file (see
        :class:`VideoInferenceResult`) in ``spill_dir`` (None: the system temp folder, ``TMPDIR`` first), so memory
        stays bounded however long the video; where that folder is a tmpfs, choose one on disk."""
        from anomalens.data.video_io import timing_fps

        frames, stated, frame_size, clip = self._frames(source, fps)
        rate = timing_fps(stated)  # an unstated rate times the events only: motion stays per frame
        # the memmap keeps its own handle on the spill file: the buffer's can close once the maps are read back
        with FrameBuffer(dtype=np.float16, memory_limit=memory_limit, spill_dir=spill_dir) as buffer:
            if self.model_name == "stfeatures":
                scores, cues = self._stfeatures(frames, buffer, stated)
            else:
                scores, cues = self._convlstm(frames, buffer)
            maps = buffer.array()
        cal = self.calibration
        normalized = cal.normalize(scores.astype(np.float64))
        # a variable frame rate's own times, read in the pass just made (as analyze-video); None: frame / fps
        times = clip.frame_times() if clip is not None else None
        events = calibrated_events(scores, cal, rate, normalized_scores=normalized, times=times)
        attach_peak_cues(events, cues)
        # absent in bundles exported before it: a convlstm's error map peaks at its score (regions), stfeatures' summed
        # map did not (none)
        if self.video.get("map_places_events", self.model_name == "convlstm"):
            attach_peak_regions(events, maps, cal.region_threshold(), frame_size[0] if frame_size else None)
        return VideoInferenceResult(scores=scores, normalized_scores=normalized, anomalous=cal.is_anomalous(scores),
                                    threshold=float(cal.threshold), events=events, maps=maps, fps=rate, fps_stated=stated is not None, cues=cues,
                                    times=times)

    # ---- stfeatures: appearance graph, optical flow, motion graph, smoothing in time -----------------------
    def _stfeatures(self, frames: Iterator[np.ndarray], maps: FrameBuffer,
                    fps: float | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from anomalens.data.flow import FlowStream, rate_scale, scale_flow, still_texture

        v = self.video
        flows = FlowStream(v["flow_preset"])
        scale = rate_scale(v.get("training_fps"), fps)  # pixels per frame of the training footage (motion_per_second)
        still_weight = float(v.get("still_texture_weight", 0.0))  # absent in bundles exported before it existed
        still_counted = bool(v.get("still_texture_counted", still_weight > 0))  # false: the gate zeroes it everywhere
        appearance_cue, motion_cue = [], []
        # a model with a codec memory (codec_memory) feeds it to the appearance graph, whose distances to it go on
        # to the motion graph; bundles exported before it existed have neither
        memories = {name: self.constants[name] for name in ("appearance_memory", "codec_memory") if name in self.constants}
        for batch in _batches(frames, int(v["batch_size"])):
            out = self.engines["appearance"].run({"images": batch, **memories})
            appearance, greys = out["appearance"], out["greys"]
            flow = [scale_flow(flows.push(grey), scale) for grey in greys]
            if flow[0] is None:  # the first frame of the video borrows the second's motion, as the library does
                flow[0] = flow[1] if len(flow) > 1 else np.zeros((2, *v["flow_size"]), np.float32)
            inputs = {"flow": np.stack(flow), "appearance": appearance, "motion_memory": self.constants["motion_memory"]}
            if still_counted:
                inputs["still"] = np.stack([still_texture(g, f, still_weight) for g, f in zip(greys, flow)])
            elif still_weight > 0:
                inputs["still"] = np.zeros((len(flow), *v["flow_size"]), np.float32)
            if "coded" in out:
                inputs["coded"] = out["coded"]
            if "codec_motion_memory" in self.constants:  # motion_codec_memory; absent in bundles exported before it
                inputs["codec_motion_memory"] = self.constants["codec_motion_memory"]
            out = self.engines["motion"].run(inputs)
            appearance_cue.append(out["appearance_cue"])
            motion_cue.append(out["motion_cue"])
            maps.append(out["maps"].astype(np.float16))
        if not maps.count:
            raise DataError("the video has no frames")
        kernel = np.asarray(v["temporal_kernel"], dtype=np.float64)
        # the median, the cap and the spill are absent in bundles exported before them: the Gaussian alone, as then
        median, cap, spill = int(v.get("temporal_median", 1)), v.get("temporal_cap"), v.get("temporal_spill") or {}
        cues = {name: smooth_scores(np.concatenate(values), kernel, median, cap, spill.get(name))
                for name, values in (("appearance", appearance_cue), ("motion", motion_cue))}
        return cues["appearance"] + cues["motion"], cues

    # ---- convlstm: windows on the model's stride, each frame's maps averaged over its windows ---------------
    def _convlstm(self, frames: Iterator[np.ndarray], maps: FrameBuffer) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        length, stride = int(self.video["sequence_length"]), int(self.video["stride"])
        buffer: deque[np.ndarray] = deque(maxlen=length)
        pending: dict[int, list] = {}  # frame index -> [sum of its windows' maps, number of windows]
        scores: list[float] = []
        done = total = 0  # frames before `done` are finished: later windows no longer change them
        last_start = -1
        for index, frame in enumerate(frames):
            buffer.append(frame)
            total = index + 1
            start = index - length + 1
            if start >= 0 and start % stride == 0:
                self._window(buffer, start, pending, done)
                last_start = start
                done = start + stride
                _finish(pending, done, scores, maps)
        if total < length:
            raise DataError(f"the video has {total} frames, fewer than the model's sequence_length {length}")
        if last_start + length < total:  # frames after the last window on the stride: one window flush with the end
            self._window(buffer, total - length, pending, done)
        _finish(pending, total, scores, maps)
        return np.asarray(scores, dtype=np.float32), {}

    def _window(self, buffer: deque, start: int, pending: dict[int, list], done: int) -> None:
        window = np.ascontiguousarray(np.stack(buffer).transpose(0, 3, 1, 2)[None])
        errors = self.engines["window"].run({"window": window})["errors"]
        for offset in range(max(0, done - start), len(buffer)):  # finished frames keep their score
            entry = pending.setdefault(start + offset, [0.0, 0])
            entry[0] = entry[0] + errors[offset]
            entry[1] += 1


def _finish(pending: dict[int, list], before: int, scores: list[float], maps: FrameBuffer) -> None:
    for index in sorted(i for i in pending if i < before):
        total, count = pending.pop(index)
        error_map = (total / count).astype(np.float32)
        scores.append(float(error_map.max()))
        maps.append(error_map.astype(np.float16)[None])


def _batches(frames: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """``(B, 3, H, W)`` ``uint8`` batches; the first holds at least two frames (the first frame borrows the
    second's motion)."""
    batch: list[np.ndarray] = []
    first = True
    for frame in frames:
        batch.append(frame)
        if len(batch) >= (max(2, size) if first else size):
            yield np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2))
            batch, first = [], False
    if batch:
        yield np.ascontiguousarray(np.stack(batch).transpose(0, 3, 1, 2))
