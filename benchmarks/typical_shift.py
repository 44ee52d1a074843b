"""Do the typical-appearance ceiling, the codec memories and the low-pass above the ceiling touch footage like the
training data? A check that reads no labels.

Trains the default video model on a category's normal training clips (as ``anomalens train-video`` does), or loads
a trained run, then scores every *test* clip and counts the frames whose typical (median) appearance cell distance
lies above the ceiling saved with the model, i.e. the frames whose score ``typical_appearance_ceiling`` changes,
and the largest change (standardised units, before smoothing in time; smoothing only averages these). The codec
memories (``codec_memory``, ``motion_codec_memory``) and the low-pass above the ceiling (``above_ceiling_lowpass``)
count only for those same frames (their weight is 0 at or below the ceiling), and the clean memories,
standardisation and ceiling of a model with them are bit for bit those of one without (tests/test_video_codec.py,
tests/test_video_motion_codec.py). The threshold also hears the held-out
training clips (``validation_clips`` of the run), scored with the ceiling: they are counted the same way. So zero
frames changed, in the test and the held-out clips, means no score and no threshold changed by any of them. The
same is counted for the noise-level matching (``match_noise_level``): the frames noisier than the model's saved
limit, which alone it low-passes before the appearance backbone (``noise_matched``). No frame
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the scripts share helpers, as when run from here
from reencode import NoiseLevelRecorder  # noqa: E402


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
        detector, run_dir = load_detector(args.checkpoint, kind="video"), args.checkpoint
    else:
        results = args.results_dir or Path(tempfile.mkdtemp(prefix="anomalens_typical_"))
        trained = train_video_model(args.data_dir, args.category, results_dir=results, run_name="typical_shift",
                                    reporter=Reporter(show_tqdm=False))
        detector, run_dir = trained.detector, trained.run_dir
    run_file = next((folder / "run.json" for folder in (run_dir, run_dir.parent) if (folder / "run.json").is_file()), None)
    held_out = set(json.loads(run_file.read_text(encoding="utf-8")).get("validation_clips") or []) if run_file else set()
    ceiling = detector.appearance_ceiling_
    if ceiling is None:
        raise SystemExit("this model has no typical-appearance ceiling (typical_appearance_ceiling off or saved before)")
    a_std = float(detector.standardisation_[1])
    seen: list[np.ndarray] = []
    score_frames = detector._frame_scores

    def recording(appearance: torch.Tensor, motion: torch.Tensor, *coded: torch.Tensor | None):
        seen.append(typical_cell(appearance.flatten(1)).numpy())  # the scorer's own maps, frame by frame
        return score_frames(appearance, motion, *coded)

    detector._frame_scores = recording  # type: ignore[method-assign]
    noise = NoiseLevelRecorder(detector)
    noise_limit = getattr(detector, "noise_limit_", None)
    per_clip, held_out_clips = {}, {}
    found = discover_video_category(args.data_dir, args.category)
    for ref in list(found.test) + [ref for ref in found.train if ref.path.name in held_out]:
        seen.clear()
        noise.take()
        detector.predict_clip(ref.open(detector.preprocessing), views=False)
        typical = np.concatenate(seen)
        change = above_ceiling(torch.from_numpy(typical), ceiling).numpy() / a_std
        into = held_out_clips if ref.path.name in held_out and ref in found.train else per_clip
        into[ref.name] = {"frames": int(typical.size), "changed": int((change > 0).sum()),
                          "largest_change": round(float(change.max()), 4),
                          "highest_typical": round(float(typical.max()), 4), **noise.take()}
        print(ref.name, into[ref.name], flush=True)
    report = {
        "ceiling": float(ceiling), "appearance_std": a_std,
        "codec_memory": list(getattr(detector.config, "codec_memory", ())),
        "above_ceiling_lowpass": getattr(detector.config, "above_ceiling_lowpass", 0),
        "frames": sum(c["frames"] for c in per_clip.values()),
        "frames_changed": sum(c["changed"] for c in per_clip.values()),
        "largest_change_standard_units": max(c["largest_change"] for c in per_clip.values()),
        "highest_typical": max(c["highest_typical"] for c in per_clip.values()),
        "noise_limit": None if noise_limit is None else float(noise_limit),
        "noise_matched": sum(c["noise_matched"] for c in per_clip.values()),
        "highest_noise_level": max((c["highest_noise_level"] for c in per_clip.values()
                                    if c["highest_noise_level"] is not None), default=None),
        "clips": per_clip,
        # the held-out training clips that the threshold hears (scored with the ceiling, as test clips are)
        "held_out_frames": sum(c["frames"] for c in held_out_clips.values()),
        "held_out_frames_changed": sum(c["changed"] for c in held_out_clips.values()),
        "held_out_noise_matched": sum(c["noise_matched"] for c in held_out_clips.values()),
        "held_out_clips": held_out_clips, "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"ceiling {report['ceiling']:.4f}, highest typical of the clips {report['highest_typical']:.4f}: "
          f"{report['frames_changed']} of {report['frames']} frames changed, largest change "
          f"{report['largest_change_standard_units']:.4f} standard units; held-out training clips: "
          f"{report['held_out_frames_changed']} of {report['held_out_frames']} frames changed; noise limit "
          f"{report['noise_limit']}, highest noise level of the clips {report['highest_noise_level']}: "
          f"{report['noise_matched']} test and {report['held_out_noise_matched']} held-out frames low-passed; "
          f"{report['seconds']:.0f} s")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
