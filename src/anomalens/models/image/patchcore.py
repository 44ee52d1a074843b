"""PatchCore (Roth et al., CVPR 2022): the default image model.

Training keeps a memory bank of locally aware patch features of normal images, thinned by greedy k-center
coreset selection to ``coreset_ratio`` of the patches but at most ``memory_bank_size`` entries, so that the bank,
the saved model and the scoring cost stop growing with the training set. Patches are gathered in passes of
bounded size; each pass keeps its own coreset, and when the kept rows exceed the cap a last pass takes the
coreset of those (fit time linear in the number of images, peak memory flat). A test patch's score is the distance to its nearest neighbour in the bank; the map is
upsampled to the input and blurred; the image score is the map's maximum (on the part alone where the background gives normal images their
highest scores, ``score_region``), reweighted as in the paper: when the bank entry nearest to the most anomalous
patch is itself in a sparse region of the bank, the score goes up.

>>> detector = PatchCore(PatchCoreConfig(image_size=(256, 256)))
>>> detector.fit(train_uint8, validation_uint8)                  # doctest: +SKIP
>>> prediction = detector.predict(test_uint8)                    # doctest: +SKIP
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator

import torch

from anomalens.errors import ConfigError
from anomalens.models.image.feature_detector import FeatureDetector, FeatureDetectorConfig
from anomalens.models.components.sampler import bounded_coreset_size, greedy_coreset
from anomalens.models.components.search import NearestNeighbourIndex
from anomalens.progress import SILENT, Reporter

# Patches gathered before a coreset pass; beyond this the bank is built in passes so memory stays bounded
MAX_BUFFERED_PATCHES = 1 << 19  # 512k patches x 152 channels = 320 MB
MAX_PASSES = 1 << 16  # seed offset of the final reduction pass (after every buffered pass's own seed)


@dataclass
class PatchCoreConfig(FeatureDetectorConfig):
    coreset_ratio: float = 0.1  # share of the training patches kept in the memory bank
    # cap on bank entries (None: no cap); 16,384 keeps bottle's accuracy (README, "Scale") at a bounded cost
    memory_bank_size: int | None = 16384
    # search the bank exactly however large it is (slower; approximate search finds the same neighbour for ~99%)
    exact_search: bool = False
    coreset_projection_dim: int | None = 128  # channels the coreset selection measures distances in (speed)
    # size of the bank neighbourhood used to reweight the image score (PatchCore's b); 1 turns reweighting off
    num_neighbours: int = 9  # bank neighbours that reweight the image score (PatchCore's b; 1 = off)
    # models saved before the bounded bank and faiss search (commit 5b9c6c0) kept every coreset entry and searched
    # it exactly: they load that way, so that a bank above 4,096 entries keeps the scores its threshold was set on
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {**FeatureDetectorConfig.SAVED_BEFORE, "memory_bank_size": None,
                                              "exact_search": True}


class PatchCore(FeatureDetector):
    """Nearest-neighbour distance to a coreset of normal patch features."""

    name = "patchcore"
    config_class = PatchCoreConfig
    config: PatchCoreConfig
    streams_training = True  # the bank is built pass by pass from a stream of feature rows

    def __init__(self, config: PatchCoreConfig | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(config, device)
        if not 0.0 < self.config.coreset_ratio <= 1.0:
            raise ConfigError(f"coreset_ratio must be in (0, 1], got {self.config.coreset_ratio}")
        if self.config.num_neighbours < 1:
            raise ConfigError(f"num_neighbours must be at least 1, got {self.config.num_neighbours}")
        if self.config.memory_bank_size is not None and self.config.memory_bank_size < 1:
            raise ConfigError(f"--memory-bank-size must be at least 1, got {self.config.memory_bank_size}")
        self.memory_bank_: torch.Tensor | None = None
        self.index_: NearestNeighbourIndex | None = None

    def _fit(self, train: torch.Tensor | Iterable[torch.Tensor], validation: torch.Tensor | None, reporter: Reporter) -> None:
        bank, patches = self.bank_from_rows(self.feature_rows(train, reporter), reporter)
        self.set_memory_bank(bank, patches, reporter)

    # The three steps of building the bank, public so that an engine can spread them over machines
    # (anomalens.distributed: rows and coresets per block of images on the workers, the merge on the driver).
    def feature_rows(self, images: torch.Tensor | Iterable[torch.Tensor], reporter: Reporter) -> Iterator[torch.Tensor]:
        """Patch-feature rows ``(patches, C)`` on the CPU of ``uint8`` images (a tensor or an iterable of batches),
        one batch at a time."""
        for features in self.training_features(images, reporter):
            yield features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).cpu()

    def bank_from_rows(self, row_batches: Iterable[torch.Tensor], reporter: Reporter, first_pass: int = 0) -> tuple[torch.Tensor, int]:
        """Coreset of a stream of feature rows, in passes of at most MAX_BUFFERED_PATCHES rows: (kept rows, rows seen).

        ``first_pass`` numbers the passes (it offsets their seeds), so that blocks of one training set built on
        different machines draw different random starts, as the passes of one machine do.
        """
        passes = CoresetPasses(self, first_pass, reporter)
        for rows in row_batches:
            passes.add(rows)
        bank, patches = passes.finish()
        if bank is None:
            raise ValueError("no feature rows to build a memory bank from")
        return bank, patches

    def fold_memories(self, folds: int) -> "FoldBanks":
        return FoldBanks(self, folds)

    def set_memory_bank(self, bank: torch.Tensor, training_patches: int, reporter: Reporter) -> None:
        """Keep ``bank`` (the union of the coresets of all passes or blocks) as the fitted memory bank, reduced to
        the cap by one more coreset when the passes together kept more, and build its search index."""
        target = self._pass_size(training_patches)
        if len(bank) > target:
            reporter.log(f"reducing {len(bank)} kept patches to a bank of {target}")
            bank = self._coreset(bank, target, MAX_PASSES, reporter)
        self.memory_bank_ = bank.float().to(self.device)
        self._build_index()
        self.history_.append({"training_patches": training_patches, "memory_bank": len(self.memory_bank_)})
        reporter.log(f"memory bank: {len(self.memory_bank_)} of {training_patches} training patches "
                     f"({self.index_.kind} search)")  # type: ignore[union-attr]

    def _pass_size(self, rows: int) -> int:
        return bounded_coreset_size(rows, self.config.coreset_ratio, self.config.memory_bank_size)

    def _coreset(self, rows: torch.Tensor, n_keep: int, pass_index: int, reporter: Reporter) -> torch.Tensor:
        c = self.config
        keep = greedy_coreset(
            rows.to(self.device),  # on a GPU the k-center loop is much faster
            n_keep=n_keep,
            seed=c.seed + pass_index,
            projection_dim=c.coreset_projection_dim,
            reporter=reporter,
        )
        return rows[keep]

    def _build_index(self) -> None:
        assert self.memory_bank_ is not None
        self.index_ = NearestNeighbourIndex(self.memory_bank_, exact=self.config.exact_search, seed=self.config.seed)

    def _score_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        if self.memory_bank_ is None or self.index_ is None:
            raise RuntimeError("PatchCore is not fitted")
        features = self.features(batch)
        n, channels, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, channels)
        distances, indices = self.index_.search(queries, k=1)
        patch_scores = distances[:, 0].reshape(n, h, w)
        maps = self.scores_to_maps(patch_scores, tuple(batch.shape[-2:]))
        per_image = batch.shape[0]  # shape[0], not len(): keeps the batch size symbolic when exported to ONNX
        weights = self._reweighting(
            queries.reshape(per_image, -1, channels), distances[:, 0].reshape(per_image, -1), indices[:, 0].reshape(per_image, -1)
        )
        scores, maps = self.scores_and_maps(maps * weights[:, None, None], batch)
        return scores, maps, None

    def _reweighting(self, queries: torch.Tensor, distances: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """PatchCore's weight ``1 - softmax(||m_test - m||)[m*]`` over the ``b`` bank neighbours of ``m*``.

        ``m_test`` is each image's most anomalous patch and ``m*`` its nearest bank entry; the weight is near 1
        when ``m*`` is isolated in the bank (a rare normal pattern seen far away) and lower in dense regions.
        """
        b = min(self.config.num_neighbours, len(self.memory_bank_))  # type: ignore[arg-type]
        if b <= 1:
            return torch.ones(queries.shape[0], device=queries.device)
        worst = distances.argmax(dim=1)
        rows = torch.arange(queries.shape[0], device=queries.device)
        m_test = queries[rows, worst]  # (B, C)
        m_star = self.memory_bank_[indices[rows, worst]]  # type: ignore[index]
        _, support = self.index_.search(m_star, k=b)  # type: ignore[union-attr]  # (B, b), m* itself first
        to_support = torch.linalg.vector_norm(self.memory_bank_[support] - m_test[:, None], dim=2)  # type: ignore[index]
        return 1.0 - torch.softmax(to_support, dim=1)[:, 0]

    def size_summary(self) -> dict[str, Any]:
        if self.memory_bank_ is None or self.index_ is None:
            return {}
        patches = next((r["training_patches"] for r in reversed(self.history_) if "training_patches" in r), None)
        return {"memory_bank": len(self.memory_bank_), "training_patches": patches, "search": self.index_.kind}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        if self.memory_bank_ is None:
            raise RuntimeError("PatchCore is not fitted")
        return {"memory_bank": self.memory_bank_, **self.extractor_state()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        bank = tensors["memory_bank"]
        if bank.ndim != 2 or bank.shape[1] != self.extractor.out_channels:
            raise ValueError(f"memory bank of shape {tuple(bank.shape)} does not fit {self.extractor.out_channels} channels")
        self.load_extractor_state(tensors)
        self.memory_bank_ = bank.float().to(self.device)
        self._build_index()  # the index is rebuilt from the bank: nothing but tensors is saved


class CoresetPasses:
    """Rows pushed batch by batch; a coreset pass over every ``limit`` rows gathered (PatchCore's bank before the
    final reduction of :meth:`PatchCore.set_memory_bank`)."""

    def __init__(self, detector: PatchCore, first_pass: int, reporter: Reporter, limit: int = MAX_BUFFERED_PATCHES,
                 keep_at_most: int | None = None) -> None:
        self.detector, self.first_pass, self.reporter, self.limit = detector, first_pass, reporter, limit
        self.keep_at_most = keep_at_most  # rows a pass keeps at most, beyond the bank's own rule
        self.kept: list[torch.Tensor] = []
        self.buffer: list[torch.Tensor] = []
        self.buffered = self.patches = 0

    def add(self, rows: torch.Tensor) -> None:
        self.buffer.append(rows)
        self.buffered += len(rows)
        self.patches += len(rows)
        if self.buffered >= self.limit:
            self._pass()

    def _pass(self) -> None:
        d = self.detector
        rows = torch.cat(self.buffer)
        size = d._pass_size(self.buffered)
        size = size if self.keep_at_most is None else min(size, self.keep_at_most)
        self.kept.append(d._coreset(rows, size, self.first_pass + len(self.kept), self.reporter))
        self.buffer, self.buffered = [], 0

    def finish(self) -> tuple[torch.Tensor | None, int]:
        """(the rows the passes kept, or None when none came; the number of rows seen)."""
        if self.buffer:
            self._pass()
        return (torch.cat(self.kept) if self.kept else None), self.patches


# seeds of the folds' coreset passes start here (after the bank's passes and its final reduction, MAX_PASSES)
FOLD_PASSES = 2 * MAX_PASSES


class FoldBanks:
    """PatchCore's memories for cross-fitting (:mod:`~anomalens.models.image.cross_fit`): each fold's patch rows
    get their own coreset passes (a share of the bank's buffer each, so that memory stays bounded), and the memory
    without fold ``j`` is the union of the other folds' coresets (``coreset_ratio`` of their rows), reduced to the
    bank's cap when it holds more, and searched as the bank is. Where the bank is capped, a
    fold's pass keeps at most its share of the cap (``cap / (folds - 1)``): the other folds' coresets then make a
    memory of the cap's size without a further reduction (on MVTec AD screw's 477k training patches the folds'
    coresets and reductions cost about six times the bank's own; with the share, 1.5 times)."""

    def __init__(self, detector: PatchCore, folds: int) -> None:
        self.detector = detector
        limit = max(1, MAX_BUFFERED_PATCHES // folds)
        cap = detector.config.memory_bank_size
        share = None if cap is None else max(1, -(-cap // max(1, folds - 1)))
        self.passes = [CoresetPasses(detector, FOLD_PASSES + fold * MAX_PASSES, SILENT, limit, share)
                       for fold in range(folds)]
        self.finished: list[tuple[torch.Tensor | None, int]] | None = None

    def add(self, features: torch.Tensor, folds: torch.Tensor) -> None:
        channels = features.shape[1]
        rows = features.permute(0, 2, 3, 1).reshape(len(folds), -1, channels).cpu()  # tiles of an image are consecutive
        for fold in folds.unique().tolist():
            self.passes[fold].add(rows[folds == fold].reshape(-1, channels))

    @contextmanager
    def without(self, fold: int) -> Iterator[bool]:
        d = self.detector
        if self.finished is None:
            self.finished = [p.finish() for p in self.passes]
            self.passes = []
        others = [(bank, n) for f, (bank, n) in enumerate(self.finished) if f != fold and bank is not None]
        if not others:
            yield False
            return
        bank, patches = torch.cat([b for b, _ in others]), sum(n for _, n in others)
        cap = d.config.memory_bank_size
        if cap is not None and len(bank) > cap:  # (below the cap the union is the ratio of their rows already)
            bank = d._coreset(bank, d._pass_size(patches), FOLD_PASSES - 1 - fold, SILENT)
        saved = d.memory_bank_, d.index_
        d.memory_bank_ = bank.float().to(d.device)
        d._build_index()
        try:
            yield True
        finally:
            d.memory_bank_, d.index_ = saved
