"""Training: fit a detector on the normal part of a dataset and save a run folder (:mod:`.runs`).

One skeleton (:func:`train_model`) serves both data kinds: resolve the settings (each default comes from the
model's config dataclass or from :class:`TrainOptions`, never from the caller), split off held-out normal data,
fit (the detector sets its own threshold on the held-out part, see ``BaseDetector._learn_then_calibrate``),
then save the run atomically. What differs per kind is only how the data is found, split and fed.

Honest evaluation: training sees the normal training data minus a seeded validation split (whole clips for
video; with a single clip, its tail); model selection and the threshold use only that split; the test part of
a dataset is read by :mod:`.evaluate` alone.

>>> run = train_image_model("data", "bottle", model="patchcore")          # doctest: +SKIP
>>> run = train_video_model("../shared/data", "ucsd_ped2")                 # doctest: +SKIP
>>> run.run_dir, run.detector.calibration_.threshold                       # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from anomalens import __version__
from anomalens.data.preprocessing import (
    Preprocessing,
    default_input_size,
    parse_image_size,
)
from anomalens.errors import Cancelled, ConfigError
from anomalens.models.base import BaseDetector, create_detector
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import seed_everything
from anomalens.workflows.kinds import data_kind, model_names
from anomalens.workflows.runs import check_results_dir, check_run_name, save_run


@dataclass(frozen=True)
class TrainOptions:
    """How a training run uses its data, beside the model's own settings (its config dataclass).

    ``validation_fraction``: share of the normal training data held out to choose the model and the threshold
    (whole clips for video; with one clip, the share of its frames at the end).
    """

    validation_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")

    @classmethod
    def given(cls, validation_fraction: float | None = None) -> "TrainOptions":
        """Options from what the caller set; None keeps the default."""
        return cls() if validation_fraction is None else cls(validation_fraction=float(validation_fraction))


@dataclass
class TrainResult:
    run_dir: Path
    detector: BaseDetector
    interrupted: bool


@dataclass
class LoggingReporter(Reporter):
    """Forwards everything to the caller's reporter and also keeps each logged line for ``train.log``."""

    inner: Reporter = field(default_factory=lambda: SILENT)
    lines: list[str] = field(default_factory=list)

    def update(self, stage: str, done: int, total: int | None, info: str = "") -> None:
        # our own cancel_event (the caller's, unless a model dropped it to finish calibrating after a stop)
        self.check_cancelled()
        if self.inner.callback is not None:
            self.inner.callback(stage, done, total, info)

    def log(self, message: str) -> None:
        self.lines.append(f"{datetime.now().isoformat(timespec='seconds')} {message}")
        self.inner.log(message)


def logging_reporter(reporter: Reporter) -> LoggingReporter:
    return LoggingReporter(callback=None, cancel_event=reporter.cancel_event, show_tqdm=reporter.show_tqdm,
                           interactive=reporter.interactive, inner=reporter)


@dataclass
class _TrainingData:
    """What one kind contributes to the skeleton: a summary line, loading, the fit call and its run.json fields."""

    summary: str  # "9 training and 1 validation images"
    fit: Callable[[BaseDetector, Reporter], Any]
    record: dict[str, Any] | Callable[[BaseDetector], dict[str, Any]]
    root: Path
    load: Callable[[Reporter], None] = lambda log: None  # decoding done before the fit is timed


