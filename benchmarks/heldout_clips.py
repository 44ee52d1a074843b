"""Leave-clips-out check of the default video model on normal clips it never saw, without any test set.

The training clips of a category (UCSD Ped2's, or the project's synthetic conveyor) are split by whole clips:
``--train-clips`` train the model (with the usual held-out validation clips among them, as ``train-video``
does), the remaining clips are held out. Reported on the held-out clips:

* **false alarms**: the share of their (normal) frames above the saved threshold, beside its target;
* **an AUROC proxy**: synthetic anomalies inserted into copies of the held-out clips, each kind's anomalous
  frames against all normal held-out frames (pooled): a ``foreign_object`` (a grey blob crossing the scene
  slowly), a ``speed_change`` (a stretch played 1.5 times faster) and a ``fast_person`` (a person cut from another
  held-out clip, found without labels, crossing at a cyclist's pace); on the synthetic conveyor its own four
  kinds are rendered instead;
* what the scores can do at low false-alarm rates: the share of each kind's frames found while at most 1% and 5%
  of the held-out normal frames are flagged (the best threshold for that);
* the share of inserted anomalous frames found at the saved threshold.

No test clip is read: it is how model settings are chosen without touching Ped2's test set.

``--variant KEY=VALUE[,KEY=VALUE]`` (repeatable) also reports, for scoring settings that act on the cell maps
(``typical_motion_ceiling``...), the same AUROC proxies and low-rate figures replayed on the same maps
(``reencode.FrameScoreRecorder``), and how many frames of the validation, held-out and inserted clips the variant
scores differently at all: 0 in every group means it changes no score and no threshold there.

    PYTHONPATH=src python benchmarks/heldout_clips.py --source ucsd_ped2 --data-dir ../shared/data \
        --model-setting flow_min_contrast=4 --output /tmp/heldout.json

Slow on a CPU (minutes per run: one training run and the held-out clips four times).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from anomalens.data.synthetic_video import ANOMALY_TYPES, synthetic_clip
from anomalens.data.video_datasets import discover_video_category
from anomalens.metrics.classification import image_auroc
from anomalens.metrics.threshold import calibrate
from anomalens.models.base import create_detector
from anomalens.progress import Reporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reencode import FrameScoreRecorder, model_settings, variant_settings  # noqa: E402  (the sibling benchmark)

# Inserted anomalies are kept subtle, so that settings can be told apart (a fast, coloured blob or a 2.5x speed-up
# gave a frame AUROC of 1.000 on Ped2 whatever the settings): a grey blob at about walking speed, and a stretch
# played 1.5x faster (Ped2's skateboarders and cyclists are about that much faster than its pedestrians)
SPEED_FACTOR = 1.5
BLOB_GREY = 60.0  # the grey level of the inserted object (Ped2's pedestrians are dark grey too)


class ListClip(list):
    """Preprocessed frames held in memory, re-iterable like a clip, with a name for messages."""

    def __init__(self, frames, name: str) -> None:
        super().__init__(frames)
        self.name = name


def insert_foreign_object(frames: list[torch.Tensor], rng: np.random.Generator,
                          **_) -> tuple[list[torch.Tensor], np.ndarray]:
    """A grey blob (radius 5% of the height) crossing the frame slowly, from a quarter of the clip to its end."""
    n = len(frames)
    _, h, w = frames[0].shape
    start = int(rng.integers(n // 6, n // 3))
    end = n
    radius, y = 0.05 * h, rng.uniform(0.35, 0.75) * h
    speed = (w + 4 * radius) / (end - start)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out, labels = [f.clone() for f in frames], np.zeros(n, np.int64)
    for t in range(start, end):
        x = -2 * radius + speed * (t - start)
        inside = torch.from_numpy((xx - x) ** 2 + ((yy - y) * 1.3) ** 2 <= radius * radius)
        if inside.sum() < 6:
            continue
        colour = torch.full((3, 1), BLOB_GREY + float(rng.normal(0, 4)))
        out[t][:, inside] = colour.clamp(0, 255).to(torch.uint8)
        labels[t] = 1
    return out, labels


def insert_speed_change(frames: list[torch.Tensor], rng: np.random.Generator,
                        **_) -> tuple[list[torch.Tensor], np.ndarray]:
    """A stretch of the clip played ``SPEED_FACTOR`` times faster (frames skipped), the rest as it was."""
    n = len(frames)
    start = int(rng.integers(n // 6, n // 3))
    span = max(8, n // 4)
    fast = [frames[min(n - 1, start + int(round(SPEED_FACTOR * i)))] for i in range(span)]
    resume = min(n, start + int(round(SPEED_FACTOR * span)))
    out = frames[:start] + fast + frames[resume:]
    labels = np.zeros(len(out), np.int64)
    labels[start : start + span] = 1
    return out, labels


def cut_person(frames: list[torch.Tensor], rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray, int, int]:
    """A moving person cut from one of ``frames``, found without labels: the largest blob of one person's size that
    differs from the clip's median frame by more than :data:`FOREGROUND_LEVEL` grey levels. Returns the patch ``(3, ph, pw)``,
    its mask ``(ph, pw)`` and where its top-left corner stood ``(row, col)``."""
    from scipy import ndimage  # a dependency of scikit-image; only this benchmark needs it

    greys = torch.stack(frames).float().mean(dim=1).numpy()  # (T, H, W)
    background = np.median(greys[:: max(1, len(frames) // 40)], axis=0)
    h = greys.shape[1]
    for t in rng.permutation(len(frames)):
        mask = ndimage.binary_closing(np.abs(greys[t] - background) > FOREGROUND_LEVEL, iterations=2)
        blobs, count = ndimage.label(mask)
        if not count:
            continue
        sizes = ndimage.sum(mask, blobs, range(1, count + 1))
        for best in np.argsort(sizes)[::-1] + 1:  # the largest blob that is one person, not a group or a speck
            rows, cols = ndimage.find_objects(blobs)[best - 1]
            tall, wide = rows.stop - rows.start, cols.stop - cols.start
            if sizes[best - 1] >= 60 and 0.08 * h <= tall <= 0.2 * h and wide <= tall:
                patch = frames[t][:, rows, cols].clone()
                return patch, ndimage.binary_fill_holes(blobs[rows, cols] == best), rows.start, cols.start
    raise RuntimeError("no person found in the donor clip")


def insert_fast_person(frames: list[torch.Tensor], rng: np.random.Generator, donor: list[torch.Tensor] | None = None,
                       **_) -> tuple[list[torch.Tensor], np.ndarray]:
    """A person cut from another training clip (``donor``) crossing the frame at :data:`PERSON_SPEED`, where it
    stood in the donor (so its size fits the perspective), from a quarter of the clip on: Ped2's cyclists and
    skateboarders look like people and move faster. The pasted person does not move its limbs."""
    patch, mask, top, _ = cut_person(donor if donor is not None else frames, rng)
    n = len(frames)
    _, h, w = frames[0].shape
    ph, pw = mask.shape
    speed = PERSON_SPEED * w / 360 * (1 if rng.random() < 0.5 else -1)
    start = int(rng.integers(n // 6, n // 3))
    origin = -pw if speed > 0 else w
    out, labels = [f.clone() for f in frames], np.zeros(n, np.int64)
    keep = torch.from_numpy(mask)
    for t in range(start, n):
        left = int(round(origin + speed * (t - start)))
        lo, hi = max(0, left), min(w, left + pw)
        if hi - lo < pw * 0.3:
            if (speed > 0 and lo >= w) or (speed < 0 and hi <= 0):
                break
            continue
        region = out[t][:, top : top + ph, lo:hi]
        inside = keep[: region.shape[1], lo - left : hi - left]
        region[:, inside] = patch[:, : region.shape[1], lo - left : hi - left][:, inside]
        labels[t] = 1
    return out, labels


LOW_FPRS = (0.01, 0.05)  # shares of held-out normal frames flagged at which the found share is reported
FOREGROUND_LEVEL = 30.0  # grey levels from the median frame that count as a moving person (cut_person)
PERSON_SPEED = 4.0  # pixels per frame at 360 px width: a cyclist's pace, chosen by eye (Ped2's frames are 360 wide)

INSERTIONS = {"foreign_object": insert_foreign_object, "speed_change": insert_speed_change,
              "fast_person": insert_fast_person}


def found_at_fpr(normal: np.ndarray, anomalous: np.ndarray, fpr: float) -> float:
    """The share of ``anomalous`` scores above the lowest threshold that flags at most ``fpr`` of ``normal``: how
    many anomalous frames the scores can find at that false-alarm rate, whatever the saved threshold."""
    ranked = np.sort(np.asarray(normal, np.float64))[::-1]
    allowed = int(np.floor(fpr * ranked.size + 1e-9))
    threshold = ranked[allowed] if allowed < ranked.size else -np.inf
    return float(np.mean(np.asarray(anomalous) > threshold))


def split_clips(clips: list[ListClip], args: argparse.Namespace) -> tuple[list[ListClip], list[ListClip], list[ListClip]]:
    """Training, validation and held-out clips by whole clips (``--split-seed``, ``--heldout-clips``, ``--train-clips``;
    a tenth of the training clips, at least one, validate as ``train-video`` does)."""
    order = np.random.default_rng(args.split_seed).permutation(len(clips))
    heldout = [clips[i] for i in order[: args.heldout_clips]]
    rest = [clips[i] for i in order[args.heldout_clips :]][: args.train_clips]
    n_validation = max(1, int(round(len(rest) * 0.1)))
    validation, train = rest[:n_validation], rest[n_validation:]
    print(f"train {[c.name for c in train]} validation {[c.name for c in validation]} "
          f"held out {[c.name for c in heldout]}", flush=True)
    return train, validation, heldout


def inserted(heldout: list[ListClip], kinds: list[str], rng: np.random.Generator):
    """Per kind, per held-out clip: ``(kind, clip name, frames, labels)`` with the anomaly inserted (a fast person is
    cut from the next held-out clip)."""
    for kind in kinds:
        for i, clip in enumerate(heldout):
            donor = heldout[(i + 1) % len(heldout)]
            frames, labels = INSERTIONS[kind](list(clip), rng, donor=list(donor))
            yield kind, clip.name, frames, labels


def ped2_clips(data_dir: Path, category: str, preprocessing) -> list[ListClip]:
    found = discover_video_category(data_dir, category)
    return [ListClip(list(ref.open(preprocessing)), ref.path.name) for ref in found.train]


def synthetic_clips(count: int, frames: int, size: tuple[int, int], seed: int, preprocessing) -> list[ListClip]:
    seeds = np.random.SeedSequence(seed).generate_state(count)
    out = []
    for i, s in enumerate(seeds):
        raw = synthetic_clip(int(s), frames, size)[0]
        out.append(ListClip([preprocessing.prepare_array(f) for f in raw], f"synthetic_{i:02d}"))
    return out


def run(args: argparse.Namespace) -> dict:
    settings = model_settings(args.model_setting)
    if args.image_size:
        settings["image_size"] = tuple(args.image_size)
    # the threshold from the folds is computed beside the plain one, from the same fit
    settings["threshold_from_folds"] = True
    detector = create_detector("stfeatures", seed=args.seed, **settings)
    started = time.perf_counter()
    if args.source == "synthetic":
        clips = synthetic_clips(args.train_clips + args.heldout_clips, args.frames, tuple(args.synthetic_size), args.seed,
                                detector.preprocessing)
    else:
        clips = ped2_clips(args.data_dir, args.source, detector.preprocessing)
    train, validation, heldout = split_clips(clips, args)
    detector.fit_clips(train, validation, reporter=Reporter(show_tqdm=False))
    fit_seconds = time.perf_counter() - started
    variants = {text: variant_settings(text) for text in getattr(args, "variant", None) or []}
    recorder = FrameScoreRecorder(detector) if variants else None
    # per variant: its replayed scores (held-out normal, anomalous per kind) and the frames it changes per group
    replayed = {text: {"normal": [], "anomalous": {}, "changed": {"validation": 0, "held_out": 0, "inserted": 0}}
                for text in variants}

    def replay(group: str, scores: np.ndarray, kind: str | None = None, labels: np.ndarray | None = None) -> None:
        if recorder is None:
            return
        batches = recorder.take()
        for text, settings_v in variants.items():
            again = recorder.replay(batches, settings_v)
            replayed[text]["changed"][group] += int(np.sum(again != scores))
            if group == "held_out":
                replayed[text]["normal"].append(again)
            elif group == "inserted":
                replayed[text]["anomalous"].setdefault(kind, []).append(again[labels == 1])
    # the two thresholds: held-out validation clips alone, and with the cross-validated training frames
    validation_scores = []
    for c in validation:
        validation_scores.append(detector.predict_clip(c, views=False).scores)
        replay("validation", validation_scores[-1])
    plain = calibrate(np.concatenate(validation_scores), series_lengths=[len(s) for s in validation_scores])
    thresholds = {"validation_clips": plain.threshold, "with_folds": detector.calibration_.threshold}
    shift = detector.calibration_.fold_shift
    cross = detector._cross_validated_scores()
    if shift and cross is not None:
        # the threshold the folds gave before their bias was taken off (fold_shift), on the same scale: the model's
        # scores were lower by the shift (the cues' means stood higher), the cross-fitted frames the same
        lengths = [len(s) for s in validation_scores] + list(cross[1])
        uncorrected = calibrate(np.concatenate([np.concatenate(validation_scores) - shift, cross[0]]), series_lengths=lengths)
        thresholds["with_folds_uncorrected"] = uncorrected.threshold + shift

    normal_scores, anomalous = [], {}
    rng = np.random.default_rng(args.seed)
    for clip in heldout:
        normal_scores.append(detector.predict_clip(clip, views=False).scores)
        replay("held_out", normal_scores[-1])
    if args.source == "synthetic":
        seeds = np.random.SeedSequence(args.seed + 1000).generate_state(len(heldout))
        for kind in args.kinds or ANOMALY_TYPES:
            for s in seeds:
                raw, labels = synthetic_clip(int(s), args.frames, tuple(args.synthetic_size), kind)
                clip = ListClip([detector.preprocessing.prepare_array(f) for f in raw], kind)
                scores = detector.predict_clip(clip, views=False).scores
                anomalous.setdefault(kind, []).append(scores[labels == 1])
                replay("inserted", scores, kind, labels)
    else:
        for kind, _, frames, labels in inserted(heldout, args.kinds or list(INSERTIONS), rng):
            scores = detector.predict_clip(ListClip(frames, kind), views=False).scores
            anomalous.setdefault(kind, []).append(scores[labels == 1])
            replay("inserted", scores, kind, labels)
    normal = np.concatenate(normal_scores)
    per_clip_flagged = {}
    report: dict = {"source": args.source, "settings": {k: v for k, v in settings.items() if k != "threshold_from_folds"},
                    "held_out_clips": [c.name for c in heldout], "held_out_frames": int(normal.size),
                    "target_fpr": plain.target_fpr, "fold_shift": detector.calibration_.fold_shift, "fit_seconds": round(fit_seconds, 1), "per_kind_frame_auroc": {},
                    "thresholds": {}}
    for kind, parts in anomalous.items():
        bad = np.concatenate(parts)
        labels = np.r_[np.zeros(normal.size), np.ones(bad.size)]
        report["per_kind_frame_auroc"][kind] = round(image_auroc(labels, np.r_[normal, bad]), 4)
        # what the scores can do at low false-alarm rates, whatever the threshold (the saved one's figures follow)
        for fpr in LOW_FPRS:
            found = round(100 * found_at_fpr(normal, bad, fpr), 1)
            report.setdefault(f"found_percent_at_{fpr:.0%}_flagged", {})[kind] = found
    for name, threshold in thresholds.items():
        for clip, scores in zip(heldout, normal_scores):
            per_clip_flagged[clip.name] = round(100.0 * float(np.mean(scores > threshold)), 1)
        report["thresholds"][name] = {
            "threshold": round(float(threshold), 3),
            "held_out_normal_flagged_percent": round(100.0 * float(np.mean(normal > threshold)), 2),
            "per_clip_flagged_percent": dict(per_clip_flagged),
            "inserted_found_percent": {k: round(100.0 * float(np.mean(np.concatenate(v) > threshold)), 1)
                                       for k, v in anomalous.items()},
        }
    for text, found in replayed.items():
        held = np.concatenate(found["normal"])
        entry: dict = {"settings": variants[text], "frames_changed": found["changed"], "per_kind_frame_auroc": {}}
        for kind, parts in found["anomalous"].items():
            bad = np.concatenate(parts)
            entry["per_kind_frame_auroc"][kind] = round(image_auroc(np.r_[np.zeros(held.size), np.ones(bad.size)],
                                                                    np.r_[held, bad]), 4)
            for fpr in LOW_FPRS:
                entry.setdefault(f"found_percent_at_{fpr:.0%}_flagged", {})[kind] = round(100 * found_at_fpr(held, bad, fpr), 1)
        entry["held_out_normal_flagged_percent"] = round(100.0 * float(np.mean(held > detector.calibration_.threshold)), 2)
        report.setdefault("variants", {})[text] = entry
    report["seconds"] = round(time.perf_counter() - started, 1)
    if args.output:  # the raw scores, to compare threshold rules without refitting
        cross_fitted, cross_fitted_lengths = detector._cross_validated_scores() or (np.zeros(0), [])
        np.savez(args.output.with_suffix(".npz"), validation=np.concatenate(validation_scores),
                 validation_lengths=[len(s) for s in validation_scores], cross_fitted=cross_fitted,
                 cross_fitted_lengths=cross_fitted_lengths,
                 held_out=normal, held_out_lengths=[len(s) for s in normal_scores],
                 **{f"anomalous_{k}": np.concatenate(v) for k, v in anomalous.items()})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="ucsd_ped2", help="a video category under --data-dir, or 'synthetic'")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--train-clips", type=int, default=12, help="clips for training and validation (the rest held out)")
    parser.add_argument("--heldout-clips", type=int, default=4)
    parser.add_argument("--split-seed", type=int, default=0, help="which clips are held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="*", default=None, help="anomaly kinds to insert (default: all)")
    parser.add_argument("--frames", type=int, default=90, help="synthetic: frames per clip")
    parser.add_argument("--synthetic-size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--model-setting", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="also report the figures with these scoring settings, replayed on the same cell maps; repeatable")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=1), flush=True)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
