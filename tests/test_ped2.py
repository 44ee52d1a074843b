"""The default video model on a few real UCSD Ped2 clips (skipped where the data is absent).

Fits on the first 60 frames of four training clips (validation: a fifth), scores two test clips, and checks
that frames with bicycles, carts and skateboards outscore frames with only pedestrians.
"""

from __future__ import annotations

import numpy as np
import pytest

from anomalens.data.video_datasets import discover_video_category
from anomalens.models.base import create_detector

pytestmark = pytest.mark.slow


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def test_stfeatures_ranks_anomalous_ped2_frames_first(ped2_root):
    category = discover_video_category(ped2_root, "ucsd_ped2")
    detector = create_detector("stfeatures", appearance_memory=1024, motion_memory=128)
    prep = detector.preprocessing
    train = [ref.open(prep).segment(0, 60) for ref in category.train[:4]]
    validation = [category.train[15].open(prep).segment(0, 60)]
    detector.fit_clips(train, validation)
    tests = {ref.path.name: ref for ref in category.test}
    scores, labels = [], []
    for name in ("02", "12"):  # about half of their frames are anomalous
        ref = tests[name]
        result = detector.predict_clip(ref.open(prep))
        assert result.scores.shape == ref.frame_labels.shape
        scores.append(result.scores)
        labels.append(ref.frame_labels)
    assert auroc(np.concatenate(scores), np.concatenate(labels)) > 0.8
