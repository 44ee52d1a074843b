"""Batch scoring of image archives on a Ray cluster, resumable and exactly once.

The sorted input list is cut into blocks of ``block_size`` images (block ``i`` = inputs ``i*B .. i*B+B-1``),
recorded in ``manifest.json``. Ray Data streams the blocks still to do through a pool of actors; each actor
loads the model once, then per block decodes and scores the images with the library's own scoring path
(:func:`anomalens.workflows.predict.read_image_batch` / :func:`~anomalens.workflows.predict.score_image_batch`,
the same as local ``predict``) and writes ``blocks/block-NNNNNN.parquet`` atomically (temporary file, then
rename). A block file exists only when complete, so a job killed half way and started again with the same
command scores only the missing blocks; a block retried after a node died overwrites its file with the same
rows. At the end the driver reads every shard, checks that each input appears exactly once, and writes
``predictions.csv`` and ``predictions.json``::

    OUTPUT/
        manifest.json                 the job: checkpoint, inputs in order, block size
        blocks/block-000000.parquet   path, score, normalized_score, anomalous, threshold, overlay, regions,
                                      image_height, image_width, block
        overlays/<name>_overlay.png   with overlays=True
        predictions.csv, predictions.json   all results, and the per-stage times of this run

>>> report = predict_images_on_ray("results/bottle_run", ["archive/"], "scored/", address="auto")  # doctest: +SKIP
>>> report.count, report.blocks_skipped                                                               # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from anomalens.errors import ConfigError, DataError
from anomalens.metrics.drift import DriftReport, assess_drift
from anomalens.progress import SILENT, Reporter
from anomalens.runtime import atomic_path, file_sha256, write_json_atomic, write_text_atomic
from anomalens.workflows.reports import score_cell

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
BLOCKS_DIR = "blocks"
OVERLAYS_DIR = "overlays"
DEFAULT_BLOCK_SIZE = 64
# whole-job attempts: Ray Data retries a block whose actor died; this covers a pipeline that fails as a whole
JOB_ATTEMPTS = 3


@dataclass
class BatchJob:
    """What ``manifest.json`` records: enough to tell a resumed job from a different one."""

    model_dir: str
    weights_sha256: str
    inputs: list[str]
    block_size: int
    overlays: bool

    @property
    def block_count(self) -> int:
        return -(-len(self.inputs) // self.block_size)

    def block(self, index: int) -> list[str]:
        return self.inputs[index * self.block_size : (index + 1) * self.block_size]

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": MANIFEST_VERSION, "blocks": self.block_count, **asdict(self)}


@dataclass
class RayPredictionReport:
    output_dir: Path
    count: int
    anomalous: int
    blocks: int
    blocks_scored: int  # by this run
    blocks_skipped: int  # finished by an earlier run of the same job
    seconds: float
    steady_images_per_second: float | None = None  # see steady_throughput
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over actors: load, read, score, write
    blocks_per_node: dict[str, int] = field(default_factory=dict)
    csv_path: Path | None = None
    json_path: Path | None = None
    drift: DriftReport | None = None  # the images as a batch against the training data (None: no reference saved)


def block_path(output_dir: Path, index: int) -> Path:
    return output_dir / BLOCKS_DIR / f"block-{index:06d}.parquet"


def plan_job(model_dir: Path, inputs: Iterable[str | Path], block_size: int, overlays: bool) -> BatchJob:
    """The job for ``inputs`` (files or folders): each image once, sorted, so the blocks are the same every run."""
    from anomalens.models.base import WEIGHTS_FILE
    from anomalens.workflows.predict import collect_image_paths

    if block_size < 1:
        raise ConfigError(f"--block-size must be at least 1, got {block_size}")
    paths = sorted({str(p.resolve()) for p in collect_image_paths(list(inputs))})
    # the weights' own checksum: a resumed job must be scored by the same model
    return BatchJob(str(model_dir.resolve()), file_sha256(model_dir / WEIGHTS_FILE), paths, block_size, overlays)


def open_output(output_dir: Path, job: BatchJob) -> set[int]:
    """Create or resume ``output_dir`` for ``job``; remove temporary files a killed run left; return finished blocks."""
    manifest = output_dir / MANIFEST_FILE
    if manifest.is_file():
        try:
            recorded = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"unreadable manifest ({exc})", manifest) from None
        if recorded != job.to_dict():
            changed = [k for k, v in job.to_dict().items() if recorded.get(k) != v]
            raise ConfigError(f"the output folder holds another job (different {', '.join(changed)}): "
                              "choose another --output or delete it", output_dir)
    elif output_dir.exists() and any(output_dir.iterdir()):
        raise ConfigError("the output folder is not empty and holds no manifest.json of a batch job", output_dir)
    (output_dir / BLOCKS_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(manifest, job.to_dict())
    for folder in (output_dir / BLOCKS_DIR, output_dir / OVERLAYS_DIR, output_dir):
        for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
            stale.unlink(missing_ok=True)
    return {i for i in range(job.block_count) if _finished_block(block_path(output_dir, i))}


def _finished_block(path: Path) -> bool:
    """A block written whole by this version: blocks of older versions hold regions in the model's pixels and no
    image size, or no typical distance (the drift check), so a resumed job scores them again rather than mix."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    try:
        return {"image_height", "typical_distance"} <= set(pq.read_schema(path).names)
    except (OSError, ValueError):  # pyarrow's ArrowInvalid is a ValueError: a damaged block is scored again
        return False


