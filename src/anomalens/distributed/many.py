"""Many models, many videos: one Ray task per category to train, one per video to analyse.

Each task runs the ordinary local workflow (:func:`~anomalens.workflows.train.train_image_model`,
:func:`~anomalens.workflows.predict.analyze_video`) on a worker, so each category gets its own complete run
folder and each video its own analysis folder. A task that fails (bad data) does not stop the others; its
error comes back with its name.

>>> outcomes = train_categories_on_ray("mvtec_ad", ["bottle", "screw"], address="auto")   # doctest: +SKIP
>>> [o.run_dir for o in outcomes]                                                         # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from anomalens.errors import AnomalensError, DataError
from anomalens.progress import SILENT, Reporter


@dataclass
class TaskOutcome:
    """What became of one category or video: its output folder, or the error that stopped it."""

    name: str
    output: Path | None
    error: str | None
    node: str
    details: dict[str, Any]


def image_categories(data_dir: str | Path) -> list[str]:
    """Every category folder of ``data_dir`` that holds ``train/good`` (``--category all``), sorted."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError("dataset folder not found", root)
    found = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError("no category folders with train/good/ in it", root)
    return found


def train_categories_on_ray(
    data_dir: str | Path,
    categories: Sequence[str],
    model: str = "patchcore",
    results_dir: str | Path = "results",
    *,
    address: str | None = None,
    cpus_per_task: float = 1.0,
    reporter: Reporter = SILENT,
    **train_settings: Any,
) -> list[TaskOutcome]:
    """Train one ``model`` per category in parallel Ray tasks; ``["all"]`` means every category of ``data_dir``.

    ``train_settings`` go to :func:`~anomalens.workflows.train.train_image_model` (image_size, seed, ...).
    """
    names = image_categories(data_dir) if list(categories) == ["all"] else list(dict.fromkeys(categories))
    jobs = [(name, (str(Path(data_dir).resolve()), name, model, str(Path(results_dir).resolve()), train_settings))
            for name in names]
    return _run_tasks(_train_one, jobs, address, cpus_per_task, reporter, "train categories",
                      gpu=train_settings.get("device") == "cuda")


def analyze_videos_on_ray(
    checkpoint: str | Path,
    videos: Sequence[str | Path],
    output_dir: str | Path | None = None,
    *,
    address: str | None = None,
    cpus_per_task: float = 1.0,
    reporter: Reporter = SILENT,
    device: str = "auto",
    fps: float | None = None,
    overwrite: bool = False,
) -> list[TaskOutcome]:
    """Analyse each video in its own Ray task; outputs go to ``output_dir/<video name>/`` (``<name>_2``, ... for
    videos of one name), by default to a new ``RUN_DIR/analysis/<video name>_<time>/`` per video as for one video;
    ``overwrite`` as for :func:`~anomalens.workflows.predict.analyze_video`.

    Default folders are created here, one per video, before any task starts (:func:`~anomalens.workflows.runs.
    claim_new_dir`): tasks left to name their own from the video's name and the second would share one folder
    when two videos of one name (``cam1/line.mp4``, ``cam2/line.mp4``) start in the same second.
    """
    from anomalens.workflows.runs import ANALYSIS_DIR, claim_new_dir, missing_folders, open_run, safe_name

    from anomalens.distributed.cluster import cluster_device, connect

    connect(address)
    device = cluster_device(device)
    checkpoint = str(Path(checkpoint).resolve())
    names = [safe_name(_video_name(Path(v))) for v in videos]
    claimed: list[Path] = []  # default folders made here; removed again if their video fails
    try:
        if output_dir is None:
            analysis = open_run(checkpoint)[1] / ANALYSIS_DIR
            made = missing_folders(analysis)  # removed too if no video gets through
            for name in names:
                claimed.append(claim_new_dir(analysis, name))
            targets = list(claimed)
            claimed += made
        else:
            targets = [(Path(output_dir) / folder).resolve() for folder in _unique(names)]
        jobs = [(str(video), (checkpoint, str(Path(video).resolve()), str(target), device, fps, overwrite))
                for video, target in zip(videos, targets)]
        outcomes = _run_tasks(_analyze_one, jobs, address, cpus_per_task, reporter, "analyse videos",
                              gpu=device == "cuda")
    except BaseException:
        for folder in claimed:
            _remove_if_empty(folder)
        raise
    for outcome, folder in zip(outcomes, claimed):
        if outcome.error is not None:
            _remove_if_empty(folder)
    for folder in claimed[len(outcomes):]:  # analysis/ itself, made here: kept only if a video's folder is in it
        _remove_if_empty(folder)
    return outcomes


