"""PatchCore on real MVTec AD bottle images (skipped where ../shared/data is absent).

Fits on 40 training images, calibrates on 5 held-out normal ones, and scores a few test images of each type.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from anomalens.data.mvtec import discover_category, split_train_validation
from anomalens.data.preprocessing import Preprocessing
from anomalens.models import create_detector

PER_TYPE = 2


@pytest.mark.slow
def test_patchcore_finds_real_bottle_defects(mvtec_root):
    category = discover_category(mvtec_root, "bottle", require_test=True)
    train, validation = split_train_validation(category.train_paths, 0.1, seed=0)
    preprocessing = Preprocessing((256, 256))
    samples = []
    for defect_type in sorted({s.defect_type for s in category.test_samples}):
        samples += [s for s in category.test_samples if s.defect_type == defect_type][: PER_TYPE + (defect_type == "good")]
    detector = create_detector("patchcore", image_size=(256, 256))
    detector.fit(preprocessing.load_images(train[:40]), preprocessing.load_images(validation[:5]))

    prediction = detector.predict(preprocessing.load_images([s.path for s in samples]))
    labels = np.array([s.label for s in samples])
    assert prediction.scores[labels == 1].min() > prediction.scores[labels == 0].max()
    masks = np.stack(
        [
            preprocessing.load_mask(s.mask_path, s.path).numpy() if s.mask_path else np.zeros((256, 256), bool)
            for s in samples
        ]
    )
    assert roc_auc_score(masks.ravel(), prediction.maps.ravel()) > 0.9
    # every defect is flagged by the threshold chosen on normal images alone
    assert prediction.labels[labels == 1].all()
