"""The detector contract every model follows, and how models are saved and loaded.

Two contracts share one persistence base (:class:`BaseDetector`): :class:`ImageDetector` (alias
``Detector``: ``fit``/``predict`` on image tensors) and ``VideoDetector`` in :mod:`anomalens.models.video.base`
(``fit_clips``/``predict_clip`` on clips). A detector looks like a scikit-learn estimator: its constructor takes one config dataclass, ``fit`` learns
from normal images and returns ``self``, ``predict`` scores images, ``save``/``load`` use a folder with
``config.json`` (config, preprocessing, calibration, versions, the SHA-256 of the weights) and
``weights.safetensors`` (tensors only, so loading never executes code; it has no checksum of its own, so a
damaged copy would load silently and score differently: loading refuses weights whose SHA-256 differs from the
one recorded). Learned state ends in an underscore (``calibration_``, ``history_``).

>>> detector = load_detector("results/bottle_20261128_120000/model")   # doctest: +SKIP
>>> prediction = detector.predict(images)                              # doctest: +SKIP
>>> prediction.scores, prediction.maps.shape, prediction.labels        # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from anomalens import __version__
from anomalens.data.preprocessing import Preprocessing, to_float
from anomalens.errors import Cancelled, CheckpointError, ConfigError
from anomalens.metrics.drift import DriftReference, typical_distances
from anomalens.metrics.threshold import DEFAULT_TARGET_FPR, Calibration, calibrate
# the newest format of config.json, what save writes: the schema's table of the fields each format version added
from anomalens.models.schema import FORMAT_VERSION, lowest_format
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_dir, file_sha256, resolve_device, write_json_atomic

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"
WEIGHTS_CHECKSUM = "weights_sha256"  # config.json's SHA-256 of WEIGHTS_FILE (absent in models saved before it)
MODEL_DIR = "model"  # a run folder's model subfolder (workflows/runs.py), which every loader also accepts

# name -> "module:Class"; imported lazily so that loading one model never imports the others
MODEL_REGISTRY: dict[str, str] = {
    "patchcore": "anomalens.models.image.patchcore:PatchCore",
    "padim": "anomalens.models.image.padim:Padim",
    "autoencoder": "anomalens.models.image.autoencoder:Autoencoder",
    "convlstm": "anomalens.models.video.convlstm:ConvLSTMDetector",
    "stfeatures": "anomalens.models.video.stfeatures:SpatioTemporalFeatures",
}


@dataclass
class DetectorConfig:
    """Settings shared by every model; each model subclasses this with its own fields."""

    image_size: tuple[int, int] = (256, 256)
    seed: int = 0
    batch_size: int = 16  # images per batch
    target_fpr: float = DEFAULT_TARGET_FPR  # share of normal images the threshold may flag (0.01 = 1%)

    # Fields added after models were saved, with the value that reproduces how those models were fitted
    # (a new default may differ: an old model must keep scoring as it did). Used by load_detector only.
    SAVED_BEFORE: ClassVar[dict[str, Any]] = {}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DetectorConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown settings for {cls.__name__}: {', '.join(unknown)}")
        values = {}
        for name, value in data.items():
            default = known[name].default
            values[name] = tuple(value) if isinstance(default, tuple) and value is not None else value
        return cls(**values)


@dataclass
class Prediction:
    """What a detector says about a batch of N images of size H x W.

    ``scores``: raw image scores ``(N,)``; ``maps``: raw anomaly maps ``(N, H, W)`` on the same scale as the
    scores (image score = max of the smoothed map); ``views``: what the model saw or rebuilt, RGB float in
    [0, 1] ``(N, 3, H, W)`` (the autoencoder's reconstruction), or None.
    """

    scores: np.ndarray
    maps: np.ndarray
    views: np.ndarray | None = None
    calibration: Calibration | None = None

    @property
    def normalized_scores(self) -> np.ndarray:
        return self._calibrated().normalize(self.scores)

    @property
    def normalized_maps(self) -> np.ndarray:
        return self._calibrated().normalize(self.maps)

    @property
    def labels(self) -> np.ndarray:
        return self._calibrated().is_anomalous(self.scores)

    def typical_cells(self) -> np.ndarray:
        """Each item's typical map value ``(N,)`` (the median of its map), what the drift warning compares with the
        fit-time range (:func:`~anomalens.metrics.drift.assess_drift` takes the prediction itself)."""
        return typical_distances(self.maps)

    @property
    def defect_masks(self) -> np.ndarray:
        """``bool`` ``(N, H, W)``: the pixels above the pixel threshold (see ``metrics.regions`` for regions)."""
        return self._calibrated().defect_mask(self.maps)

    def _calibrated(self) -> Calibration:
        if self.calibration is None:
            raise RuntimeError("this detector has no threshold yet: fit it with held-out normal data first")
        return self.calibration


@dataclass
class HeldOutScores:
    """What a model says about its held-out normal data: raw scores, each item's typical distance (median of
    its map, for the drift check) and, for video, the number of frames of each clip in ``scores`` (in order)."""

    scores: np.ndarray
    typical: np.ndarray | None  # None: no fair measure of the normal range (no drift reference)
    series_lengths: list[int] | None = None
    maps: np.ndarray | None = None  # images: their anomaly maps, which set the pixel threshold of defect regions


class BaseDetector(ABC):
    """What every detector shares, image or video: a config, learned state, the threshold and persistence.

    Subclasses are :class:`ImageDetector` (``fit``/``predict`` on image tensors) and
    :class:`~anomalens.models.video.base.VideoDetector` (``fit_clips``/``predict_clip`` on clips).
    """

    name: ClassVar[str]
    kind: ClassVar[str]  # "image" or "video"
    config_class: ClassVar[type[DetectorConfig]] = DetectorConfig

    def __init__(self, config: DetectorConfig | None = None, device: str | torch.device = "cpu") -> None:
        self.config = config if config is not None else self.config_class()
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.calibration_: Calibration | None = None
        self.drift_reference_: DriftReference | None = None  # typical distances of held-out normal data
        self.history_: list[dict[str, Any]] = []
        self.interrupted_ = False

    @abstractmethod
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything learned, as named tensors (saved with safetensors)."""

    @abstractmethod
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` returned."""

    def size_summary(self) -> dict[str, Any]:
        """What the learned state's size depends on (PatchCore: bank entries and search), for benchmarks."""
        return {}

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(image_size=tuple(self.config.image_size))  # type: ignore[arg-type]

    @property
    def is_fitted(self) -> bool:
        return self.calibration_ is not None

    def _learn_then_calibrate(
        self, learn: Callable[[Reporter], None], held_out_scores: Callable[[Reporter], "HeldOutScores"], reporter: Reporter
    ) -> None:
        """Run ``learn``, then set the threshold and the drift reference on ``held_out_scores`` (what the
        model says about held-out normal data).

        A model that can keep its best epoch honours Ctrl-C / Cancel by setting ``interrupted_``; it is then
        still calibrated (without the stop request, and once more quietly if a second stop cuts the threshold
        pass short). A model that cannot keep anything lets the interruption propagate.
        """
        try:
            learn(reporter)
        except (KeyboardInterrupt, Cancelled):
            if not self.interrupted_:
                raise
        if self.interrupted_:
            reporter = dataclasses.replace(reporter, cancel_event=None)
        try:
            scores = held_out_scores(reporter)
        except (KeyboardInterrupt, Cancelled):
            if not self.interrupted_:
                raise
            reporter.log("choosing the threshold on the held-out data")  # stopped during that pass: it takes seconds
            scores = held_out_scores(Reporter(show_tqdm=reporter.show_tqdm, interactive=reporter.interactive))
        self.calibration_ = calibrate(scores.scores, self.config.target_fpr, scores.series_lengths, normal_maps=scores.maps)
        self.drift_reference_ = (None if scores.typical is None
                                 else DriftReference.from_typical(scores.typical, self.calibration_.validation_std))

    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into ``folder``, atomically as a whole; the config
        records the weights' SHA-256, which :func:`load_detector` checks."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_tensors().items()}
            save_file(tensors, str(tmp / WEIGHTS_FILE))
            write_json_atomic(tmp / CONFIG_FILE, {**self.describe(), WEIGHTS_CHECKSUM: file_sha256(tmp / WEIGHTS_FILE)})
        return folder

    def describe(self) -> dict[str, Any]:
        """The JSON saved beside the weights: enough to rebuild the model and check compatibility.

        The image size is part of ``config`` only (older files also repeat it under ``preprocessing``, which
        loading ignores).
        """
        return {
            "format_version": lowest_format(self.name),  # what an older anomalens can still read, if it can
            "anomalens_version": __version__,
            "model": self.name,
            "kind": self.kind,
            "config": self.config.to_dict(),
            "calibration": self.calibration_.to_dict() if self.calibration_ is not None else None,
            "drift_reference": self.drift_reference_.to_dict() if self.drift_reference_ is not None else None,
            "interrupted": self.interrupted_,
        }

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> "BaseDetector":
        """Load a model folder saved by :meth:`save`; on a concrete model class, refuse other model types."""
        detector = load_detector(folder, device=device)
        if "name" in cls.__dict__ and not isinstance(detector, cls):
            raise CheckpointError(f"this is a {detector.name} model, not a {cls.name} model", folder)
        return detector


class ImageDetector(BaseDetector):
    """The image contract: ``fit`` on normal images, ``predict`` scores and maps for a batch of images.

    Subclasses set ``name`` and ``config_class`` and implement ``_fit``, ``_score_batch`` and the state hooks.
    """

    kind = "image"

    @abstractmethod
    def _fit(self, train: torch.Tensor, validation: torch.Tensor | None, reporter: Reporter) -> None:
        """Learn from ``uint8`` images ``(N, 3, H, W)``; may use ``validation`` for model selection."""

    @abstractmethod
    def _score_batch(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Float batch in [0, 1] on ``self.device`` -> (scores (B,), maps (B, H, W), views (B, 3, H, W) or None)."""

    def fit(self, train: torch.Tensor, validation: torch.Tensor | None = None, reporter: Reporter = SILENT) -> "ImageDetector":
        """Learn normal appearance from ``train``; pick the threshold on ``validation`` (normal images only).

        Without validation images the threshold comes from the training scores, which makes it optimistic:
        a warning says so.
        """
        self._check_input(train)
        held_out = validation if validation is not None and len(validation) > 0 else None
        self._no_held_out = held_out is None  # read once by fit_with's threshold
        if held_out is None:
            reporter.log("warning: no validation images; the threshold is set on training images and may be low")
            held_out = train
        return self.fit_with(lambda r: self._fit(train, validation, r), held_out, reporter)

    def fit_with(self, learn: Callable[[Reporter], None], held_out: torch.Tensor, reporter: Reporter = SILENT) -> "ImageDetector":
        """:meth:`fit` with the learning done by ``learn(reporter)`` (an engine that spreads it over machines, see
        anomalens.distributed), then the threshold and the drift reference set on the ``held_out`` normal images."""

        # set by fit / fit_batches when there are no validation images, and ``held_out`` is the training set
        no_held_out, self._no_held_out = getattr(self, "_no_held_out", False), False

        def held_out_scores(r: Reporter) -> HeldOutScores:
            extra = self._cross_validated_scores()
            if extra is not None and len(extra) and no_held_out:
                # no held-out images: "held_out" is the training set scored by the memory that learned it, whose
                # low scores would count twice beside the same images scored fairly
                r.log(f"threshold: {len(extra)} training images scored by memories that did not learn them "
                      "(no held-out images); no region threshold of its own and no drift reference: the training "
                      "images' maps, from the memory that learned them, run low (hold some out to have both)")
                return HeldOutScores(extra, None)
            prediction = self.predict(held_out, reporter=r)
            scores = prediction.scores
            if extra is not None and len(extra):
                # normal training images scored by memories built without them (see the method), as video does
                r.log(f"threshold: {len(scores)} held-out images and {len(extra)} training images scored by memories "
                      "that did not learn them")
                scores = np.concatenate([scores, extra])
            # the drift range and the pixel threshold stay those of the held-out images, scored by the model itself
            return HeldOutScores(scores, typical_distances(prediction.maps), maps=prediction.maps)

        self._learn_then_calibrate(learn, held_out_scores, reporter)
        return self

    def _cross_validated_scores(self) -> np.ndarray | None:
        """Image scores of training images by a model that did not learn them (cross-validation folds), to join
        the held-out images in choosing the threshold; None if the model has none. A 10% split of 60 training
        images holds out 6, too few to place a threshold."""
        return None

    @torch.no_grad()
    def predict(self, images: torch.Tensor | Iterable[torch.Tensor], reporter: Reporter = SILENT) -> Prediction:
        """Score ``uint8`` (or float [0, 1]) images ``(N, 3, H, W)`` in batches of ``batch_size``, or an iterable
        of such batches (e.g. :meth:`Preprocessing.iter_images`, which decodes the next batch meanwhile)."""
        if isinstance(images, torch.Tensor):
            self._check_input(images)
            starts = range(0, len(images), self.config.batch_size)
            batches: Iterable[torch.Tensor] = (images[s : s + self.config.batch_size] for s in starts)
            batches = reporter.iter(batches, "score images", total=len(starts))
            size = tuple(images.shape[-2:])
        else:
            batches, size = reporter.iter(images, "score images"), tuple(self.config.image_size)
        scores, maps, views = [], [], []
        for images_batch in batches:
            self._check_input(images_batch)
            s, m, v = self._score_batch(to_float(images_batch).to(self.device))
            scores.append(s.float().cpu().numpy())
            maps.append(m.float().cpu().numpy())
            if v is not None:
                views.append(v.float().cpu().numpy())
        return Prediction(
            scores=np.concatenate(scores) if scores else np.zeros(0, np.float32),
            maps=np.concatenate(maps) if maps else np.zeros((0, *size), np.float32),
            views=np.concatenate(views) if views else None,
            calibration=self.calibration_,
        )

    def _check_input(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")


# The name every image model and the README's API example use.
Detector = ImageDetector


def detector_class(name: str) -> type[BaseDetector]:
    """The class registered under ``name`` (``patchcore``, ``autoencoder``, ...)."""
    if name not in MODEL_REGISTRY:
        raise CheckpointError(f"unknown model type {name!r}; known: {', '.join(sorted(MODEL_REGISTRY))}")
    module_name, class_name = MODEL_REGISTRY[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_detector(name: str, device: str | torch.device = "cpu", **settings: Any) -> BaseDetector:
    """A new, unfitted detector of type ``name`` with ``settings`` for its config dataclass."""
    from anomalens.models.schema import check_settings

    cls = detector_class(name)
    check_settings(cls.config_class, settings, name)  # the same types and caps as a checkpoint on load
    try:
        config = cls.config_class.from_dict(settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid settings for model {name}: {exc}") from None
    return cls(config, device=device)


def resolve_model_dir(path: str | Path) -> Path:
    """The model folder (the one holding ``config.json``) of ``path``: a model folder itself, or a run folder
    (``results/<run>/``, see :mod:`anomalens.workflows.runs`) whose model is in its ``model/`` subfolder."""
    path = Path(path)
    if (path / MODEL_DIR / CONFIG_FILE).is_file():
        return path / MODEL_DIR
    if (path / CONFIG_FILE).is_file():
        return path
    if not path.exists():
        raise CheckpointError("checkpoint not found", path)
    raise CheckpointError(f"not an anomalens model folder (no {CONFIG_FILE} in it or in {MODEL_DIR}/)", path)


def read_model_config(path: str | Path) -> dict[str, Any]:
    """The saved ``config.json`` of a model or run folder, checked for format and version."""
    folder = resolve_model_dir(path)
    from anomalens.models.schema import check_model_config, read_json  # every field, before anything is allocated

    meta = read_json(folder / CONFIG_FILE)
    if not isinstance(meta, dict) or "model" not in meta:
        raise CheckpointError(f"{CONFIG_FILE} does not describe an anomalens model", folder / CONFIG_FILE)
    return check_model_config(meta, folder / CONFIG_FILE)  # the format version first: a newer one says upgrade


def load_detector(path: str | Path, device: str | torch.device = "cpu", kind: str | None = None) -> BaseDetector:
    """Rebuild a saved detector from its model folder or its run folder. ``kind="image"``/``"video"`` refuses a
    model of the other kind."""
    folder = resolve_model_dir(path)
    meta = read_model_config(folder)
    if kind is not None and meta.get("kind") != kind:
        raise CheckpointError(
            f"this is a {meta.get('kind')} model ({meta['model']}); a {kind} model is needed here", folder
        )
    cls = detector_class(meta["model"])
    try:
        config = cls.config_class.from_dict({**cls.config_class.SAVED_BEFORE, **meta["config"]})
    except (TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"incompatible model settings ({exc})", folder / CONFIG_FILE) from None
    try:
        detector = cls(config, device=device)
    except ConfigError as exc:  # settings each valid alone that the model refuses together
        raise CheckpointError(f"model settings refused: {exc.message}", folder / CONFIG_FILE) from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{WEIGHTS_FILE} is missing", folder)
    _check_weights_checksum(weights, meta.get(WEIGHTS_CHECKSUM))  # schema-checked: a SHA-256, or absent
    try:
        tensors = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"corrupt weights file ({exc})", weights) from None
    for name, tensor in tensors.items():  # a NaN weight scores NaN, which no threshold flags
        if tensor.is_floating_point() and bool(torch.isnan(tensor).any()):
            raise CheckpointError(f"tensor {name[:60]} holds NaN values: damaged or badly edited; restore the model "
                                  "folder from a good copy or train again", weights)
    try:
        detector.load_state_tensors(tensors)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"weights do not match the saved config ({exc})", weights) from None
    if meta.get("calibration"):
        detector.calibration_ = Calibration.from_dict(meta["calibration"])
    # absent in models saved before drift was recorded: they load and score as before, without the check (each
    # field was checked by check_model_config)
    detector.drift_reference_ = DriftReference.from_dict(meta.get("drift_reference"))
    detector.interrupted_ = bool(meta.get("interrupted", False))
    return detector


def _check_weights_checksum(weights: Path, expected: str | None) -> None:
    """Refuse weights whose SHA-256 is not the one ``config.json`` recorded: safetensors has no checksum, and a
    flipped bit in a tensor loads fine and silently changes scores. ``None``: saved before checksums, not checked."""
    if expected is not None and file_sha256(weights) != expected:
        raise CheckpointError(f"{WEIGHTS_FILE} does not match the checksum in {CONFIG_FILE}: damaged or changed after "
                              "saving; restore the model folder from a good copy or train again", weights)
