"""Cross-fitting for the image feature models: training images scored by a memory that did not learn them.

A validation split of 10% leaves few held-out normal images (6 of 60), too few to place a threshold or to decide
where the image score is taken. Here the training images are dealt to :data:`FOLDS` folds as they stream past
(image ``i`` to fold ``i % FOLDS``; the first :data:`FOLD_IMAGES` of the stream, so that time and memory stay
bounded with any number of images), a random sample of them is kept (:data:`SAMPLE_IMAGES`, at most
:data:`SAMPLE_BYTES`), and after the fit each sampled image is scored by a memory built from the other folds'
images only (the model builds those memories from the same features as its own, in the same pass:
``FoldMemories``). Their scores join the held-out validation scores for the threshold and the score-region choice,
as the video model's cross-fitted clips do (:meth:`ImageDetector.fit_with`), lowered for the threshold by how far
the folds' memories score the held-out images above the final model (:meth:`FeatureDetector.fold_shift`).

>>> folds = TrainingFolds(image_bytes=3 * 256 * 256, seed=0)
>>> folds.fold_of(torch.arange(6)).tolist()
[0, 1, 2, 0, 1, 2]
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Iterator, Protocol

import torch

from anomalens.models.components.sampler import Reservoir

# Three folds: each memory learns 2/3 of the training images. A memory that learned fewer scores normal images
# higher, so the threshold errs high: on the synthetic pins of seed 1 the folds' mean score stood above that of
# unseen normal images by 0.95 with two folds, 0.39 with three, 0.21 with eight, while the threshold moved by less
# than 0.9 and the share of normal images flagged not at all; each fold costs one more coreset and search index
# (pins: 19.8, 18.3 and 38.9 s of CPU with 2, 3 and 8 folds against 10.2 s without; README, "The threshold").
# What bias remains is measured on the held-out images (each also scored by every fold's memory) and taken off the
# folds' scores before the threshold (FeatureDetector.fold_shift, metrics/threshold.py score_shift).
FOLDS = 3
FOLD_IMAGES = 2048  # training images dealt to the folds (the first of the stream; the model learns from all)
SAMPLE_IMAGES = 512  # training images scored by a memory without them, at most (a random sample of the stream) ...
SAMPLE_BYTES = 256 << 20  # ... and at most this much of them held as uint8 (fewer when the images are large)


class FoldMemories(Protocol):
    """What a model builds for cross-fitting, fed the same training features as its own memory."""

    def add(self, features: torch.Tensor, folds: torch.Tensor) -> None:
        """Features ``(B * tiles, C, h, w)`` of a training batch and the fold ``(B,)`` of each of its images."""

    def without(self, fold: int) -> AbstractContextManager[bool]:
        """While open, the model scores with a memory built from every fold but ``fold``; yields False (and leaves
        the model as it is) when the other folds hold no image."""


class TrainingFolds:
    """Which fold each training image belongs to, and a bounded random sample of the images to score."""

    def __init__(self, image_bytes: int, seed: int, folds: int | None = None) -> None:
        self.folds = FOLDS if folds is None else folds
        self.capacity = max(1, min(SAMPLE_IMAGES, SAMPLE_BYTES // max(1, image_bytes)))
        self.sample = Reservoir(self.capacity, seed=seed)
        self.shape: tuple[int, ...] | None = None
        self.seen = 0
        self.memories: FoldMemories | None = None

    def fold_of(self, numbers: torch.Tensor) -> torch.Tensor:
        """The fold of the training images numbered ``numbers`` in stream order."""
        return numbers % self.folds

    def add(self, images: torch.Tensor, features: torch.Tensor) -> None:
        """A training batch: ``uint8`` images ``(B, 3, H, W)`` and their features ``(B * tiles, C, h, w)``."""
        dealt = max(0, min(len(images), FOLD_IMAGES - self.seen))
        numbers = self.seen + torch.arange(dealt)
        folds = self.fold_of(numbers)
        self.seen += len(images)
        if not dealt:
            return
        self.shape = tuple(images.shape[1:])
        self.sample.add(images[:dealt].reshape(dealt, -1).cpu(), torch.stack([numbers, folds], dim=1))
        if self.memories is not None:
            tiles = len(features) // len(images)
            self.memories.add(features[: dealt * tiles], folds)

    def sampled(self, fold: int, batch_size: int) -> Iterator[torch.Tensor]:
        """The sampled images of ``fold``, ``uint8`` ``(B, 3, H, W)``, in batches of ``batch_size``."""
        if self.sample.size == 0 or self.shape is None:
            return
        tags = self.sample.sample_tags
        assert tags is not None
        rows = (tags[:, 1] == fold).nonzero().squeeze(1)
        rows = rows[tags[rows, 0].argsort()]  # stream order: the same sample gives the same batches
        for start in range(0, len(rows), batch_size):
            yield self.sample.sample[rows[start : start + batch_size]].reshape(-1, *self.shape)

    def sampled_numbers(self, fold: int) -> torch.Tensor:
        """Stream numbers of the sampled images of ``fold``, in the order :meth:`sampled` yields them."""
        tags = self.sample.sample_tags
        if tags is None:
            return torch.zeros(0, dtype=torch.long)
        return tags[tags[:, 1] == fold, 0].sort().values