class BlockScorer:
    """A Ray Data actor: loads the model once, then scores whole blocks and writes each one's Parquet shard."""

    def __init__(self, model_dir: str, output_dir: str, device: str, threads: int, overlays: bool) -> None:
        started = time.perf_counter()
        import torch

        from anomalens.workflows.runs import load_fitted_detector

        torch.set_num_threads(max(1, threads))
        self.detector = load_fitted_detector(model_dir, "image", device)
        self.output_dir = Path(output_dir)
        self.overlays = overlays
        self.load_seconds = time.perf_counter() - started  # reported with the first block only
        import ray

        self.node = ray.get_runtime_context().get_node_id()[:8]

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("block", "count", "node", "load_s", "read_s", "score_s", "write_s")}
        for index, paths, names in zip(batch["block"], batch["paths"], batch["overlay_names"]):
            stats = self.score_block(int(index), [str(p) for p in paths], [str(n) for n in names])
            for key, value in stats.items():
                out[key].append(value)
        return out

    def score_block(self, index: int, paths: list[str], names: list[str]) -> dict[str, Any]:
        from anomalens.workflows.predict import read_image_batch, score_image_batch

        items = [(Path(p), None) for p in paths]
        started = time.perf_counter()
        images = read_image_batch(self.detector, items)
        read_done = time.perf_counter()
        overlay_paths = [self.output_dir / OVERLAYS_DIR / n for n in names] if self.overlays else None
        results = score_image_batch(self.detector, items, images, overlay_paths)
        score_done = time.perf_counter()
        write_block(block_path(self.output_dir, index), index, results, self.detector.calibration_.threshold)
        stats = {"block": index, "count": len(results), "node": self.node, "load_s": self.load_seconds,
                 "read_s": read_done - started, "score_s": score_done - read_done,
                 "write_s": time.perf_counter() - score_done}
        self.load_seconds = 0.0
        return stats


