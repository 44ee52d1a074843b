"""Ray batch scoring on a local cluster of one-CPU nodes: scaling from one node to two, a node killed mid-job,
a driver killed mid-job and resumed; optionally the MVTec bottle equivalence and accuracy checks.

    PYTHONPATH=src python benchmarks/ray_scaling.py --images 2000 --output ray_scaling.json
    PYTHONPATH=src python benchmarks/ray_scaling.py --images 600 --bottle ../shared/data/mvtec_ad

Everything runs on this machine: the "nodes" are `ray start` processes with one CPU each, so two nodes can
only be faster than one if two cores are free. Say what else ran when you quote the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from PIL import Image  # noqa: E402

from anomalens.data.synthetic import DEFAULT_CATEGORY, make_synthetic_image_dataset, synthetic_image  # noqa: E402
from anomalens.distributed.batch import collect_results, plan_job, predict_images_on_ray, stale_files  # noqa: E402
from anomalens.distributed.cluster import connect  # noqa: E402
from anomalens.distributed.local_cluster import LocalCluster  # noqa: E402
from anomalens.workflows.runs import resolve_model_dir  # noqa: E402
from anomalens.workflows.train import train_image_model  # noqa: E402


def make_images(folder: Path, count: int, size: int) -> Path:
    for i in range(count):
        image, _ = synthetic_image(10_000 + i, size, "scratch" if i % 20 == 0 else None)
        Image.fromarray(image).save(folder / f"img_{i:05d}.png")
    return folder


def score(run_dir: Path, images: Path, output: Path, address: str, block_size: int) -> dict:
    report = predict_images_on_ray(run_dir, [images], output, address=address, block_size=block_size)
    return {"images": report.count, "seconds": round(report.seconds, 2),
            "images_per_second": round(report.count / report.seconds, 2),
            "steady_images_per_second": round(report.steady_images_per_second or 0.0, 2),
            "stage_seconds_summed_over_actors": report.stage_seconds, "blocks_per_node": report.blocks_per_node}


def shards(output: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in (output / "blocks").glob("block-*.parquet")}


def wait_for_shards(output: Path, count: int) -> None:
    while len(shards(output)) < count:
        time.sleep(0.05)


def exactly_once(run_dir: Path, images: Path, output: Path, block_size: int) -> bool:
    rows = collect_results(output, plan_job(resolve_model_dir(run_dir), [images], block_size, False))
    return len({r["path"] for r in rows}) == len(rows) == len(list(images.iterdir()))


def fault_run(cluster: LocalCluster, run_dir: Path, images: Path, output: Path, block_size: int, after: int) -> dict:
    """Kill the second node (SIGKILL to its process group) once ``after`` blocks are written."""
    outcome: dict = {}
    started = time.perf_counter()

    def job() -> None:
        outcome["report"] = predict_images_on_ray(run_dir, [images], output, address=cluster.address,
                                                  block_size=block_size)

    thread = threading.Thread(target=job)
    thread.start()
    wait_for_shards(output, after)
    written = len(shards(output))
    killed_at = time.perf_counter() - started
    cluster.kill_node(cluster.processes[1])  # returns once the head has marked the node dead
    thread.join()
    report = outcome["report"]
    return {"images": report.count, "blocks": report.blocks, "blocks_written_before_kill": written,
            "killed_after_seconds": round(killed_at, 1), "seconds": round(report.seconds, 1),
            "each_input_exactly_once": exactly_once(run_dir, images, output, block_size),
            "partial_files_left": len(stale_files(output))}


def resume_run(cluster: LocalCluster, run_dir: Path, images: Path, output: Path, block_size: int, after: int) -> dict:
    """A driver process killed (SIGKILL) once ``after`` blocks are written, then the same command again."""
    command = [sys.executable, "-m", "anomalens", "predict", "--checkpoint", str(run_dir), str(images), "--engine", "ray",
               "--address", cluster.address, "--output", str(output), "--block-size", str(block_size), "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    wait_for_shards(output, after)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    time.sleep(2)
    before = shards(output)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((output / "predictions.json").read_text())
    after_files = shards(output)
    return {"blocks": summary["blocks"], "blocks_done_when_killed": len(before),
            "blocks_skipped_on_resume": summary["blocks_skipped"], "blocks_scored_on_resume": summary["blocks_scored"],
            "finished_blocks_rewritten": sum(after_files[k] != v for k, v in before.items()),
            "resume_seconds": round(time.perf_counter() - started, 1),
            "each_input_exactly_once": exactly_once(run_dir, images, output, block_size)}


def bottle_checks(mvtec: Path, address: str, work: Path) -> dict:
    """Ray scoring of the bottle test set against local predict; Ray training against local training."""
    from anomalens.distributed.training import ray_memory_bank_fit
    from anomalens.workflows.evaluate import evaluate_image_model
    from anomalens.workflows.predict import predict_images

    local = train_image_model(mvtec, "bottle", "patchcore", work / "bottle_local", device="cpu")
    distributed = train_image_model(mvtec, "bottle", "patchcore", work / "bottle_ray", device="cpu",
                                    engine=ray_memory_bank_fit(address))
    a = evaluate_image_model(local.run_dir, device="cpu").metrics
    b = evaluate_image_model(distributed.run_dir, device="cpu").metrics
    test = mvtec / "bottle" / "test"
    local_scores = {str(r.path.resolve()): r.score for r in predict_images(local.run_dir, [test], None, device="cpu").results}
    report = predict_images_on_ray(local.run_dir, [test], work / "bottle_scored", address=address, block_size=16)
    ray_rows = json.loads(report.json_path.read_text())["results"]
    worst = max(abs(r["score"] - local_scores[r["path"]]) / abs(local_scores[r["path"]]) for r in ray_rows)
    return {"test_images": len(ray_rows), "max_relative_score_difference": worst,
            "local": {k: a[k] for k in ("image_auroc", "pixel_auroc")} | {"bank": len(local.detector.memory_bank_)},
            "ray": {k: b[k] for k in ("image_auroc", "pixel_auroc")} | {"bank": len(distributed.detector.memory_bank_)},
            "image_auroc_difference": abs(a["image_auroc"] - b["image_auroc"]),
            "pixel_auroc_difference": abs(a["pixel_auroc"] - b["pixel_auroc"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000, help="synthetic images to score (default: 2000)")
    parser.add_argument("--image-size", type=int, default=64, help="side of the stored images (default: 64)")
    parser.add_argument("--model-size", type=int, default=128, help="image size of the model (default: 128)")
    parser.add_argument("--block-size", type=int, default=20, help="images per block (default: 20)")
    parser.add_argument("--bottle", type=Path, default=None, help="MVTec AD root: also run the bottle checks")
    parser.add_argument("--skip-faults", action="store_true", help="only the scaling figures")
    parser.add_argument("--output", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()

    results: dict = {"machine": f"{os.cpu_count()} cores, shared with other jobs while measuring",
                     "settings": vars(args) | {"bottle": str(args.bottle), "output": str(args.output)}}
    with tempfile.TemporaryDirectory(prefix="ray_scaling_") as tmp:
        work = Path(tmp)
        data = make_synthetic_image_dataset(work / "data", seed=0)
        run_dir = train_image_model(data, DEFAULT_CATEGORY, "patchcore", work / "runs", image_size=args.model_size,
                                    device="cpu").run_dir
        (work / "images").mkdir()
        images = make_images(work / "images", args.images, args.image_size)
        (work / "warm_up").mkdir()
        warm_up = make_images(work / "warm_up", 2 * args.block_size, args.image_size)
        cluster = LocalCluster(nodes=1, env={"PYTHONPATH": str(REPO / "src")}).start()
        try:
            connect(cluster.address)
            # a driver's first Ray Data job also pays one-time costs (shipping the code to the nodes, Ray Data's
            # own actors): a small job first, on each configuration, keeps them out of the comparison
            results["first_job"] = score(run_dir, warm_up, work / "warm1", cluster.address, args.block_size)
            results["one_node"] = score(run_dir, images, work / "out1", cluster.address, args.block_size)
            print("one node:", results["one_node"], flush=True)
            cluster.add_node()
            score(run_dir, warm_up, work / "warm2", cluster.address, args.block_size)
            results["two_nodes"] = score(run_dir, images, work / "out2", cluster.address, args.block_size)
            print("two nodes:", results["two_nodes"], flush=True)
            for key in ("images_per_second", "steady_images_per_second"):
                one, two = results["one_node"][key], results["two_nodes"][key]
                results[f"speedup_{key}"] = round(two / one, 3) if one else None
                results[f"efficiency_{key}"] = round(two / one / 2, 3) if one else None
            if not args.skip_faults:
                results["fault_second_node_killed"] = fault_run(cluster, run_dir, images, work / "out3",
                                                                args.block_size, after=5)
                print("fault:", results["fault_second_node_killed"], flush=True)
                cluster.add_node()
                results["resume_after_driver_killed"] = resume_run(cluster, run_dir, images, work / "out4",
                                                                   args.block_size, after=args.images // args.block_size // 3)
                print("resume:", results["resume_after_driver_killed"], flush=True)
            if args.bottle is not None:
                results["bottle"] = bottle_checks(args.bottle, cluster.address, work)
                print("bottle:", results["bottle"], flush=True)
        finally:
            import ray

            ray.shutdown()
            cluster.stop()
    text = json.dumps(results, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
