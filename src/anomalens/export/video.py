"""The graphs of video bundles: what of ``stfeatures`` and ``convlstm`` runs in ONNX, and what stays outside.

``stfeatures`` (the default video model) becomes two graphs, because optical flow (OpenCV's DIS, an iterative
solver no graph format expresses) sits between them:

* ``appearance.onnx``: ``uint8`` frames -> the input blur and noise-level matching, the backbone's patch features,
  the exact distance of every cell to the appearance memory (a graph input, ``appearance_memory.npy``), the 3x3
  local average -> appearance maps (and, with ``codec_memory``, the same to the memory of re-encoded training patches,
  ``codec_memory.npy``); and the grey frames, area-resized to the flow's size, that the flow is computed on.
* ``motion.onnx``: the flow of each frame and the appearance maps -> per-cell orientation histograms, distances
  to each cell's motion memory (``motion_memory.npy``; with ``motion_codec_memory`` also to the motion of degraded
  training clips, ``codec_motion_memory.npy``), local average -> each cue's share of the frame score
  (standardised, or its tail surprise with ``cue_combination`` "tail") and
  the standardised anomaly map (per-cell sum of both cues, on the appearance grid).

Outside the graphs, in the runtime (:mod:`anomalens.inference.video`): decoding and resizing the frames, the
DIS optical flow between consecutive grey frames (the first frame borrows the second's), the Gaussian smoothing of
each cue's series in time (taps saved in ``bundle.json``), the sum of the cues, and verdicts and events.

``convlstm`` becomes one graph, ``window.onnx``: a window of ``sequence_length`` ``uint8`` frames -> each frame's
squared reconstruction error, pooled to 1/4 and locally averaged. The runtime runs the windows on the model's
stride and averages, per frame, the maps of the windows that cover it; a frame's score is the maximum of that map.

Every module here calls the detector's own code (feature extractor, ``PositionalMemory.distances``,
``_anomaly_map``, ``window_errors``), so the graphs compute what ``analyze-video`` computes.

>>> export_video_graphs(load_detector("results/video_x"), folder)      # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anomalens.data.preprocessing import to_float
from anomalens.models.base import BaseDetector
from anomalens.models.components.kernels import series_kernel
from anomalens.models.components.onnx_backbone import MAX_EXPORT_BATCH, export_onnx_graph
from anomalens.models.components.search import exact_search_block
from anomalens.models.video.motion import grey_tensor, orientation_histograms

VIDEO_EXPORTABLE = ("stfeatures", "convlstm")


class AppearanceGraph(nn.Module):
    """stfeatures: frames ``(B, 3, H, W)`` ``uint8`` and the appearance memory -> local-averaged appearance
    distances ``(B, h, w)`` and grey frames ``(B, hf, wf)`` ``uint8`` for the optical flow."""

    def __init__(self, detector: BaseDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, appearance_memory: torch.Tensor,  # type: ignore[override]
                codec_memory: torch.Tensor | None = None):
        from anomalens.models.video.stfeatures import local_average

        d = self.detector
        frames = to_float(images)
        # the input blur and the noise-level matching (its blurs inside an ONNX If: skipped for a batch with no
        # frame above the limit)
        features = d.extractor(d.backbone_input(frames, shortcut=False))  # type: ignore[attr-defined]
        b, channels, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, channels)
        distances = exact_search_block(queries, appearance_memory, 1)[0].reshape(b, h, w)
        greys = grey_tensor(frames, d.flow_size)  # type: ignore[attr-defined]
        if codec_memory is None:
            return local_average(distances), greys
        coded = exact_search_block(queries, codec_memory, 1)[0].reshape(b, h, w)
        return local_average(distances), greys, local_average(coded)


class MotionGraph(nn.Module):
    """stfeatures: flow ``(B, 2, hf, wf)``, appearance maps ``(B, h, w)`` and the motion memory -> each cue's share
    of the frame scores ``(B,)`` (before smoothing in time; ``_cue_values``) and the standardised map ``(B, h, w)``.

    ``extra`` names the further inputs the model needs, in order (:data:`MOTION_EXTRAS`): ``still`` (the
    still-texture map, still_texture_weight), ``coded`` (the appearance graph's distances to the codec memory) and
    ``codec_motion_memory`` (motion_codec_memory). Given positionally after the first three, so that each model's
    graph has exactly the inputs it uses."""

    def __init__(self, detector: BaseDetector, extra: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.detector = detector
        self.extra = extra

    def forward(self, flow: torch.Tensor, appearance: torch.Tensor, motion_memory: torch.Tensor,  # type: ignore[override]
                first: torch.Tensor | None = None, second: torch.Tensor | None = None, third: torch.Tensor | None = None):
        from anomalens.models.video.stfeatures import PositionalMemory, local_average

        d, c = self.detector, self.detector.config
        given = dict(zip(self.extra, (first, second, third)))
        # still: the still-texture map of each frame (still_texture_weight), computed in the runtime beside the flow
        histograms = orientation_histograms(flow, c.orientation_bins, c.motion_cell, given.get("still"))  # type: ignore[attr-defined]
        # weighted per cell where the training frames moved (still_texture_where_moving): the gate is a constant of the graph
        histograms = d._gate_still(histograms)  # type: ignore[attr-defined]
        motion = local_average(PositionalMemory(motion_memory).distances(histograms))
        # coded, coded_motion: distances to the codec memories, consulted above the ceiling (always searched here;
        # the weight is 0 within the ceiling, where the library skips the search, so the scores are the same)
        coded_motion = None
        if "codec_motion_memory" in given:
            coded_motion = local_average(PositionalMemory(given["codec_motion_memory"]).distances(histograms))
        a_score, m_score = d._frame_scores(appearance, motion, given.get("coded"), coded_motion)  # type: ignore[attr-defined]
        # each cue's share of the frame score (cue_combination), as the library adds them up before smoothing
        appearance_cue, motion_cue = d._cue_values(a_score, m_score)  # type: ignore[attr-defined]
        return appearance_cue, motion_cue, d._anomaly_map(appearance, motion, a_score, m_score)  # type: ignore[attr-defined]


MOTION_EXTRAS = ("still", "coded", "codec_motion_memory")  # the motion graph's optional inputs, in their order


class WindowGraph(nn.Module):
    """convlstm: one window ``(1, T, 3, H, W)`` ``uint8`` -> per-frame error maps ``(T, H/4, W/4)``, locally averaged."""

    def __init__(self, detector: BaseDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, window: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        from anomalens.models.video.stfeatures import local_average

        _, error = self.detector.window_errors(to_float(window))  # type: ignore[attr-defined]
        # the local average is linear: averaging it over windows equals the library's average-then-smooth
        return local_average(error[:, 0])


def video_constant_inputs(detector: BaseDetector) -> dict[str, np.ndarray]:
    """The memories fed to the graphs as inputs (stfeatures), float32."""
    if detector.name != "stfeatures":
        return {}
    constants = {"appearance_memory": detector.appearance_index_.bank.float().numpy(),  # type: ignore[attr-defined]
                 "motion_memory": detector.motion_memory_.bank.float().numpy()}  # type: ignore[attr-defined]
    codec = getattr(detector, "codec_index_", None)
    if codec is not None:
        constants["codec_memory"] = codec.bank.float().numpy()
    codec_motion = getattr(detector, "codec_motion_memory_", None)
    if codec_motion is not None:
        constants["codec_motion_memory"] = codec_motion.bank.float().numpy()
    return constants


def export_video_graphs(detector: BaseDetector, folder: Path) -> dict[str, Any]:
    """Write the graphs of ``detector`` to ``folder``; returns the ``graphs`` and ``video`` parts of ``bundle.json``."""
    detector.device = torch.device("cpu")
    c = detector.config
    height, width = c.image_size
    if detector.name == "convlstm":
        length = int(c.sequence_length)  # type: ignore[attr-defined]
        example = torch.zeros((1, length, 3, height, width), dtype=torch.uint8)
        export_onnx_graph(WindowGraph(detector).eval(), (example,), folder / "window.onnx", ["window"], ["errors"], ({},))
        graphs = {"window": {"file": "window.onnx", "inputs": ["window"], "outputs": ["errors"]}}
        video = {"sequence_length": length, "stride": int(c.stride),  # type: ignore[attr-defined]
                 "map_places_events": True}  # a frame's score is the highest cell of its error map
        return {"graphs": graphs, "video": video}
    memories = {name: torch.from_numpy(array) for name, array in video_constant_inputs(detector).items()}
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    frames = torch.zeros((2, 3, height, width), dtype=torch.uint8)
    appearance_inputs, appearance_outputs = ["images", "appearance_memory"], ["appearance", "greys"]
    if "codec_memory" in memories:  # a second memory, and its distances passed on to the motion graph
        appearance_inputs, appearance_outputs = appearance_inputs + ["codec_memory"], appearance_outputs + ["coded"]
    export_onnx_graph(AppearanceGraph(detector).eval(), tuple(memories.get(n, frames) for n in appearance_inputs),
                      folder / "appearance.onnx", appearance_inputs, appearance_outputs,
                      tuple({0: batch} if n == "images" else {} for n in appearance_inputs))
    flow = torch.zeros((2, 2, *detector.flow_size))  # type: ignore[attr-defined]
    appearance = torch.zeros((2, *detector.grid))  # type: ignore[attr-defined]
    batch = torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH)
    still_weight = float(getattr(c, "still_texture_weight", 0.0))
    examples = {"flow": flow, "appearance": appearance, "motion_memory": memories["motion_memory"],
                "still": torch.zeros((2, *detector.flow_size)),  # type: ignore[attr-defined]
                "coded": torch.zeros((2, *detector.grid)),  # type: ignore[attr-defined]
                "codec_motion_memory": memories.get("codec_motion_memory")}
    present = {"still": still_weight > 0, "coded": "codec_memory" in memories,
               "codec_motion_memory": "codec_motion_memory" in memories}
    extra = tuple(name for name in MOTION_EXTRAS if present[name])
    inputs = ["flow", "appearance", "motion_memory", *extra]
    # the frames' own inputs vary in number, the memories are constants fed whole
    shapes = tuple({0: batch} if name not in ("motion_memory", "codec_motion_memory") else {} for name in inputs)
    export_onnx_graph(MotionGraph(detector, extra).eval(), tuple(examples[name] for name in inputs),
                      folder / "motion.onnx", inputs, ["appearance_cue", "motion_cue", "maps"], shapes)
    graphs = {
        "appearance": {"file": "appearance.onnx", "inputs": appearance_inputs, "outputs": appearance_outputs},
        "motion": {"file": "motion.onnx", "inputs": inputs, "outputs": ["appearance_cue", "motion_cue", "maps"]},
    }
    sigma = float(c.temporal_sigma)  # type: ignore[attr-defined]
    video = {
        "batch_size": int(c.batch_size),
        "flow_size": [int(v) for v in detector.flow_size],  # type: ignore[attr-defined]
        "flow_preset": c.flow_preset,  # type: ignore[attr-defined]
        "still_texture_weight": still_weight,  # 0: the motion graph has no "still" input
        # false when the gate is 0 in every cell: the runtime feeds zeros instead of computing the map
        "still_texture_counted": bool(still_weight > 0 and not getattr(detector, "still_texture_gated_off", False)),
        # the training clips' frame rate (motion_per_second; null: unknown or off): the runtime scales the flow of a
        # video at another known rate by fps / training_fps, as the library does (data/flow.py rate_scale)
        "training_fps": getattr(detector, "training_fps_", None) if getattr(c, "motion_per_second", False) else None,
        "cues": ["appearance", "motion"],
        # the maps' highest cell is the frame's score, where the evidence is (anomaly_map "shortfall"): the runtime
        # gives each event's regions; absent (older bundles) or false: the summed map, which cannot place them
        "map_places_events": bool(getattr(detector, "map_places_events", False)),
        "temporal_sigma": sigma,
        "temporal_kernel": series_kernel(sigma).tolist(),
        # before the taps, a running median of this many frames; the taps smooth only the part of each cue's value up
        # to its spill limit, the part above it passes a running median of 3 (null: all of it); then no frame more
        # than the cap above its own median (null: no cap)
        "temporal_median": int(getattr(c, "temporal_median", 1)),
        "temporal_spill": _spill_limits(detector),
        "temporal_cap": getattr(c, "temporal_cap", None),
    }
    return {"graphs": graphs, "video": video}


def _spill_limits(detector: BaseDetector) -> dict[str, float] | None:
    """Each cue's spill limit as the model smooths with it (learned or set), or None where it spreads all of it."""
    limit = getattr(detector, "spill_limit", None)
    if limit is None or limit("appearance") is None:
        return None
    return {cue: float(limit(cue)) for cue in ("appearance", "motion")}