# ---- the shared skeleton ------------------------------------------------------------------------------
def train_model(
    kind: str,
    data_dir: str | Path,
    category: str,
    model: str | None = None,
    results_dir: str | Path = "results",
    *,
    image_size: int | Sequence[int] | None = None,
    validation_fraction: float | None = None,
    seed: int | None = None,
    device: str = "auto",
    reporter: Reporter = SILENT,
    run_name: str | None = None,
    engine: TrainEngine | None = None,
    **model_settings: Any,
) -> TrainResult:
    """Train ``model`` (default: the kind's) on the normal training data of ``category`` and save a run folder.

    ``engine``: who fits an image model on the split (default: this process); the Ray engine
    (:func:`anomalens.distributed.training.ray_memory_bank_fit`) builds PatchCore's bank across a cluster.

    ``kind``: ``"image"`` or ``"video"``. Settings left at None take the model's defaults (its config
    dataclass: image or frame size, seed...) and :class:`TrainOptions`'; ``model_settings`` go to the model's
    config (``epochs``, ``lr``, ``coreset_ratio``, ``sequence_length``...). The run folder appears complete or
    not at all; on Ctrl-C or Cancel a model that keeps its best epoch so far is saved (``interrupted`` True),
    otherwise nothing is written and the interruption propagates.
    """
    started = datetime.now()
    check_results_dir(results_dir, reporter=reporter)  # before the work: writable, with room
    if run_name is not None:
        check_run_name(run_name)  # before the work too: the UI and the API, not only the CLI
    table = data_kind(kind)
    prepare = _PREPARE[table.name]
    model = model or table.default_model
    options = TrainOptions.given(validation_fraction)
    settings = {k: v for k, v in model_settings.items() if v is not None}  # what run.json records as given
    common = {} if image_size is None else {"image_size": parse_image_size(image_size)}
    if seed is not None:
        common["seed"] = seed
    detector = create_detector(model, device=device, **settings, **common)
    if detector.kind != kind:
        others = ", ".join(model_names(kind))
        raise ConfigError(f"model {model!r} is a{'n' if detector.kind == 'image' else ''} {detector.kind} model; "
                          f"use {'an' if kind == 'image' else 'a'} {kind} model ({others})")
    seed = detector.config.seed
    seed_everything(seed)
    log = logging_reporter(reporter)
    if engine is not None and kind != "image":
        raise ConfigError("a training engine other than local applies to image models only")
    data = prepare(data_dir, category, detector, options, seed, log, **({"engine": engine} if engine else {}))
    height, width = detector.config.image_size
    log.log(f"training {model} on {data.root}: {data.summary} at {height}x{width}, device {detector.device}, seed {seed}")
    data.load(log)
    fit_started = time.perf_counter()
    data.fit(detector, log)
    if detector.interrupted_ and not detector.history_:
        raise Cancelled("stopped before the first epoch finished: nothing to keep, nothing saved")
    fit_seconds = time.perf_counter() - fit_started
    cal = detector.calibration_
    assert cal is not None
    ending = "stopped early; kept the best model so far" if detector.interrupted_ else "trained"
    log.log(
        f"{ending} in {fit_seconds:.1f} s; threshold {cal.threshold:.6g} from {cal.validation_count} validation "
        f"{table.unit} (mean {cal.validation_mean:.4g}, max {cal.validation_max:.4g}, target false-positive rate "
        f"{cal.target_fpr:g})"
    )
    record = data.record(detector) if callable(data.record) else data.record
    run = {
        "anomalens_version": __version__,
        "kind": kind,
        "category": category,
        "data_dir": str(Path(data_dir).resolve()),
        "model": model,
        "created": started.isoformat(timespec="seconds"),
        "seed": seed,
        "device": str(detector.device),
        "image_size": list(detector.config.image_size),
        "validation_fraction": options.validation_fraction,
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
        "config": detector.config.to_dict(),
        **record,
        "fit_seconds": round(fit_seconds, 3),
        "interrupted": detector.interrupted_,
        "threshold": cal.threshold,
    }
    prefix = "" if kind == "image" else f"{kind}_"
    run_dir = save_run(Path(results_dir), run_name or f"{prefix}{category}_{started:%Y%m%d_%H%M%S}", detector, run, log.lines)
    reporter.log(f"saved the run to {run_dir}")
    return TrainResult(run_dir=run_dir, detector=detector, interrupted=detector.interrupted_)


# ---- images -------------------------------------------------------------------------------------------
# engine(detector, train paths, validation paths, reporter) fits and calibrates the detector and returns what
# run.json records under "engine"
TrainEngine = Callable[[BaseDetector, Sequence[Path], Sequence[Path], Reporter], dict[str, Any]]


def _image_data(data_dir, category, detector, options: TrainOptions, seed: int, log: Reporter,
                engine: TrainEngine | None = None) -> _TrainingData:
    from anomalens.data.mvtec import discover_category, split_train_validation

    found = discover_category(data_dir, category)
    train_paths, validation_paths = split_train_validation(found.train_paths, options.validation_fraction, seed)
    record = {"train_count": len(train_paths),
              "validation_files": [str(p.relative_to(found.root)) for p in validation_paths]}
    summary = f"{len(train_paths)} training and {len(validation_paths)} validation images"
    if engine is not None:  # the engine reads the images where it fits
        def fit_elsewhere(detector: BaseDetector, log: Reporter) -> None:
            record["engine"] = engine(detector, train_paths, validation_paths, log)

        return _TrainingData(summary=summary, fit=fit_elsewhere, record=record, root=found.root)
    preprocessing = detector.preprocessing
    images: dict[str, Any] = {}
    # PatchCore reads its training images once, front to back: they are decoded batch by batch during the fit
    # (the next batch while the current one is computed), so memory stays flat however many there are
    # (10,000 images of 256 px would be 2 GB held in memory); other models get them all at once
    streams = bool(getattr(detector, "streams_training", False))

    def load(log: Reporter) -> None:
        if not streams:
            images["train"] = preprocessing.load_images(train_paths, reporter=log)
        images["validation"] = preprocessing.load_images(validation_paths, reporter=log) if validation_paths else None

    def fit(detector: BaseDetector, log: Reporter) -> None:
        if streams:
            batch = detector.training_batch_size()  # type: ignore[attr-defined]
            detector.fit_batches(lambda: preprocessing.iter_images(train_paths, batch), images["validation"],  # type: ignore[attr-defined]
                                 reporter=log)
        else:
            detector.fit(images["train"], images["validation"], reporter=log)  # type: ignore[attr-defined]

    return _TrainingData(summary=summary, fit=fit, record={**record, "engine": {"name": "local"}}, root=found.root,
                         load=load)


