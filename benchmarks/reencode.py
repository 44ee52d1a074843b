"""Does the default video model still hold when the same scene arrives in another encoding?

The project's synthetic conveyor (normal clips and one clip per anomaly kind) is rendered once as raw frames and
stored in several encodings. "Seen" ones belong to a family the default's codec memory replays at fit time: H.264
at high and low quality, MJPEG at two qualities (full-range ``yuvj420p`` in an AVI, as many IP cameras and
recorders write it), MPEG-4 Part 2, and H.264 at half and double resolution. "Unseen" ones no training degradation
uses: HEVC at a medium and a low quality, VP9, AV1, MPEG-2, MJPEG 4:2:2 at full range, H.264 with the BT.709
matrix, H.264 at half the frame rate, and VP8, WMV2 and H.263+ (added only after the last design decision, so
that no choice looked at them); they estimate how the model fares on a codec nobody trained against. The
default video model is trained once, with default settings, on the H.264 training clips (``train_video_model``,
the same path as ``anomalens train-video``); each encoding of the test clips is then scored at the saved threshold.

Reported per encoding: whether it is seen, the share of normal frames flagged (all normal frames of all test
clips), and per anomaly kind the frame AUROC of that kind's anomalous frames against all normal frames of the
encoding (pooled, so that an offset of one clip against another counts), the pooled frame AUROC, the median normal
score; and the worst figures over the seen and over the unseen encodings. Where the flagged normal frames lie is
split out (``flagged_normal_frames``): in the normal clips, in an anomaly clip within the temporal smoothing's
reach of an anomalous frame (``round(4 * temporal_sigma)`` frames, where the anomaly's own score spreads), or
elsewhere in an anomaly clip; the headline share counts them all. ``noise_level`` counts the frames (of all test
clips) noisier than the model's saved limit, which ``match_noise_level`` low-passed before the appearance backbone.

``--variant KEY=VALUE[,KEY=VALUE...]`` (repeatable) also reports the same figures for scoring settings that act on
the cell maps (``typical_motion_ceiling``, ``above_ceiling_lowpass``, ``cue_combination``): each batch's maps are
recorded while the model scores and scored again with the setting changed (:class:`FrameScoreRecorder`), the very
arithmetic of ``predict_clip`` on the very same maps, without decoding or searching again. Variants share the
model's threshold (as ``--checkpoint`` with ``--model-setting`` does).

    PYTHONPATH=src python benchmarks/reencode.py --output /tmp/reencode.json

Slow on a CPU (several minutes: one training run and 18 encodings of the test clips; ``--encodings`` picks some).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from anomalens.data.synthetic_video import ANOMALY_TYPES, DEFAULT_VIDEO_CATEGORY, synthetic_clip
from anomalens.data.video_io import encode_video, open_clip
from anomalens.metrics.classification import image_auroc
from anomalens.metrics.drift import assess_drift
from anomalens.models.base import load_detector
from anomalens.progress import Reporter
from anomalens.workflows.train import train_video_model

class Encoding(NamedTuple):
    """How a camera or recorder stores the test clips. ``families`` name what the encoding does in the terms of
    ``models/video/degrade.py`` (``h264``, ``jpeg``, ``mpeg4``, ``scale``) or, where no degradation does it, its own
    name (``hevc``, ``vp9``...): the encoding is "seen" when every family is among the model's ``codec_memory`` and
    ``training_degradations`` kinds, "unseen" otherwise (the honest estimate for a codec nobody trained against)."""

    container: str
    codec: str
    pix_fmt: str
    options: dict[str, str]
    scale: float = 1.0  # of the stored frames
    families: tuple[str, ...] = ("h264",)
    matrix: str = "ITU601"  # YUV matrix written and tagged (the decoder reads the tag)
    frame_step: int = 1  # keep every n-th rendered frame, stored at fps / n (a recorder at a lower frame rate)


_X264 = {"preset": "veryfast"}
_X265 = {"preset": "veryfast", "x265-params": "log-level=error"}
ENCODINGS: dict[str, Encoding] = {
    # families the default's codec memory replays ("seen")
    "h264_high": Encoding("mp4", "libx264", "yuv420p", {"crf": "18", **_X264}),
    "h264_low": Encoding("mp4", "libx264", "yuv420p", {"crf": "35", **_X264}),
    # PyAV ignores ffmpeg's "q:v"; a fixed quantiser is set with qmin = qmax (2 best ... 31 worst)
    "mjpeg_q3": Encoding("avi", "mjpeg", "yuvj420p", {"qmin": "3", "qmax": "3"}, families=("jpeg",)),
    "mjpeg_q12": Encoding("avi", "mjpeg", "yuvj420p", {"qmin": "12", "qmax": "12"}, families=("jpeg",)),
    "mpeg4_part2": Encoding("avi", "mpeg4", "yuv420p", {"qmin": "8", "qmax": "8"}, families=("mpeg4",)),
    "h264_half_res": Encoding("mp4", "libx264", "yuv420p", {"crf": "23", **_X264}, 0.5, ("h264", "scale")),
    "h264_double_res": Encoding("mp4", "libx264", "yuv420p", {"crf": "23", **_X264}, 2.0),
    # encodings no training degradation uses ("unseen")
    "hevc_medium": Encoding("mp4", "libx265", "yuv420p", {"crf": "28", **_X265}, families=("hevc",)),
    "hevc_low": Encoding("mp4", "libx265", "yuv420p", {"crf": "38", **_X265}, families=("hevc",)),
    "vp9": Encoding("webm", "libvpx-vp9", "yuv420p", {"crf": "40", "b": "0", "deadline": "realtime", "cpu-used": "8"},
                    families=("vp9",)),
    "av1": Encoding("mp4", "libsvtav1", "yuv420p", {"crf": "45", "preset": "10"}, families=("av1",)),
    "mpeg2": Encoding("mpeg", "mpeg2video", "yuv420p", {"qmin": "8", "qmax": "8"}, families=("mpeg2",)),
    # 4:2:2 chroma at full range, as some IP cameras write MJPEG (jpeg:Q replays 4:2:0)
    "mjpeg_422_full": Encoding("avi", "mjpeg", "yuvj422p", {"qmin": "8", "qmax": "8"}, families=("jpeg422",)),
    # limited range with the BT.709 matrix (HD cameras); every degradation encodes BT.601
    "h264_bt709": Encoding("mp4", "libx264", "yuv420p", {"crf": "23", **_X264}, families=("h264", "bt709"),
                           matrix="ITU709"),
    # a recorder at half the frame rate: every second frame, at 5 fps (the motion per frame doubles)
    "h264_half_fps": Encoding("mp4", "libx264", "yuv420p", {"crf": "23", **_X264}, families=("h264", "fps"),
                              frame_step=2),
    # added after the low-pass above the ceiling (above_ceiling_lowpass) was chosen on the encodings above, and
    # measured only with the final settings: codecs that no design decision looked at
    "vp8": Encoding("webm", "libvpx", "yuv420p", {"crf": "40", "b": "200k", "deadline": "realtime", "cpu-used": "8"},
                    families=("vp8",)),
    "wmv2": Encoding("asf", "wmv2", "yuv420p", {"qmin": "10", "qmax": "10"}, families=("wmv2",)),
    "h263p": Encoding("avi", "h263p", "yuv420p", {"qmin": "10", "qmax": "10"}, families=("h263",)),
    # added in issue 16's fourteenth round: an IP camera's short group of pictures, a key frame every second (the
    # other encodings have one, the first), so that the quality step between a key frame and the frames predicted
    # from it recurs inside a clip
    "h264_gop10": Encoding("mp4", "libx264", "yuv420p", {"crf": "30", "g": "10", **_X264}, families=("h264", "gop")),
}
TRAINING_ENCODING = Encoding("mp4", "libx264", "yuv420p", {"crf": "23", **_X264})


def seen_families(config) -> set[str]:
    """The degradation kinds a model replayed at fit time (``h264`` of ``h264:35``...)."""
    specs = tuple(getattr(config, "codec_memory", ())) + tuple(getattr(config, "training_degradations", ()))
    return {spec.partition(":")[0] for spec in specs}


def encode(path: Path, frames: list[np.ndarray], fps: float, spec: Encoding) -> Path:
    """Store RGB frames with one encoding (what a camera or recorder would write)."""
    from PIL import Image

    height, width = frames[0].shape[:2]
    size = (int(round(width * spec.scale)) // 2 * 2, int(round(height * spec.scale)) // 2 * 2)
    frames = frames[:: spec.frame_step]
    if spec.scale != 1.0:
        frames = [np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC)) for frame in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    return encode_video(path, frames, fps / spec.frame_step, codec=spec.codec, pix_fmt=spec.pix_fmt,
                        container=spec.container, options=spec.options, matrix=spec.matrix)


def make_clips(n_train: int, n_normal_test: int, n_frames: int, size: tuple[int, int], seed: int):
    """Raw frames: training clips, and test clips (one per anomaly kind, then normal ones) with labels."""
    seeds = np.random.SeedSequence(seed).generate_state(n_train + len(ANOMALY_TYPES) + n_normal_test)
    train = [synthetic_clip(int(s), n_frames, size)[0] for s in seeds[:n_train]]
    kinds = list(ANOMALY_TYPES) + ["normal"] * n_normal_test
    test = []
    for i, (kind, s) in enumerate(zip(kinds, seeds[n_train:])):
        frames, labels = synthetic_clip(int(s), n_frames, size, None if kind == "normal" else kind)
        test.append((f"{kind}_{i:02d}", kind, frames, labels))
    return train, test


def model_settings(items: list[str]) -> dict:
    """``KEY=VALUE`` words -> model settings (values read as JSON where they parse: numbers, true, lists)."""
    settings = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


class NoiseLevelRecorder:
    """Records the noise level (models/components/noise_level.py) of every frame the detector's appearance backbone
    is given, before the matching, so that a report can say how many frames ``match_noise_level`` changed: those
    above the model's saved limit (none for a model without one)."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.levels: list[np.ndarray] = []
        self._backbone_input = detector.backbone_input  # the bound method, before it is wrapped
        detector.backbone_input = self._recording

    def _recording(self, frames: torch.Tensor, record: bool = False, shortcut: bool = True) -> torch.Tensor:
        from anomalens.models.components.kernels import gaussian_blur
        from anomalens.models.components.noise_level import noise_level

        self.levels.append(noise_level(gaussian_blur(frames, self.detector.config.input_blur)).cpu().numpy())
        return self._backbone_input(frames, record, shortcut)

    def take(self) -> dict:
        """The frames recorded since the last call: how many, how many lie above the limit, the highest level."""
        levels = np.concatenate(self.levels) if self.levels else np.zeros(0)
        self.levels = []
        limit = self.detector.noise_limit_
        matched = 0 if not self.detector.matches_noise_level \
            else int((levels.astype(np.float32) > np.float32(float(limit))).sum())  # float32, as the model compares
        return {"noise_measured": int(levels.size), "noise_matched": matched,
                "highest_noise_level": round(float(levels.max()), 4) if levels.size else None}


