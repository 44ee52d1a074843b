"""Where would still texture count? The gate of ``still_texture_where_moving``, measured on training clips only.

For every normal *training* clip of a video category, the optical flow and the orientation histograms exactly as
``stfeatures`` keeps them at fit time (every ``frame_step``-th frame), then per motion cell the share of those
frames in which the cell moves (``moving_share``: window mean flow above ``STILL_SPEED``) and the gate that share gives
(``moving_share_gate``: 0 below a share of 0.5, 1 from 0.9). Reads no test clip and no label. Where the gate is 0
in every cell of every clip, the gated still-texture channel is identically zero for any choice of training clips,
so the model scores exactly as without still texture (UCSD Ped2).

    PYTHONPATH=src python benchmarks/still_gate.py --data-dir ../shared/data --category ucsd_ped2 --output /tmp/gate.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from anomalens.data.flow import FlowStream
from anomalens.data.preprocessing import to_float
from anomalens.data.video_datasets import discover_video_category
from anomalens.models.base import create_detector
from anomalens.models.video.motion import grey_frames
from anomalens.models.video.stfeatures import moving_share, moving_share_gate
from anomalens.runtime import write_json_atomic


def clip_histograms(detector, frames: list[torch.Tensor]) -> torch.Tensor:
    """Orientation histograms ``(N, bins, hm, wm)`` of the frames a fit keeps (the first borrows the second's flow)."""
    c = detector.config
    greys = grey_frames(to_float(torch.stack(frames)), detector.flow_size)
    stream = FlowStream(c.flow_preset, c.flow_min_contrast)
    flows = [stream.push(grey) for grey in greys]
    flows[0] = flows[1] if len(flows) > 1 else torch.zeros((2, *detector.flow_size)).numpy()
    keep = range(0, len(flows), c.frame_step)
    return detector.motion_descriptors([flows[i] for i in keep], [greys[i] for i in keep])[:, : c.orientation_bins]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--category", default="ucsd_ped2")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    detector = create_detector("stfeatures")  # default settings: the flow size, cells and frame step of a fit
    found = discover_video_category(args.data_dir, args.category)
    clips, histograms = {}, []
    for ref in found.train:
        hist = clip_histograms(detector, list(ref.open(detector.preprocessing)))
        share = moving_share(hist)
        clips[ref.path.name] = {"frames": len(hist), "highest_moving_share": round(float(share.max()), 4),
                                "gate_max": float(moving_share_gate(hist).max())}
        histograms.append(hist)
        print(ref.path.name, clips[ref.path.name], flush=True)
    gate = moving_share_gate(torch.cat(histograms))
    result = {"category": args.category, "cells": gate.numel(), "cells_with_gate_above_0": int((gate > 0).sum()),
              "gate_mean_all_clips": float(gate.mean()), "clips": clips}
    print(f"all clips: {result['cells_with_gate_above_0']} of {gate.numel()} cells count still texture", flush=True)
    write_json_atomic(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
