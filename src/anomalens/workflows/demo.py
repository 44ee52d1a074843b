"""The built-in demo: synthetic image and video data, small trained models, example inputs for the UI.

The first run writes ``demo_data/`` (washers on a bench, parts on a conveyor), trains the default image and
video models at small sizes into ``results/demo_*`` and evaluates them on their test splits; later runs find
them (``demo_data/demo.json``) and start at once. Honest as everywhere: thresholds come from held-out normal
training data; the test split is only used by the evaluation.

>>> assets = prepare_demo("demo_data", "results")          # doctest: +SKIP
>>> assets.image_run, assets.image_examples[:2]             # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalens.errors import AnomalensError
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "demo.json"
IMAGE_RUN = "demo_synthetic_widget"
VIDEO_RUN = "video_demo_synthetic_conveyor"
DEMO_IMAGE_SIZE = 128
DEMO_VIDEO_SIZE = (96, 128)  # the synthetic clips' own size: no upscaling, a smaller grid to fit


@dataclass
class DemoAssets:
    """What the demo prepared: where data and models are, and inputs to try."""

    data_root: Path
    results_dir: Path
    image_run: Path | None = None
    video_run: Path | None = None
    image_examples: list[Path] = field(default_factory=list)
    video_examples: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_run": str(self.image_run) if self.image_run else None,
            "video_run": str(self.video_run) if self.video_run else None,
            "image_examples": [str(p) for p in self.image_examples],
            "video_examples": [str(p) for p in self.video_examples],
        }


def _model_ready(run_dir: Path) -> bool:
    """A demo model that this version can load (one saved by an older version with other settings is rebuilt)."""
    from anomalens.errors import AnomalensError
    from anomalens.models.base import WEIGHTS_CHECKSUM, WEIGHTS_FILE, detector_class
    from anomalens.runtime import file_sha256
    from anomalens.workflows.runs import MODEL_DIR, read_model_config

    weights = run_dir / MODEL_DIR / WEIGHTS_FILE
    if not weights.is_file():
        return False
    try:
        meta = read_model_config(run_dir)
        detector_class(meta["model"]).config_class.from_dict(meta["config"])
    except (AnomalensError, TypeError, ValueError, KeyError):
        return False
    # damaged weights would fail to load in the UI: rebuilt instead, like a model of another version
    return meta.get(WEIGHTS_CHECKSUM) is None or file_sha256(weights) == meta[WEIGHTS_CHECKSUM]


def _image_examples(category_dir: Path) -> list[Path]:
    """One normal and one of each defect type: a first look covers every case."""
    picks = []
    test = category_dir / "test"
    for folder in sorted(test.iterdir(), key=lambda p: (p.name != "good", p.name)) if test.is_dir() else []:
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
        picks.extend(images[:1])
    return picks


def _video_examples(category_dir: Path) -> list[Path]:
    test = category_dir / "test"
    videos = sorted(test.glob("*/*.mp4")) if test.is_dir() else []
    return sorted(videos, key=lambda p: (p.parent.name != "normal", p.parent.name))


def prepare_demo(
    demo_dir: str | Path = "demo_data",
    results_dir: str | Path = "results",
    *,
    device: str = "auto",
    seed: int = 0,
    force: bool = False,
    video: bool = True,
    reporter: Reporter = SILENT,
) -> DemoAssets:
    """Create (or find) the demo data and models. ``force`` rebuilds everything; ``video=False`` skips video."""
    from anomalens.data.synthetic import DEFAULT_CATEGORY, make_synthetic_image_dataset
    from anomalens.runtime import seed_everything

    seed_everything(seed)
    demo_dir, results_dir = Path(demo_dir).resolve(), Path(results_dir).resolve()
    image_root, video_root = demo_dir / "images", demo_dir / "video"
    assets = DemoAssets(data_root=demo_dir, results_dir=results_dir)

    # ---- images ----
    image_category = image_root / DEFAULT_CATEGORY
    if force or not (image_category / "train" / "good").is_dir():
        reporter.log(f"writing the synthetic image dataset to {image_category}")
        make_synthetic_image_dataset(image_root, DEFAULT_CATEGORY, seed=seed)
    assets.image_examples = _image_examples(image_category)
    run = results_dir / IMAGE_RUN
    if force or not _model_ready(run):
        assets.image_run = _train_and_evaluate("image", image_root, DEFAULT_CATEGORY, results_dir, device, seed, reporter, assets)
    else:
        assets.image_run = run

    # ---- video ----
    if video:
        from anomalens.data.synthetic_video import DEFAULT_VIDEO_CATEGORY, make_synthetic_video_dataset

        video_category = video_root / DEFAULT_VIDEO_CATEGORY
        if force or not (video_category / "train").is_dir():
            reporter.log(f"writing the synthetic video dataset to {video_category}")
            make_synthetic_video_dataset(video_root, DEFAULT_VIDEO_CATEGORY, n_train=4, n_test=5, seed=seed)
        assets.video_examples = _video_examples(video_category)
        run = results_dir / VIDEO_RUN
        if force or not _model_ready(run):
            assets.video_run = _train_and_evaluate(
                "video", video_root, DEFAULT_VIDEO_CATEGORY, results_dir, device, seed, reporter, assets)
        else:
            assets.video_run = run

    write_json_atomic(demo_dir / MANIFEST, assets.to_dict())
    return assets


def _train_and_evaluate(kind: str, data_dir: Path, category: str, results_dir: Path, device: str, seed: int,
                        reporter: Reporter, assets: DemoAssets) -> Path | None:
    """Train the default ``kind`` ("image" or "video") model at demo size, evaluate it, return its run folder.

    A failure is recorded in ``assets.problems`` instead of raised, so the other half of the demo still works.
    """
    from anomalens.workflows.kinds import data_kind

    table = data_kind(kind)
    train, evaluate, model = table.train, table.evaluate, table.default_model
    size, run_name = (DEMO_IMAGE_SIZE, IMAGE_RUN) if kind == "image" else (DEMO_VIDEO_SIZE, VIDEO_RUN)
    shown = f"{size} px" if isinstance(size, int) else f"{size[0]}x{size[1]} px"
    reporter.log(f"training the demo {kind} model ({model}, {shown})")
    try:
        result = train(data_dir, category, model=model, results_dir=results_dir, image_size=size, seed=seed,
                       device=device, reporter=reporter, run_name=run_name)
        reporter.log(f"evaluating the demo {kind} model on its test split")
        evaluate(result.run_dir, device=device, reporter=reporter)
        return Path(result.run_dir)
    except AnomalensError as exc:
        assets.problems.append(f"{kind} model: {exc}")
        return None