def _run_tasks(function: Any, jobs: list[tuple[str, tuple]], address: str | None, cpus: float, reporter: Reporter,
               desc: str, gpu: bool = False) -> list[TaskOutcome]:
    from anomalens.distributed.cluster import connect

    ray = connect(address)
    remote = ray.remote(num_cpus=cpus, num_gpus=1 if gpu else 0)(function)
    reporter.log(f"{len(jobs)} tasks on a cluster of {ray.cluster_resources().get('CPU', 0):g} CPUs")
    # by position, not name: the same video listed twice is two tasks with two folders, and two outcomes
    refs = {remote.remote(cpus, *arguments): (index, name) for index, (name, arguments) in enumerate(jobs)}
    outcomes: dict[int, TaskOutcome] = {}
    pending = list(refs)
    for _ in reporter.iter(range(len(jobs)), desc):
        ready, pending = ray.wait(pending, num_returns=1)
        try:
            outcome = ray.get(ready[0])
        except Exception as exc:  # noqa: BLE001  a task's crash (a bug, a worker killed for memory) is that
            # task's failure: the others' results, finished or still running, must not be thrown away with it
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            outcome = TaskOutcome(refs[ready[0]][1], None, f"task failed: {(lines[-1] if lines else type(exc).__name__)[:300]}",
                                  "?", {})
        outcomes[refs[ready[0]][0]] = outcome
        reporter.log(f"{outcome.name}: {outcome.error or outcome.output}")
    return [outcomes[index] for index in range(len(jobs))]


def _node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()[:8]


def _train_one(threads: float, data_dir: str, category: str, model: str, results_dir: str,
               settings: dict[str, Any]) -> TaskOutcome:
    import torch

    from anomalens.workflows.train import train_image_model

    torch.set_num_threads(max(1, int(threads)))
    try:
        result = train_image_model(data_dir, category, model, results_dir, **settings)
    except AnomalensError as exc:
        return TaskOutcome(category, None, str(exc), _node(), {})
    cal = result.detector.calibration_
    return TaskOutcome(category, result.run_dir, None, _node(), {"threshold": cal.threshold if cal else None})


def _analyze_one(threads: float, checkpoint: str, video: str, output_dir: str | None, device: str,
                 fps: float | None, overwrite: bool = False) -> TaskOutcome:
    import torch

    from anomalens.workflows.predict import analyze_video

    torch.set_num_threads(max(1, int(threads)))
    try:
        analysis = analyze_video(checkpoint, video, output_dir, device=device, fps=fps, overwrite=overwrite)
    except AnomalensError as exc:
        return TaskOutcome(video, None, str(exc), _node(), {})
    return TaskOutcome(video, analysis.output_dir, None, _node(), {
        "frames": int(analysis.scores.size), "anomalous_frames": int(analysis.anomalous.sum()),
        "events": len(analysis.events)})


def _video_name(path: Path) -> str:
    """The name a video's analysis folder is named from, as :attr:`VideoClip.name` gives it to local analysis:
    a file's stem, a frame folder's whole name."""
    return path.stem if path.is_file() else path.name


def _unique(names: list[str]) -> list[str]:
    """``names`` made distinct, the first of each kept as it is: a repeat becomes ``name_2``, ``name_3``, ... but
    never a name that is also given (``line``, ``line``, ``line_2`` -> ``line``, ``line_3``, ``line_2``), nor one
    that differs only in case (one folder on a case-insensitive disk)."""
    given = {name.casefold() for name in names}
    taken: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 2
        while candidate.casefold() in taken or (candidate != name and candidate.casefold() in given):
            candidate, n = f"{name}_{n}", n + 1
        taken.add(candidate.casefold())
        out.append(candidate)
    return out


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only an empty folder: never what a task or the user put there
    except OSError:
        pass