def write_block(target: Path, index: int, results: Sequence[Any], threshold: float) -> None:
    """One block's rows as a Parquet file, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    regions = [getattr(r, "regions", None) for r in results]  # defect regions, for models that find them
    table = pa.table({
        "path": [str(r.path) for r in results],
        "score": pa.array([r.score for r in results], pa.float64()),
        "normalized_score": pa.array([r.normalized_score for r in results], pa.float64()),
        "anomalous": pa.array([r.anomalous for r in results], pa.bool_()),
        "threshold": pa.array([threshold] * len(results), pa.float64()),
        "overlay": [str(r.overlay_path) if r.overlay_path is not None else None for r in results],
        "regions": [json.dumps(x, default=_plain) if x is not None else None for x in regions],
        # the size the regions are given in: the image's own
        "image_height": pa.array([_side(r, 0) for r in results], pa.int32()),
        "image_width": pa.array([_side(r, 1) for r in results], pa.int32()),
        # what the drift check compares, over the whole job as local predict does over its images
        "typical_distance": pa.array([float(getattr(r, "typical_distance", float("nan"))) for r in results], pa.float64()),
        "block": pa.array([index] * len(results), pa.int32()),
    })
    with atomic_path(target) as tmp:
        pq.write_table(table, tmp)


def _side(result: Any, axis: int) -> int | None:
    size = getattr(result, "image_size", None)
    return int(size[axis]) if size is not None else None


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def predict_images_on_ray(
    checkpoint: str | Path,
    inputs: Iterable[str | Path],
    output_dir: str | Path,
    *,
    address: str | None = None,
    block_size: int = DEFAULT_BLOCK_SIZE,
    actors: int | None = None,
    cpus_per_actor: float = 1.0,
    device: str = "auto",
    overlays: bool = False,
    reporter: Reporter = SILENT,
) -> RayPredictionReport:
    """Score every image of ``inputs`` on the Ray cluster at ``address``; see the module docstring.

    ``actors``: size of the actor pool (default: as many as the cluster's CPUs allow, or one per GPU with
    ``device="cuda"``; ``"auto"`` means cuda when the cluster has GPUs). Running the same call again after an
    interruption scores only the unfinished blocks.
    """
    from anomalens.workflows.runs import resolve_model_dir
    from anomalens.workflows.predict import overlay_names
    from anomalens.workflows.runs import load_fitted_detector

    started = time.perf_counter()
    model_dir = resolve_model_dir(checkpoint)
    detector = load_fitted_detector(model_dir, "image", "cpu")  # fail here, before the cluster, if the model is unusable
    output_dir = Path(output_dir)
    job = plan_job(model_dir, inputs, block_size, overlays)
    done = open_output(output_dir, job)
    skipped = len(done)
    reporter.log(f"{len(job.inputs)} images in {job.block_count} blocks of {block_size}; "
                 f"{skipped} blocks already done in {output_dir}")
    names = overlay_names([Path(p) for p in job.inputs])
    stats: list[dict[str, Any]] = []
    todo = [i for i in range(job.block_count) if i not in done]
    if todo:
        from anomalens.distributed.cluster import cluster_device, connect

        ray = connect(address)
        device = cluster_device(device)
        for attempt in range(1, JOB_ATTEMPTS + 1):
            try:
                stats.extend(_run_pipeline(ray, job, todo, names, output_dir, actors, cpus_per_actor, device,
                                           overlays, reporter, len(done)))
                break
            except ray.exceptions.RayError as exc:
                todo = [i for i in todo if not block_path(output_dir, i).is_file()]
                if attempt == JOB_ATTEMPTS or not todo:
                    raise
                reporter.log(f"the job failed ({type(exc).__name__}); scoring the {len(todo)} unfinished blocks again")
    rows = collect_results(output_dir, job)
    drift = assess_drift(np.array([r["typical_distance"] for r in rows], dtype=np.float64), detector.drift_reference_,
                         typical=True)  # as local predict does: the images as a batch against the training data
    if drift is not None and drift.drifted:
        reporter.log(f"warning: {drift.message}")
    seconds = time.perf_counter() - started
    report = RayPredictionReport(
        output_dir=output_dir, count=len(rows), anomalous=sum(r["anomalous"] for r in rows), blocks=job.block_count,
        blocks_scored=len({s["block"] for s in stats}), blocks_skipped=skipped, seconds=seconds,
        stage_seconds={k: round(sum(s[f"{k}_s"] for s in stats), 3) for k in ("load", "read", "score", "write")},
        blocks_per_node=_count_by(s["node"] for s in stats), steady_images_per_second=steady_throughput(stats),
        drift=drift,
    )
    report.csv_path, report.json_path = write_summary(output_dir, job, rows, report, detector.name)
    reporter.log(f"scored {report.blocks_scored} blocks, skipped {skipped} finished ones; wrote {report.count} "
                 f"results to {output_dir}")
    return report


def _run_pipeline(ray: Any, job: BatchJob, todo: list[int], names: list[str], output_dir: Path, actors: int | None,
                  cpus_per_actor: float, device: str, overlays: bool, reporter: Reporter, already: int) -> list[dict]:
    """One Ray Data pass over the ``todo`` blocks; yields each block's stage times as it finishes."""
    import ray.data

    gpus = 1.0 if device == "cuda" else 0.0
    resources = ray.cluster_resources()
    if actors is None:
        available = resources.get("GPU", 0.0) if gpus else resources.get("CPU", 0.0) / cpus_per_actor
        actors = max(1, int(available))
    actors = min(actors, len(todo))
    b = job.block_size
    rows = [{"block": i, "paths": job.block(i), "overlay_names": names[i * b : (i + 1) * b]} for i in todo]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    scored = dataset.map_batches(
        BlockScorer,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus_per_actor,
        num_gpus=gpus,
        fn_constructor_kwargs={"model_dir": job.model_dir, "output_dir": str(output_dir.resolve()),
                               "device": device, "threads": max(1, int(cpus_per_actor)), "overlays": overlays},
    )
    stats = []
    total = job.block_count
    reporter.log(f"scoring {len(todo)} blocks with {actors} actor(s)")
    for row in reporter.iter(scored.iter_rows(), "score blocks", total=len(todo),
                             info=lambda: f"{already + len(stats)}/{total} blocks"):
        stats.append({k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()})
        stats[-1]["done_at"] = time.perf_counter()
    return stats


