"""Do the typical-appearance ceiling and the codec memory touch footage like the training data? A check that reads
no labels.

Trains the default video model on a category's normal training clips (as ``anomalens train-video`` does), or loads
a trained run, then scores every *test* clip and counts the frames whose typical (median) appearance cell distance
lies above the ceiling saved with the model, i.e. the frames whose score ``typical_appearance_ceiling`` changes,
and the largest change (standardised units, before smoothing in time; smoothing only averages these). The codec
memory (``codec_memory``) counts only for those same frames (its weight is 0 at or below the ceiling), and the
clean memories, standardisation, ceiling and threshold of a model with it are bit for bit those of one without
(tests/test_video_codec.py), so zero frames changed means no score changed by either. No frame
label, anomaly type or test metric is read: on a test set this measures what the setting does, not how well it
scores, so it does not count as a read of that test set's results.

    PYTHONPATH=src python benchmarks/typical_shift.py --data-dir ../shared/data --category ucsd_ped2 \
        --output /tmp/typical_shift.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anomalens.data.video_datasets import discover_video_category
from anomalens.models.base import load_detector
from anomalens.models.video.stfeatures import above_ceiling, typical_cell
from anomalens.progress import Reporter
from anomalens.workflows.train import train_video_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--category", required=True)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained run instead of training one")
    parser.add_argument("--results-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.checkpoint is not None:
        detector = load_detector(args.checkpoint, kind="video")
    else:
        results = args.results_dir or Path(tempfile.mkdtemp(prefix="anomalens_typical_"))
        detector = train_video_model(args.data_dir, args.category, results_dir=results, run_name="typical_shift",
                                     reporter=Reporter(show_tqdm=False)).detector
    ceiling = detector.appearance_ceiling_
    if ceiling is None:
        raise SystemExit("this model has no typical-appearance ceiling (typical_appearance_ceiling off or saved before)")
    a_std = float(detector.standardisation_[1])
    seen: list[np.ndarray] = []
    score_frames = detector._frame_scores

    def recording(appearance: torch.Tensor, motion: torch.Tensor, coded: torch.Tensor | None = None):
        seen.append(typical_cell(appearance.flatten(1)).numpy())  # the scorer's own maps, frame by frame
        return score_frames(appearance, motion, coded)

    detector._frame_scores = recording  # type: ignore[method-assign]
    per_clip = {}
    for ref in discover_video_category(args.data_dir, args.category).test:
        seen.clear()
        detector.predict_clip(ref.open(detector.preprocessing), views=False)
        typical = np.concatenate(seen)
        change = above_ceiling(torch.from_numpy(typical), ceiling).numpy() / a_std
        per_clip[ref.name] = {"frames": int(typical.size), "changed": int((change > 0).sum()),
                              "largest_change": round(float(change.max()), 4),
                              "highest_typical": round(float(typical.max()), 4)}
        print(ref.name, per_clip[ref.name], flush=True)
    report = {
        "ceiling": float(ceiling), "appearance_std": a_std,
        "codec_memory": list(getattr(detector.config, "codec_memory", ())),
        "frames": sum(c["frames"] for c in per_clip.values()),
        "frames_changed": sum(c["changed"] for c in per_clip.values()),
        "largest_change_standard_units": max(c["largest_change"] for c in per_clip.values()),
        "highest_typical": max(c["highest_typical"] for c in per_clip.values()),
        "clips": per_clip, "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"ceiling {report['ceiling']:.4f}, highest typical of the clips {report['highest_typical']:.4f}: "
          f"{report['frames_changed']} of {report['frames']} frames changed, largest change "
          f"{report['largest_change_standard_units']:.4f} standard units; {report['seconds']:.0f} s")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
