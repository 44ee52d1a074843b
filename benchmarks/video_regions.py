"""Do a video event's regions sit on the anomaly? The default map ("shortfall") against the summed map of older models.

Trains the default video model (as ``anomalens train-video`` does) or loads a run, scores every test clip once and
keeps both maps of every frame (the model's own and the summed standardised cue maps, the same scores). For each
frame above the threshold whose ground truth marks anomalous pixels, and for each event whose peak frame does, the
regions are cut as events cut them (half the map's excess over the threshold, ``metrics.regions.half_excess_level``)
in the frame's own pixels, and compared with the ground truth:

* ``peak_on_anomaly``: the largest region's peak lies on an anomalous pixel (the mask widened by one map cell,
  8 pixels, since a cell is the map's resolution);
* ``box_on_anomaly``: the largest region's box holds an anomalous pixel;
* ``precision`` / ``recall``: of the pixels of all regions, the share on the anomaly; of the anomaly's pixels, the
  share inside a region (pooled over frames).

Ground truth: UCSD Ped2's pixel masks (``testing/gt_masks``; reading them is a read of Ped2's test set, count it);
on the synthetic conveyor (``--category synthetic``, generated, no data needed) the foreign object's and the green
part's pixels by their colour, and the belt for a stop or a speed change; or, reading no test clip
(``--category ped2-inserted``), Ped2's *training* clips split as ``benchmarks/heldout_clips.py`` splits them, the
model trained on 12 and the 4 held-out clips given its inserted anomalies (a grey blob, a person cut from another
clip crossing at a cyclist's pace), whose pixels are those the insertion changed.

    PYTHONPATH=src python benchmarks/video_regions.py --category synthetic --output /tmp/regions_synthetic.json
    PYTHONPATH=src python benchmarks/video_regions.py --data-dir ../shared/data --category ped2-inserted --output /tmp/regions_inserted.json
    PYTHONPATH=src python benchmarks/video_regions.py --data-dir ../shared/data --category ucsd_ped2 --output /tmp/regions_ped2.json
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
from PIL import Image
from scipy import ndimage

from anomalens.data.synthetic_video import _FOREIGN_RGB, _GREEN_RGB, DEFAULT_VIDEO_CATEGORY, make_synthetic_video_dataset
from anomalens.data.video_datasets import discover_video_category
from anomalens.metrics.regions import find_regions, half_excess_level, mask_at_size
from anomalens.models.base import load_detector
from anomalens.models.video.stfeatures import UNUSUAL_CUE, shortfall_map
from anomalens.progress import Reporter
from anomalens.workflows.train import train_video_model

CELL = 8  # pixels of the appearance grid (the backbone's stride): the map's resolution


def higher_shortfall(score, appearance, motion, a_value, m_value):
    """The rule tried first: the higher of the unusual cues' shortfall maps (each at the frame's score at its own
    strongest cell, so both cues' strongest cells peak at the score wherever they lie)."""
    a_counts = ((a_value >= UNUSUAL_CUE) | (a_value >= m_value))[:, None, None]
    m_counts = ((m_value >= UNUSUAL_CUE) | (m_value > a_value))[:, None, None]
    a_short = score[:, None, None] - (appearance.flatten(1).amax(dim=1)[:, None, None] - appearance)
    m_short = score[:, None, None] - (motion.flatten(1).amax(dim=1)[:, None, None] - motion)
    return torch.where(a_counts & m_counts, torch.maximum(a_short, m_short), torch.where(a_counts, a_short, m_short))


RULES = {
    "shortfall": shortfall_map,  # the library's default
    "higher_shortfall": higher_shortfall,
    "sum": lambda score, appearance, motion, a_value, m_value: appearance + motion,  # models saved before
}


def synthetic_truth(frame: np.ndarray, kind: str) -> np.ndarray:
    """The anomalous pixels of a synthetic conveyor frame of anomaly ``kind`` (found without the generator)."""
    if kind == "foreign_object":
        return np.linalg.norm(frame.astype(float) - _FOREIGN_RGB, axis=2) < 60
    if kind == "colour_change":
        return np.linalg.norm(frame.astype(float) - _GREEN_RGB, axis=2) < 60
    truth = np.zeros(frame.shape[:2], bool)  # a stop or a speed change: the belt (data/synthetic_video.py's rows)
    truth[int(frame.shape[0] * 0.32):int(frame.shape[0] * 0.80)] = True
    return truth


def ped2_truth(root: Path, clip: str, count: int) -> list[np.ndarray]:
    folder = root / "testing" / "gt_masks" / f"Test{int(clip):03d}_gt"
    return [np.asarray(Image.open(folder / f"{i + 1:03d}.png").convert("L")) > 127 for i in range(count)]


class Tally:
    def __init__(self) -> None:
        self.count = self.peak_hits = self.box_hits = 0
        self.region_pixels = self.region_on = self.truth_pixels = self.truth_covered = 0

    def add(self, raw_map: np.ndarray, threshold: float, truth: np.ndarray) -> None:
        size = truth.shape
        level = half_excess_level(raw_map, threshold)
        regions = find_regions(raw_map, level, image_size=size)
        self.count += 1
        self.truth_pixels += int(truth.sum())
        if not regions:
            return
        widened = ndimage.binary_dilation(truth, iterations=CELL)
        top = regions[0]
        self.peak_hits += bool(widened[top.peak_y, top.peak_x])
        self.box_hits += bool(truth[top.y:top.y + top.height, top.x:top.x + top.width].any())
        inside = mask_at_size(raw_map > level, size)
        self.region_pixels += int(inside.sum())
        self.region_on += int((inside & truth).sum())
        self.truth_covered += int((inside & truth).sum())

    def report(self) -> dict:
        share = lambda a, b: round(a / b, 4) if b else None  # noqa: E731
        return {"count": self.count, "peak_on_anomaly": share(self.peak_hits, self.count),
                "box_on_anomaly": share(self.box_hits, self.count),
                "precision": share(self.region_on, self.region_pixels), "recall": share(self.truth_covered, self.truth_pixels)}


