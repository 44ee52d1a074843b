"""PatchCore training on a Ray cluster: the memory bank from coresets of blocks of the training set.

The training images (``train/good`` minus the validation split, the same split as local training) are cut
into blocks. One Ray task per block decodes its images, extracts patch features and keeps the block's
coreset with PatchCore's own steps (:meth:`PatchCore.feature_rows`, :meth:`PatchCore.bank_from_rows`); only
the kept rows (the coreset ratio of the features) travel back. The driver merges the blocks' coresets in
block order (:meth:`PatchCore.set_memory_bank`) and chooses the threshold on the validation images as local
training does (:meth:`ImageDetector.fit_with`). Local training also builds its coreset from random chunks of at
most 16,384 patches, so per-block coresets keep the same kind of bank; the accuracy check is
``tests/test_distributed.py`` (image and pixel AUROC within 0.005 of local training).

>>> engine = ray_memory_bank_fit(address="auto", block_size=32)                           # doctest: +SKIP
>>> train_image_model("data", "bottle", "patchcore", engine=engine)                       # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from anomalens.errors import ConfigError
from anomalens.models.base import BaseDetector
from anomalens.progress import Reporter
from anomalens.workflows.train import TrainEngine

DEFAULT_TRAIN_BLOCK_SIZE = 32


def ray_memory_bank_fit(address: str | None = None, block_size: int = DEFAULT_TRAIN_BLOCK_SIZE,
                        cpus_per_task: float = 1.0) -> TrainEngine:
    """An ``engine`` for :func:`~anomalens.workflows.train.train_image_model` that builds the bank on Ray."""
    if block_size < 1:
        raise ConfigError(f"--block-size must be at least 1, got {block_size}")

    def fit(detector: BaseDetector, train_paths: Sequence[Path], validation_paths: Sequence[Path], log: Reporter) -> dict:
        from anomalens.models.image.patchcore import PatchCore

        if not isinstance(detector, PatchCore):
            raise ConfigError(f"--engine ray builds PatchCore's memory bank across a cluster; {detector.name} trains "
                              "locally (several --category values train one model per category in parallel)")
        return _fit_on_ray(detector, list(train_paths), list(validation_paths), log, address, block_size, cpus_per_task)

    return fit


def _fit_on_ray(detector: Any, train_paths: list[Path], validation_paths: list[Path], log: Reporter,
                address: str | None, block_size: int, cpus_per_task: float) -> dict[str, Any]:
    from anomalens.distributed.cluster import alive_nodes, connect

    ray = connect(address)
    device = "cuda" if detector.device.type == "cuda" else "cpu"  # the driver's choice (--device)
    task = ray.remote(num_cpus=cpus_per_task, num_gpus=1 if device == "cuda" else 0)(block_coreset)
    blocks = [train_paths[i : i + block_size] for i in range(0, len(train_paths), block_size)]
    log.log(f"building the memory bank on Ray: {len(train_paths)} images in {len(blocks)} blocks of {block_size} "
            f"on {len(alive_nodes())} node(s)")
    if getattr(detector.config, "threshold_from_folds", False):  # folds are dealt in one process's pass
        log.log("the threshold comes from the validation images alone: --engine ray does not score the training "
                "images by memories without them (the model records threshold_from_folds false)")
        detector.config.threshold_from_folds = False
    config = detector.config.to_dict()
    pending = [task.remote(detector.name, config, [str(p.resolve()) for p in block], index, device, cpus_per_task)
               for index, block in enumerate(blocks)]  # the workers start while the driver decodes held_out

    def learn(reporter: Reporter) -> None:
        nonlocal pending
        results: dict[int, tuple[np.ndarray, int]] = {}
        for _ in reporter.iter(range(len(pending)), "feature blocks"):
            ready, pending = ray.wait(pending, num_returns=1)
            index, rows, patches = ray.get(ready[0])
            results[index] = (rows, patches)
        bank = torch.cat([torch.from_numpy(np.array(results[i][0])) for i in range(len(blocks))])  # writable copies
        detector.set_memory_bank(bank, sum(p for _, p in results.values()), reporter)

    preprocessing = detector.preprocessing
    if not validation_paths:
        log.log("warning: no validation images; the threshold is set on training images and may be low")
    held_out = preprocessing.load_images(validation_paths or train_paths, reporter=log)
    detector.fit_with(learn, held_out, log)
    return {"name": "ray", "address": address, "blocks": len(blocks), "block_size": block_size,
            "nodes": len(alive_nodes())}


def block_coreset(model: str, config: dict[str, Any], paths: list[str], index: int, device: str,
                  threads: float) -> tuple[int, np.ndarray, int]:
    """On a worker: (block index, the coreset rows of the block's patch features, patches seen)."""
    from anomalens.models.base import create_detector
    from anomalens.progress import SILENT

    torch.set_num_threads(max(1, int(threads)))
    detector: Any = create_detector(model, device=device, **config)
    images = detector.preprocessing.load_images([Path(p) for p in paths])
    bank, patches = detector.bank_from_rows(detector.feature_rows(images, SILENT), SILENT, first_pass=index)
    return index, bank.cpu().numpy(), patches
