"""Image-level metrics: AUROC, the ROC curve and F1-max, for labels 0 = normal, 1 = anomalous.

AUROC is the Mann-Whitney statistic: the probability that a random anomalous image scores higher than a
random normal one, ties counting one half. So a constant score gives 0.5, a perfect ranking 1.0 and an
inverted one 0.0. Every metric needs both classes and says so clearly when one is missing.

>>> image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
1.0
>>> image_auroc([0, 1], [0.5, 0.5])
0.5
>>> f1, threshold = f1_max([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
>>> f1, threshold
(1.0, 0.3)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import rankdata

from anomalens.metrics.threshold import above_threshold

# The verdict words shown everywhere (CLI, CSV, reports, UI tables, video banners), so that they read the same
ANOMALOUS = "ANOMALOUS"
NORMAL = "normal"


def verdict_word(anomalous: bool) -> str:
    """``ANOMALOUS`` or ``normal``: the one wording of a verdict."""
    return ANOMALOUS if anomalous else NORMAL


def check_binary(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, what: str = "images") -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten labels (0/1) and finite scores of equal length; both classes must be present."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (normal) or 1 (anomalous)")
    if not np.isfinite(s).all():
        raise ValueError(f"scores of {int((~np.isfinite(s)).sum())} {what} are not finite (NaN or inf)")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        present = "anomalous" if n_pos else "normal"
        raise ValueError(
            f"this metric needs both normal and anomalous {what}, but all {y.size} {what} are {present}"
        )
    return y.astype(bool), s


def image_auroc(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> float:
    """Area under the ROC curve, ties counted one half (the Mann-Whitney U statistic / (n_pos * n_neg))."""
    y, s = check_binary(labels, scores)
    ranks = rankdata(s)  # average ranks of ties: each tie contributes 1/2
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` from the strictest threshold down; ``score >= threshold`` means anomalous.

    The first point is (0, 0) at ``+inf``; the curve visits every distinct score once.
    """
    y, s = check_binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s_sorted))[0], s_sorted.size - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    fpr = np.r_[0.0, fp / (~y).sum()]
    tpr = np.r_[0.0, tp / y.sum()]
    thresholds = np.r_[np.inf, s_sorted[last_of_tie]]
    return fpr, tpr, thresholds


def f1_max(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The best F1 over all thresholds and that threshold (``score >= threshold`` flags an image).

    An oracle figure (it looks at test labels to choose the threshold): it says how separable the scores
    are, not how the model's own threshold performs; see :func:`confusion_at` for that.
    """
    y, s = check_binary(labels, scores)
    fpr, tpr, thresholds = roc_curve(y.astype(int), s)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    tp, fp = tpr[1:] * n_pos, fpr[1:] * n_neg
    fn = n_pos - tp
    f1 = 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[1:][best])


def confusion_at(labels: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray, threshold: float) -> dict[str, float]:
    """Counts and rates when the model's own rule (:func:`~anomalens.metrics.threshold.above_threshold`: above
    ``threshold``, or not a number) flags an image or frame: one that could not be scored counts as flagged."""
    y = np.asarray(labels).ravel().astype(bool)
    flagged = above_threshold(np.asarray(scores, dtype=np.float64).ravel(), threshold)
    tp = int((flagged & y).sum())
    fp = int((flagged & ~y).sum())
    fn = int((~flagged & y).sum())
    tn = int((~flagged & ~y).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "true_positives": tp,
        "false_positives": fp,
        "false_negatives": fn,
        "true_negatives": tn,
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
        "accuracy": (tp + tn) / max(y.size, 1),
    }