def test_clips(data_dir: Path, category: str, preprocessing, ped2: bool):
    """``(name, clip, truth masks)`` of each test clip of a category (Ped2's masks, or the synthetic conveyor's)."""
    for ref in discover_video_category(data_dir, category).test:
        native = list(ref.open(None).iter_native())
        if ped2:
            truths = ped2_truth(data_dir / category, ref.path.name, len(native))
        else:
            truths = [synthetic_truth(frame, ref.path.parent.name) for frame in native]
        yield ref.name, ref.open(preprocessing), truths


def inserted_ped2(data_dir: Path):
    """The default model trained on 12 of Ped2's training clips (``heldout_clips.py``'s split 0), and its 4 held-out
    clips with a blob and a fast person inserted: ``(detector, [(name, frames, truth masks)])``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from heldout_clips import inserted, ped2_clips, split_clips  # the sibling benchmark

    from anomalens.models.base import create_detector

    detector = create_detector("stfeatures")
    clips = ped2_clips(data_dir, "ucsd_ped2", detector.preprocessing)
    train, validation, heldout = split_clips(clips, argparse.Namespace(split_seed=0, heldout_clips=4, train_clips=12))
    detector.fit_clips(train, validation, reporter=Reporter(show_tqdm=False))
    out = []
    for kind, name, frames, _ in inserted(heldout, ["foreign_object", "fast_person"], np.random.default_rng(0)):
        original = next(c for c in heldout if c.name == name)
        # the inserted object's pixels: those the insertion changed (model size = Ped2's own, 240x360)
        truths = [(f != o).any(dim=0).numpy() for f, o in zip(frames, original)]
        out.append((f"{kind}/{name}", frames, truths))
    return detector, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="holds the category (not for 'synthetic')")
    parser.add_argument("--category", required=True, help="ucsd_ped2, or synthetic (the generated conveyor)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a trained run instead of training one")
    parser.add_argument("--seed", type=int, default=0, help="the synthetic conveyor's seed")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="anomalens_regions_"))
    data_dir, category = args.data_dir, args.category
    if category == "synthetic":
        data_dir, category = work / "data", DEFAULT_VIDEO_CATEGORY
        make_synthetic_video_dataset(data_dir, category, n_train=6, n_test=10, n_frames=80, size=(192, 256), seed=args.seed)
    if category == "ped2-inserted":
        detector, clips = inserted_ped2(data_dir)
    elif args.checkpoint is not None:
        detector = load_detector(args.checkpoint, kind="video")
    else:
        detector = train_video_model(data_dir, category, results_dir=work / "results", run_name="regions",
                                     reporter=Reporter(show_tqdm=False)).detector
    threshold = float(detector.calibration_.threshold)
    kept: dict[str, list[np.ndarray]] = {rule: [] for rule in RULES}
    own_map = detector._anomaly_map

    def every_rule(appearance, motion, a_score, m_score):  # one pass keeps each rule's map of the same frames
        a_mean, a_std, m_mean, m_std = detector.standardisation_.tolist()
        cells = detector._standardised_cells(appearance, motion)
        values = ((a_score - a_mean) / a_std, (m_score - m_mean) / m_std)
        score = detector._combined(a_score, m_score)
        for rule, make in RULES.items():
            kept[rule].append(make(score, *cells, *values).numpy().astype(np.float16))
        return own_map(appearance, motion, a_score, m_score)

    detector._anomaly_map = every_rule  # type: ignore[method-assign]
    tallies = {rule: {"frames": Tally(), "events": Tally()} for rule in RULES}
    from anomalens.metrics.events import calibrated_events

    if category != "ped2-inserted":
        clips = test_clips(data_dir, category, detector.preprocessing, args.category == "ucsd_ped2")
    for name, clip, truths in clips:
        for maps in kept.values():
            maps.clear()
        prediction = detector.predict_clip(clip, views=False)
        maps = {rule: np.concatenate(kept[rule]) for rule in RULES}
        peaks = {e["peak_frame"] for e in calibrated_events(prediction.scores, detector.calibration_, getattr(clip, "fps", 25.0))}
        for index, score in enumerate(prediction.scores):
            if score <= threshold or not truths[index].any():
                continue
            for rule, rule_maps in maps.items():
                frame_map = rule_maps[index].astype(np.float32)
                tallies[rule]["frames"].add(frame_map, threshold, truths[index])
                if index in peaks:
                    tallies[rule]["events"].add(frame_map, threshold, truths[index])
        print(name, {rule: t["frames"].report() for rule, t in tallies.items()}, flush=True)
    report = {"category": args.category, "threshold": threshold, "grid": list(detector.grid),
              "rules": {rule: {k: t.report() for k, t in kinds.items()} for rule, kinds in tallies.items()},
              "seconds": round(time.perf_counter() - started, 1)}
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