def steady_throughput(stats: list[dict[str, Any]]) -> float | None:
    """Images per second between the first and the last finished block: the pool at work, without its start-up
    (process start, model load), which a long job pays once."""
    if len(stats) < 3:
        return None
    ordered = sorted(stats, key=lambda s: s["done_at"])
    span = ordered[-1]["done_at"] - ordered[0]["done_at"]
    return sum(s["count"] for s in ordered[1:]) / span if span > 0 else None


def collect_results(output_dir: Path, job: BatchJob) -> list[dict[str, Any]]:
    """All shards' rows in input order; an error unless each input appears exactly once."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for index in range(job.block_count):
        path = block_path(output_dir, index)
        if not path.is_file():
            raise DataError(f"block {index} was not scored; run the same command again to finish the job", path)
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises its own types for damaged files
            raise DataError(f"unreadable result shard ({exc}); delete it and run again", path) from None
        if table.column("path").to_pylist() != job.block(index):
            raise DataError(f"result shard does not hold the images of block {index}; delete it and run again", path)
        rows.extend(table.to_pylist())
    if [r["path"] for r in rows] != job.inputs:
        raise DataError("the result shards do not hold each input exactly once", output_dir)
    return rows


def write_summary(output_dir: Path, job: BatchJob, rows: list[dict[str, Any]], report: RayPredictionReport,
                  model: str) -> tuple[Path, Path]:
    """``predictions.csv`` (one line per image) and ``predictions.json`` (results, counts, times), atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "score", "normalized_score", "anomalous", "threshold", "overlay", "regions"])
    for r in rows:
        writer.writerow([r["path"], score_cell(r["score"], ".9g"), score_cell(r["normalized_score"], ".6f"),
                         int(r["anomalous"]), f"{r['threshold']:.9g}", r["overlay"] or "", r["regions"] or ""])
    csv_path = write_text_atomic(output_dir / "predictions.csv", buffer.getvalue())
    summary = {k: v for k, v in asdict(report).items() if k not in ("output_dir", "csv_path", "json_path", "drift")}
    json_path = write_json_atomic(output_dir / "predictions.json", {
        "model": model,
        "checkpoint": job.model_dir,
        "engine": "ray",
        "created": datetime.now().isoformat(timespec="seconds"),
        **summary,
        "seconds": round(report.seconds, 3),
        "images_per_second": round(report.count / max(report.seconds, 1e-9), 3),
        "threshold": rows[0]["threshold"] if rows else None,
        "normalized_threshold": 0.5,
        "drift": report.drift.to_dict() if report.drift is not None else None,
        "results": [{k: r[k] for k in ("path", "score", "normalized_score", "anomalous", "overlay")}
                    | {"regions": json.loads(r["regions"]) if r["regions"] else None}
                    | {k: r[k] for k in ("image_height", "image_width") if r.get(k) is not None}  # blocks of older jobs lack them
                    for r in rows],
    })
    return csv_path, json_path


def _count_by(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def stale_files(output_dir: Path) -> list[Path]:
    """Temporary files left in ``output_dir`` (none after a finished job)."""
    return sorted(p for p in Path(output_dir).rglob(".*.tmp"))