def train_image_model(data_dir: str | Path, category: str, model: str | None = None, results_dir: str | Path = "results",
                      **options: Any) -> TrainResult:
    """Train an image model on ``data_dir/category/train/good`` minus a validation split (see :func:`train_model`).

    On Ctrl-C or Cancel, a model that can keep its best epoch (the autoencoder) is saved with ``interrupted``
    True; PatchCore and PaDiM keep nothing and the interruption propagates. Without ``image_size`` the input
    keeps the training images' aspect ratio at about 256x256 pixels, more when the part covers little of the frame
    (:func:`default_input_size`); the model records the size it was trained at. Feature models decide where they
    take the image score (``score_region`` "auto") on the validation images when fitting.
    """
    if options.get("image_size") is None:
        from anomalens.data.mvtec import discover_category

        options["image_size"] = default_input_size(discover_category(data_dir, category).train_paths)
    return train_model("image", data_dir, category, model, results_dir, **options)


# ---- video --------------------------------------------------------------------------------------------
def split_video_clips(
    clips: Sequence[Any], preprocessing: Preprocessing, validation_fraction: float, seed: int, reporter: Reporter = SILENT,
    min_frames: int = 2,
) -> tuple[list[Any], list[Any], list[str]]:
    """Hold out whole normal clips for validation (at least one when there are two or more).

    With a single training clip its last ``validation_fraction`` of frames is held out instead (at least
    ``min_frames``), provided ``min_frames`` remain for training. Returns (train, validation, descriptions).
    """
    validation_fraction = TrainOptions(validation_fraction).validation_fraction  # checked there
    opened = [ref.open(preprocessing, reporter) for ref in clips]
    if validation_fraction == 0.0:
        return opened, [], []
    if len(opened) >= 2:
        count = min(len(opened) - 1, max(1, int(round(len(opened) * validation_fraction))))
        chosen = set(np.random.default_rng(seed).permutation(len(opened))[:count].tolist())
        train = [c for i, c in enumerate(opened) if i not in chosen]
        validation = [c for i, c in enumerate(opened) if i in chosen]
        return train, validation, [ref.path.name for i, ref in enumerate(clips) if i in chosen]
    clip = opened[0]
    total = clip.count_frames()
    tail = max(int(round(total * validation_fraction)), min_frames)
    if total - tail < min_frames:
        reporter.log(f"warning: the only training clip has {total} frames, too few to hold out a validation tail")
        return [clip], [], []
    return [clip.segment(0, total - tail)], [clip.segment(total - tail)], [f"{clips[0].path.name} [frames {total - tail}-{total - 1}]"]


def _video_data(data_dir, category, detector, options: TrainOptions, seed: int, log: Reporter) -> _TrainingData:
    from anomalens.data.video_datasets import discover_video_category

    found = discover_video_category(data_dir, category)
    min_frames = max(2, int(getattr(detector.config, "sequence_length", 2)))
    train, validation, validation_names = split_video_clips(
        found.train, detector.preprocessing, options.validation_fraction, seed, log, min_frames
    )

    def record(detector: BaseDetector) -> dict[str, Any]:
        return {
            "train_clips": [c.path.name for c in train],
            "train_frames": sum(c.num_frames or 0 for c in train),
            "validation_clips": validation_names,
            "validation_frames": detector.calibration_.validation_count if detector.calibration_ else 0,
        }

    return _TrainingData(
        summary=f"{len(train)} training and {len(validation)} validation clips",
        fit=lambda detector, log: detector.fit_clips(train, validation, reporter=log),  # type: ignore[attr-defined]
        record=record,
        root=found.root,
    )


def train_video_model(data_dir: str | Path, category: str, model: str | None = None, results_dir: str | Path = "results",
                      **options: Any) -> TrainResult:
    """Train a video model on the normal training clips of ``category``, holding out whole clips (see :func:`train_model`).

    The frame size defaults to the video model's own (``image_size`` in its config).
    """
    return train_model("video", data_dir, category, model, results_dir, **options)


_PREPARE: dict[str, Callable[..., _TrainingData]] = {"image": _image_data, "video": _video_data}