class FrameScoreRecorder:
    """Records what a detector's frame scores are made from (each batch's locally averaged appearance and motion
    cell maps, and the codec memories' when searched) while it scores, so that scoring settings that act on those
    maps can be replayed on the same frames (:meth:`replay`) without decoding, extracting or searching again."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self.batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = []
        self._frame_scores = detector._frame_scores  # the bound method, before it is wrapped
        detector._frame_scores = self._recording

    def _recording(self, appearance: torch.Tensor, motion: torch.Tensor, coded: torch.Tensor | None = None,
                   coded_motion: torch.Tensor | None = None):
        self.batches.append((appearance.clone(), motion.clone(), None if coded is None else coded.clone(),
                             None if coded_motion is None else coded_motion.clone()))
        return self._frame_scores(appearance, motion, coded, coded_motion)

    def take(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
        """The batches recorded since the last call (one clip's, called after each clip)."""
        batches, self.batches = self.batches, []
        return batches

    def replay(self, batches, settings: dict) -> np.ndarray:
        """A clip's frame scores, smoothed in time as ``predict_clip`` gives them, had the model's config carried
        ``settings``."""
        d = self.detector
        config = d.config
        d.config = dataclasses.replace(config, **settings)
        try:
            parts = [self._frame_scores(*batch) for batch in batches]
            appearance, motion = d._cue_values(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
            return d._in_time(appearance.numpy(), "appearance") + d._in_time(motion.numpy(), "motion")
        finally:
            d.config = config


def validation_changes(detector, recorder: FrameScoreRecorder, variants: dict[str, dict], run_dir: Path,
                       work: Path) -> dict[str, int | None]:
    """Per variant, how many frames of the run's held-out validation clips (which set the threshold) it scores
    differently: 0 means the variant's threshold would be the model's (variants share the model's threshold).
    None where the clips are not in ``work`` (a checkpoint of another work folder)."""
    run_file = next((f / "run.json" for f in (run_dir, run_dir.parent) if (f / "run.json").is_file()), None)
    names = json.loads(run_file.read_text(encoding="utf-8")).get("validation_clips") or [] if run_file else []
    paths = [work / "data" / DEFAULT_VIDEO_CATEGORY / "train" / "normal" / name for name in names]
    if not paths or not all(path.is_file() for path in paths):
        return {text: None for text in variants}
    changed = dict.fromkeys(variants, 0)
    for path in paths:
        recorder.take()
        detector.predict_clip(open_clip(path, detector.preprocessing), views=False)
        batches = recorder.take()
        base = recorder.replay(batches, {})
        for text, settings in variants.items():
            changed[text] += int(np.sum(recorder.replay(batches, settings) != base))
    print("validation frames a variant scores differently (0: its threshold is the model's): "
          + ", ".join(f"{k} {v}" for k, v in changed.items()), flush=True)
    return changed


def variant_settings(text: str) -> dict:
    """``KEY=VALUE,KEY=VALUE`` -> settings (values as in ``--model-setting``)."""
    return model_settings([item for item in text.split(",") if item])


def score_figures(scores: list[np.ndarray], labels: list[np.ndarray], kinds: list[str], threshold: float,
                  reach: int) -> dict:
    """One encoding's figures from its clips' frame scores and labels and each frame's kind."""
    scores_all, labels_all, kinds_all = np.concatenate(scores), np.concatenate(labels), np.array(kinds)
    normal = labels_all == 0
    per_kind = {}
    for kind in ANOMALY_TYPES:
        if not ((kinds_all == kind) & (labels_all == 1)).any():
            continue
        chosen = normal | ((kinds_all == kind) & (labels_all == 1))
        per_kind[kind] = round(image_auroc(labels_all[chosen], scores_all[chosen]), 4)
    where_flagged = {"normal_clips": 0, "near_anomaly": 0, "elsewhere_in_anomaly_clips": 0}
    for clip_scores, clip_labels in zip(scores, labels):
        for place, count in flagged_places(clip_scores, clip_labels, threshold, reach).items():
            where_flagged[place] += count
    return {
        "normal_flagged_percent": round(100.0 * float(np.mean(scores_all[normal] > threshold)), 2),
        "per_kind_frame_auroc": per_kind,
        "pooled_frame_auroc": round(image_auroc(labels_all, scores_all), 4) if 0 < labels_all.sum() < labels_all.size else None,
        "median_normal_score": round(float(np.median(scores_all[normal])), 3),
        "flagged_normal_frames": where_flagged,
    }


def flagged_places(scores: np.ndarray, labels: np.ndarray, threshold: float, reach: int) -> dict[str, int]:
    """Where one clip's flagged normal frames lie: all in ``normal_clips`` for a clip without anomalous frames,
    else ``near_anomaly`` (within ``reach`` frames of an anomalous one) or ``elsewhere_in_anomaly_clips``."""
    labels = np.asarray(labels).astype(bool)
    flagged = (np.asarray(scores) > threshold) & ~labels
    if not labels.any():
        return {"normal_clips": int(flagged.sum())}
    anomalous = np.flatnonzero(labels)
    distance = np.abs(np.arange(labels.size)[:, None] - anomalous[None, :]).min(axis=1)
    near = int((flagged & (distance <= reach)).sum())
    return {"near_anomaly": near, "elsewhere_in_anomaly_clips": int(flagged.sum()) - near}


def worst(records) -> dict:
    """The worst figures over some encodings' records."""
    records = list(records)
    return {
        "normal_flagged_percent": max(r["normal_flagged_percent"] for r in records),
        "per_kind_frame_auroc": min(min(r["per_kind_frame_auroc"].values(), default=1.0) for r in records),
        "pooled_frame_auroc": min((r["pooled_frame_auroc"] for r in records if r["pooled_frame_auroc"] is not None),
                                  default=1.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the encoded clips and the run here")
    parser.add_argument("--train-clips", type=int, default=6)
    parser.add_argument("--normal-test-clips", type=int, default=2)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encodings", nargs="*", default=list(ENCODINGS), choices=list(ENCODINGS))
    parser.add_argument("--train-encoding", default=None, choices=list(ENCODINGS),
                        help="store the training clips in this encoding instead of H.264 CRF 23 (a camera of another "
                             "quality: scored on the others, e.g. trained at h264_gop10 and scored at h264_high)")
    parser.add_argument("--test-kinds", nargs="*", default=None, choices=list(ANOMALY_TYPES) + ["normal"],
                        help="score only these test clips (quicker comparisons)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="score with this trained run instead of training (same clips: same --seed, sizes, counts)")
    parser.add_argument("--model-setting", nargs="*", default=[], metavar="KEY=VALUE",
                        help="model settings to compare against the default (numbers or words); with --checkpoint, "
                             "scoring settings (above_ceiling_lowpass...) that replace the trained model's: the same "
                             "model, memories and threshold scored another way")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="also report the figures with these scoring settings, replayed on the same cell maps "
                             "(typical_motion_ceiling, above_ceiling_lowpass, cue_combination); repeatable")
    args = parser.parse_args(argv)
    os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder prints its whole configuration otherwise
    if args.work_dir is not None:
        return run(args, args.work_dir)
    # the encoded clips and the run are only needed while scoring: a temporary folder goes away afterwards
    with tempfile.TemporaryDirectory(prefix="anomalens_reencode_") as work:
        return run(args, Path(work))


def run(args: argparse.Namespace, work: Path) -> int:
    """Train (or load) the model, score every encoding of the test clips, print and write the report."""
    started = time.perf_counter()
    train, test = make_clips(args.train_clips, args.normal_test_clips, args.frames, tuple(args.size), args.seed)

    settings = model_settings(args.model_setting)
    if args.checkpoint is not None:
        detector = load_detector(args.checkpoint)
        detector.config = dataclasses.replace(detector.config, **settings)
        run_dir = args.checkpoint
    else:
        data_dir = work / "data"
        root = data_dir / DEFAULT_VIDEO_CATEGORY
        for i, frames in enumerate(train):
            spec = ENCODINGS[args.train_encoding] if args.train_encoding else TRAINING_ENCODING
            encode(root / "train" / "normal" / f"train_{i:03d}.{spec.container}", frames, args.fps, spec)
        trained = train_video_model(data_dir, DEFAULT_VIDEO_CATEGORY, results_dir=work / "results", run_name="reencode",
                                    reporter=Reporter(show_tqdm=False), **settings)
        detector = trained.detector
        run_dir = trained.run_dir
    threshold = detector.calibration_.threshold
    print(f"trained in {time.perf_counter() - started:.0f} s; threshold {threshold:.3f}", flush=True)

    variants = {text: variant_settings(text) for text in args.variant}
    recorder = FrameScoreRecorder(detector) if variants else None
    seen = seen_families(detector.config)
    if args.train_encoding and args.checkpoint is None:  # the model's own encoding is seen too
        seen |= set(ENCODINGS[args.train_encoding].families)
    noise = NoiseLevelRecorder(detector) if hasattr(detector, "backbone_input") else None
    if noise is not None and getattr(detector, "noise_limit_", None) is not None:
        print(f"noise limit {float(detector.noise_limit_):.4f} grey levels"
              + ("" if detector.config.match_noise_level else " (match_noise_level off: nothing matched)"), flush=True)
    if recorder is not None:
        report_validation = validation_changes(detector, recorder, variants, run_dir, work)
    reach = int(round(4 * detector.config.temporal_sigma))  # the temporal Gaussian's radius, in frames
    trained_on = "(the checkpoint's)" if args.checkpoint is not None else args.train_encoding or "h264 crf 23"
    report: dict = {"threshold": threshold, "settings": settings, "train_encoding": trained_on,
                    "seen_families": sorted(seen), "encodings": {}}
    if recorder is not None:
        report["variant_validation_frames_changed"] = report_validation
    for name in args.encodings:
        spec = ENCODINGS[name]
        scores, labels, kinds, drifted, cues, deviations = [], [], [], [], {}, []
        if noise is not None:
            noise.take()  # what validation scoring left
        replayed: dict[str, list[np.ndarray]] = {text: [] for text in variants}
        for clip_name, kind, frames, frame_labels in test:
            if args.test_kinds and kind not in args.test_kinds:
                continue
            path = encode(work / "test" / name / f"{clip_name}.{spec.container}", frames, args.fps, spec)
            result = detector.predict_clip(open_clip(path, detector.preprocessing))
            scores.append(result.scores)
            if recorder is not None:
                batches = recorder.take()
                for text, settings_v in variants.items():
                    replayed[text].append(recorder.replay(batches, settings_v))
            for cue, values in (result.cues or {}).items():
                cues.setdefault(cue, []).append(values)
            verdict = assess_drift(result.maps, detector.drift_reference_)
            if verdict is not None:
                deviations.append(verdict.deviation)
                if verdict.drifted:
                    drifted.append(clip_name)
            frame_labels = frame_labels[:: spec.frame_step]
            labels.append(frame_labels)
            kinds += [kind] * len(frame_labels)
        normal = np.concatenate(labels) == 0
        figures = score_figures(scores, labels, kinds, threshold, reach)
        per_kind, where_flagged = figures["per_kind_frame_auroc"], figures.pop("flagged_normal_frames")
        record = {"seen": set(spec.families) <= seen, "families": list(spec.families), **figures}
        # each cue's share of the score on normal frames (standardised units): which cue the encoding disturbs
        record["median_normal_cue"] = {
            cue: round(float(np.median(np.concatenate(values)[normal])), 3) for cue, values in cues.items()
        }
        record["flagged_normal_frames"] = where_flagged
        record["clips_with_drift_warning"] = drifted
        if noise is not None:  # frames low-passed to the training frames' noise level (match_noise_level)
            record["noise_level"] = noise.take()
        record["median_drift_deviation"] = round(float(np.median(deviations)), 2) if deviations else None
        report["encodings"][name] = record
        for text, replayed_scores in replayed.items():
            figures = score_figures(replayed_scores, labels, kinds, threshold, reach)
            report.setdefault("variants", {}).setdefault(text, {"settings": variants[text], "encodings": {}})
            report["variants"][text]["encodings"][name] = {"seen": record["seen"], **figures}
            print(f"  variant {text}: normal flagged {figures['normal_flagged_percent']:5.1f}%  pooled "
                  f"{figures['pooled_frame_auroc']}  " + "  ".join(f"{k} {v:.3f}" for k, v in figures["per_kind_frame_auroc"].items())
                  + "  flagged normal frames: " + ", ".join(f"{k} {v}" for k, v in figures["flagged_normal_frames"].items()),
                  flush=True)
        print(f"{name:16s} {'seen  ' if record['seen'] else 'UNSEEN'} normal flagged {record['normal_flagged_percent']:5.1f}%  "
              f"median normal {record['median_normal_score']:7.3f}  pooled {record['pooled_frame_auroc']}  "
              + "  ".join(f"{k} {v:.3f}" for k, v in per_kind.items()) + f"  drift warnings {len(drifted)} (deviation {record['median_drift_deviation']})  cues "
              + " ".join(f"{k} {v:+.2f}" for k, v in record["median_normal_cue"].items())
              + "  flagged normal frames: " + ", ".join(f"{k} {v}" for k, v in where_flagged.items())
              + (f"  noise-matched frames {record['noise_level']['noise_matched']} of {record['noise_level']['noise_measured']}"
                 if "noise_level" in record else ""), flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["worst"] = worst(report["encodings"].values())
    for label, figures in [("", report)] + [(f"variant {text}, ", v) for text, v in report.get("variants", {}).items()]:
        for group, seen_group in (("seen", True), ("unseen", False)):
            records = [r for r in figures["encodings"].values() if r["seen"] == seen_group]
            if records:
                figures[f"worst_{group}"] = low = worst(records)
                print(f"{label}worst {group}: {low['normal_flagged_percent']:.1f}% normal frames flagged (target <= 2%), "
                      f"per-kind AUROC {low['per_kind_frame_auroc']:.3f} (target >= 0.95), "
                      f"pooled {low['pooled_frame_auroc']:.3f}")
    print(f"{report['seconds']:.0f} s")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
