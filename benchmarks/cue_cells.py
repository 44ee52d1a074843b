"""Score UCSD Ped2's held-out training clips once and keep each cue's cell maps, to compare frame-score rules offline.

``heldout_clips.py`` trains the default video model on some training clips and scores the held-out ones (normal,
and with inserted anomalies). This script does the same split and the same insertions, but keeps, for every frame,
the two cues' locally averaged cell distances (appearance ``(h, w)``, motion ``(hm, wm)``), and the same maps of the
cross-fitted normal training frames that standardise the cues. The maps are recorded as the memories give them,
before the model measures each cell against its own normal range, so ``--cells`` can compare those rules too. From
those, any rule that turns cell maps into a frame score (the highest cell, a window's mean, a top-k mean), any
measure of each cell against its own normal range (``--cells``), any standardisation of the cues (mean and spread,
or the spread of the upper tail), any way of combining the two cues (``--combine``: their sum, their tail surprises,
a joint map where both must be high at the same place) and any temporal smoothing is evaluated in seconds
(``--evaluate``), on frames the model never learned, without a test set.

    PYTHONPATH=src python benchmarks/cue_cells.py --split-seed 0 --output /tmp/cells0.npz
    PYTHONPATH=src python benchmarks/cue_cells.py --evaluate /tmp/cells0.npz /tmp/cells1.npz
    PYTHONPATH=src python benchmarks/cue_cells.py --evaluate /tmp/cells*.npz --rules max,max,std,2 \
        --combine sum tail joint joint3+0.5

Reported per rule: each inserted kind's frame AUROC against the held-out normal frames, and the share of its frames
found while at most 1% and 5% of the held-out normal frames are flagged (the best threshold for that; the saved
threshold is not simulated here: ``heldout_clips.py`` measures it for a chosen setting); then the mean over kinds of
the share found at <= 1% and <= 5% per split, and on how many splits a rule beats the first one listed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from anomalens.metrics.classification import image_auroc
from anomalens.metrics.smoothing import smooth_scores
from anomalens.models.base import create_detector
from anomalens.models.components.kernels import DelayedGaussian, series_kernel
from anomalens.models.video.stfeatures import cue_surprise
from anomalens.progress import Reporter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from heldout_clips import INSERTIONS, ListClip, LOW_FPRS, found_at_fpr, inserted, ped2_clips, split_clips  # noqa: E402


def capture(args: argparse.Namespace) -> None:
    detector = create_detector("stfeatures", seed=args.seed)
    clips = ped2_clips(args.data_dir, "ucsd_ped2", detector.preprocessing)
    train, validation, heldout = split_clips(clips, args)
    state: dict = {"mode": None, "cross": [], "clip": []}
    frame_scores, cross_fitted = detector._frame_scores, detector._cross_fitted_scores

    def recording_frame_scores(appearance, motion, *coded):
        if state["mode"] is not None:
            state[state["mode"]].append((appearance.half().numpy(), motion.half().numpy()))
        return frame_scores(appearance, motion, *coded)

    def recording_cross_fitted(*a, **k):
        state["mode"] = "cross"
        try:
            return cross_fitted(*a, **k)
        finally:
            state["mode"] = None

    detector._frame_scores = recording_frame_scores
    detector._cross_fitted_scores = recording_cross_fitted
    started = time.perf_counter()
    detector.fit_clips(train, validation, reporter=Reporter(show_tqdm=False))
    print(f"fit {time.perf_counter() - started:.0f} s", flush=True)
    out: dict[str, np.ndarray] = {
        "cross_appearance": np.concatenate([a for a, _ in state["cross"]]),
        "cross_motion": np.concatenate([m for _, m in state["cross"]]),
    }

    def score(clip: ListClip) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        state["mode"], state["clip"] = "clip", []
        scores = detector.predict_clip(clip, views=False).scores
        state["mode"] = None
        return (np.concatenate([a for a, _ in state["clip"]]), np.concatenate([m for _, m in state["clip"]]), scores)

    rng = np.random.default_rng(args.seed)
    items = [("normal", clip.name, list(clip), np.zeros(len(clip), np.int64)) for clip in heldout]
    items += list(inserted(heldout, args.kinds or list(INSERTIONS), rng))
    for n, (kind, name, frames, labels) in enumerate(items):
        a, m, s = score(ListClip(frames, f"{kind}_{name}"))
        out[f"clip{n:02d}_appearance"], out[f"clip{n:02d}_motion"], out[f"clip{n:02d}_scores"] = a, m, s
        out[f"clip{n:02d}_labels"], out[f"clip{n:02d}_kind"] = labels, np.array(kind)
        print(f"scored {kind} {name} ({len(frames)} frames)", flush=True)
    out["standardisation"] = detector.standardisation_.numpy()
    out["threshold"] = np.array(detector.calibration_.threshold)
    np.savez_compressed(args.output, **out)
    print(f"wrote {args.output} in {time.perf_counter() - started:.0f} s", flush=True)


# ---- frame-score rules on saved cell maps ---------------------------------------------------------


def aggregate(cells: np.ndarray, rule: str) -> np.ndarray:
    """Cell maps ``(T, h, w)`` -> frame scores ``(T,)``: ``max``, ``windowK`` (the highest mean of K x K cells) or
    ``topK`` (the mean of the K highest cells)."""
    x = torch.from_numpy(cells.astype(np.float32))
    if rule == "max":
        return x.flatten(1).amax(1).numpy()
    if rule.startswith("maxceil"):  # the model's typical_motion_ceiling: less the typical cell's rise above X
        flat = x.flatten(1)
        typical = flat.sort(dim=1).values[:, (flat.shape[1] - 1) // 2]
        return (flat.amax(1) - (typical - float(rule[7:])).clamp(min=0)).numpy()
    if rule.startswith("window"):
        k = int(rule[6:])
        return F.avg_pool2d(x[:, None], k, stride=1).flatten(1).amax(1).numpy()
    if rule.startswith("top"):
        k = int(rule[3:])
        return x.flatten(1).topk(k, dim=1).values.mean(1).numpy()
    raise ValueError(rule)


def cell_norm(cells: np.ndarray, cross: np.ndarray, rule: str) -> np.ndarray:
    """Cell maps ``(T, h, w)`` measured against each cell's own normal range, from the cross-fitted normal frames
    ``cross`` (``(N, h, w)``): ``none`` (as they are), ``centre`` (less the cell's mean), ``zmF`` (less the cell's
    mean, over the cell's standard deviation floored at F times the mean cell's: the model's "standardise" with
    ``place_spread_floor`` F, :func:`anomalens.models.video.stfeatures.place_range`) or ``zF`` (floored at F times
    the median cell's). The floor keeps a cell that normal frames hardly vary, grass nobody walks on, from turning
    any change into a huge score. Is a cell's distance unusual *there*, not only in the frame?"""
    if rule == "none":
        return cells
    normal = cross.astype(np.float32)
    centre = normal.mean(0)
    out = cells.astype(np.float32) - centre
    if rule == "centre":
        return out
    spread = normal.std(0)
    if rule.startswith("zm"):  # the floor a multiple of the mean cell's spread
        floor = float(rule[2:] or 1) * float(spread.mean())
        return out / np.maximum(spread, floor)
    floor = float(rule[1:] or 0.5) * float(np.median(spread))
    return out / np.maximum(spread, floor)


def scale(normal: np.ndarray, rule: str) -> tuple[float, float]:
    """Centre and spread of a cue's normal frame scores: ``std`` (mean, standard deviation) or ``tailQ`` (median,
    Q-th percentile minus median)."""
    if rule == "std":
        return float(normal.mean()), float(normal.std())
    q = float(rule[4:])
    median = float(np.median(normal))
    return median, float(np.percentile(normal, q) - median)


def causal(values: np.ndarray, sigma: float, lookahead: int) -> np.ndarray:
    """The live scorer's smoothing (``causal_scorer(lookahead=...)``): the Gaussian cut ``lookahead`` frames ahead."""
    smoother = DelayedGaussian(sigma, lookahead)
    out = [v for x in values for v in smoother.push(float(x))] + smoother.finish()
    return np.asarray(out, np.float32)


def dilate(cells: torch.Tensor, size: int) -> torch.Tensor:
    """Each cell -> the highest of the ``size`` x ``size`` cells around it (1 = itself)."""
    return cells if size <= 1 else F.max_pool2d(cells[:, None], size, stride=1, padding=size // 2)[:, 0]


def combined(appearance: np.ndarray, motion: np.ndarray, a_rule: str, m_rule: str, scales: tuple[float, ...],
             combine: str) -> np.ndarray:
    """Two cues' cell maps -> frame scores before smoothing in time, by ``combine``:

    * ``sum``: the standardised frame scores added (the default model); ``tail``: their Gaussian tail surprises
      added, ``-log P(Z > z)`` (``cue_combination`` "tail"); ``sum+tail``: both (``cue_combination`` "sum+tail");
      ``tippett``: the higher of the two;
    * ``jointK``: co-located evidence: the highest cell of the sum of both standardised cell maps (motion resampled
      to the appearance grid as ``_standardised_map`` does), each first widened to the highest of K x K cells
      around it (1 = the same cell only; a very large K gives back ``sum``); ``tailjointK``: the same with each
      cell's tail surprise;
    * ``jointK+F``: the joint score plus F times the sum (so that a motion-only anomaly still counts), each
      standardised on the cross-fitted frames (``scales`` holds the joint's and the sum's centre and spread)."""
    a_centre, a_spread, m_centre, m_spread = scales[:4]
    a = (aggregate(appearance, a_rule) - a_centre) / a_spread
    m = (aggregate(motion, m_rule) - m_centre) / m_spread
    if combine == "sum":
        return a + m
    if combine == "tail":
        return (cue_surprise(torch.from_numpy(a)) + cue_surprise(torch.from_numpy(m))).numpy()
    if combine == "sum+tail":
        return a + m + (cue_surprise(torch.from_numpy(a)) + cue_surprise(torch.from_numpy(m))).numpy()
    if combine == "tippett":
        return np.maximum(a, m)
    if "joint" not in combine or a_rule != "max" or m_rule != "max":
        raise ValueError(f"unknown --combine {combine!r} (joint rules need max,max)")
    joint, _, fraction = combine.partition("+")
    tail = joint.startswith("tail")
    size = int(joint.removeprefix("tail").removeprefix("joint") or 1)
    cells_a = torch.from_numpy((appearance.astype(np.float32) - a_centre) / a_spread)
    grid = cells_a.shape[1:]
    cells_m = F.interpolate(torch.from_numpy(motion.astype(np.float32))[:, None], size=grid, mode="bilinear",
                            align_corners=False)[:, 0]
    cells_m = (cells_m - m_centre) / m_spread
    if tail:
        cells_a, cells_m = cue_surprise(cells_a), cue_surprise(cells_m)
    score = (dilate(cells_a, size) + dilate(cells_m, size)).flatten(1).amax(1).numpy()
    if not fraction:
        return score
    j_centre, j_spread, s_centre, s_spread = scales[4:]
    return (score - j_centre) / j_spread + float(fraction) * (a + m - s_centre) / s_spread


def in_time(values: np.ndarray, sigma: float, rule: str, spill: float | None = None) -> np.ndarray:
    """A frame-score series smoothed in time by ``rule``, the library's :func:`smooth_scores` with: ``gaussian``
    (the Gaussian alone), ``medianK`` (a running median of K frames first: a spike of fewer than K/2 frames, such as
    a codec's one-frame jump of the flow, goes before the Gaussian spreads it), ``+capD`` (no frame more than D
    above its own, median-filtered, score: the Gaussian lowers a frame but lifts it by at most D with its
    neighbours' scores) and ``+spillX`` / ``+spillnormal`` (the Gaussian spreads only the part of each value up to
    ``spill``, X or each cue's highest cross-fitted normal value, see :func:`spill_limit`); e.g. ``median3+cap2``,
    ``gaussian+spillnormal``."""
    first, *rest = rule.split("+")
    width = int(first[6:]) if first.startswith("median") else 1
    caps = [float(part[3:] or 0) for part in rest if part.startswith("cap")]
    return smooth_scores(values, series_kernel(sigma), width, min(caps) if caps else None, spill)


def spill_limit(rule: str, cross: np.ndarray) -> float | None:
    """The spill limit that ``rule`` sets for a cue whose standardised cross-fitted normal frame scores are ``cross``:
    ``spillX`` X, ``spillnormal`` their highest (the library's ``temporal_spill`` "normal"), none without either."""
    part = next((p for p in rule.split("+") if p.startswith("spill")), None)
    if part is None:
        return None
    return float(cross.max()) if part == "spillnormal" else float(part[5:])


class SavedSplit(dict):
    """A saved split's arrays by name, with ``files`` listing them as ``np.load``'s result does."""

    @property
    def files(self) -> list[str]:
        return list(self)


def normalised_cells(data, rule: str) -> SavedSplit:
    """A saved split's arrays with every cell map passed through :func:`cell_norm` (``rule`` "A/M" for appearance
    and motion, or one rule for both), each cue's normal range from its cross-fitted frames."""
    a_rule, _, m_rule = rule.partition("/")
    rules = {"appearance": a_rule, "motion": m_rule or a_rule}
    out = SavedSplit((key, data[key]) for key in data.files)
    for key in data.files:
        cue = key.rsplit("_", 1)[-1]
        if cue in rules:  # the cross-fitted frames' own maps included: measured against their own range
            out[key] = cell_norm(data[key], data[f"cross_{cue}"], rules[cue])
    return out


def evaluate(paths: list[Path], rules: list[tuple[str, str, str, float]], lookahead: int | None = None,
             combines: list[str] = ["sum"], temporal: str = "gaussian", clip_normals: bool = False,
             cells_rules: list[str] = ["none"]) -> None:
    datasets = [np.load(p) for p in paths]
    print("rule (appearance agg, motion agg, scale, sigma, combine) | per kind: AUROC / found at <=1% / <=5% flagged "
          "(mean over splits) | mean over kinds found at <=1% / <=5%: mean, per split, splits beating the first rule")
    first: list[tuple[float, float]] | None = None
    for (a_rule, m_rule, s_rule, sigma), combine, cells_rule in ((r, c, n) for r in rules for c in combines
                                                                 for n in cells_rules):
        results: dict[str, list[tuple[float, float, float]]] = {}
        for raw in datasets:
            data = normalised_cells(raw, cells_rule)
            split_m_rule = m_rule
            if m_rule == "maxceil":  # the ceiling: the highest typical cell of the cross-fitted frames
                flat = data["cross_motion"].astype(np.float32).reshape(len(data["cross_motion"]), -1)
                split_m_rule = f"maxceil{np.sort(flat, axis=1)[:, (flat.shape[1] - 1) // 2].max()}"
            a_centre, a_spread = scale(aggregate(data["cross_appearance"], a_rule), s_rule)
            m_centre, m_spread = scale(aggregate(data["cross_motion"], split_m_rule), s_rule)
            scales: tuple[float, ...] = (a_centre, a_spread, m_centre, m_spread)
            if "+" in combine:  # the joint score and the sum re-standardised on the cross-fitted frames
                cross = [combined(data["cross_appearance"], data["cross_motion"], a_rule, split_m_rule, scales, part)
                         for part in (combine.partition("+")[0], "sum")]
                scales += tuple(v for c in cross for v in scale(c, s_rule))
            per_kind: dict[str, list[np.ndarray]] = {}
            normal = []
            clips = sorted({k.split("_")[0] for k in data.files if k.startswith("clip")})
            per_cue = "spill" in temporal  # the library's rule, each cue smoothed with its own limit, then added
            if per_cue and (combine != "sum" or lookahead is not None):
                raise ValueError("a spill rule is evaluated with --combine sum and without --lookahead")
            cues = ((data["cross_appearance"], a_rule, a_centre, a_spread), (data["cross_motion"], split_m_rule, m_centre, m_spread))
            limits = [spill_limit(temporal, (aggregate(x, rule) - centre) / spread) for x, rule, centre, spread in cues]
            for c in clips:
                if per_cue:
                    s = sum(in_time(((aggregate(data[f"{c}_{name}"], rule) - centre) / spread).astype(np.float32),
                                    sigma, temporal, limit)
                            for name, (_, rule, centre, spread), limit in zip(("appearance", "motion"), cues, limits))
                else:
                    frame = combined(data[f"{c}_appearance"], data[f"{c}_motion"], a_rule, split_m_rule, scales, combine)
                    frame = frame.astype(np.float32)
                    s = in_time(frame, sigma, temporal) if lookahead is None else causal(frame, sigma, lookahead)
                kind, labels = str(data[f"{c}_kind"]), data[f"{c}_labels"]
                if kind == "normal":
                    normal.append(s)
                else:
                    per_kind.setdefault(kind, []).append(s[labels == 1])
                    if clip_normals:  # the frames around an inserted anomaly, normal by their labels
                        normal.append(s[labels == 0])
            normal_all = np.concatenate(normal)
            for kind, parts in per_kind.items():
                bad = np.concatenate(parts)
                auroc = image_auroc(np.r_[np.zeros(normal_all.size), np.ones(bad.size)], np.r_[normal_all, bad])
                found = [found_at_fpr(normal_all, bad, fpr) for fpr in LOW_FPRS]
                results.setdefault(kind, []).append((auroc, *found))
        text = "  ".join(f"{k} {np.mean([r[0] for r in v]):.3f}/{100 * np.mean([r[1] for r in v]):.1f}/"
                         f"{100 * np.mean([r[2] for r in v]):.1f}" for k, v in results.items())
        splits = [(float(np.mean([v[i][1] for v in results.values()])), float(np.mean([v[i][2] for v in results.values()])))
                  for i in range(len(datasets))]
        first = first or splits
        wins = [sum(s[j] > f[j] + 1e-9 for s, f in zip(splits, first)) for j in (0, 1)]
        per_split = " ".join(f"{100 * s[0]:.1f}/{100 * s[1]:.1f}" for s in splits)
        print(f"{a_rule:>8} {m_rule:>8} {s_rule:>7} {sigma:>4} {combine:>12} {cells_rule:>10} | {text} | "
              f"{100 * np.mean([s[0] for s in splits]):.1f}/{100 * np.mean([s[1] for s in splits]):.1f} "
              f"[{per_split}] beats the first on {wins[0]}/{wins[1]} splits", flush=True)


DEFAULT_RULES = [("max", "max", "std", 2.0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--train-clips", type=int, default=12)
    parser.add_argument("--heldout-clips", type=int, default=4)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", nargs="*", default=None)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--evaluate", type=Path, nargs="*", default=None, help="saved cell maps to compare rules on")
    parser.add_argument("--rules", nargs="*", default=None, metavar="A,M,SCALE,SIGMA",
                        help="e.g. max,max,std,2 window2,max,tail95,4 (default: a grid)")
    parser.add_argument("--lookahead", type=int, default=None, help="smooth as the live scorer with this look-ahead")
    parser.add_argument("--combine", nargs="*", default=["sum"], metavar="RULE",
                        help="how the two cues make a frame score: sum, tail, sum+tail, tippett, jointK, tailjointK, jointK+F "
                             "(see combined(); default: sum)")
    parser.add_argument("--in-time", default="gaussian", metavar="RULE",
                        help="smoothing in time (see in_time()): gaussian, medianK, gaussian+capD, medianK+capD, "
                             "gaussian+spillX, gaussian+spillnormal (default: gaussian)")
    parser.add_argument("--cells", nargs="*", default=["none"], metavar="RULE",
                        help="each cell against its own normal range first (see cell_norm()): none, centre, zmF, zF; "
                             "A/M for appearance and motion apart, e.g. none/zm1.5, the default model (default: none)")
    parser.add_argument("--clip-normals", action="store_true",
                        help="count the normal frames of the clips with an inserted anomaly as normal too")
    args = parser.parse_args(argv)
    if args.evaluate:
        rules = [(a, m, s, float(g)) for a, m, s, g in (r.split(",") for r in args.rules)] if args.rules else grid()
        evaluate(args.evaluate, rules, args.lookahead, args.combine, args.in_time, args.clip_normals, args.cells)
    else:
        capture(args)
    return 0


def grid() -> list[tuple[str, str, str, float]]:
    rules = []
    for sigma in (2.0, 4.0, 6.0):
        for s in ("std", "tail90", "tail95", "tail99"):
            for a in ("max", "window2", "top5"):
                for m in ("max", "window2", "top5"):
                    rules.append((a, m, s, sigma))
    return rules


if __name__ == "__main__":
    sys.exit(main())
