"""Bounded load test of ``anomalens serve``: starts the server on 127.0.0.1, runs N concurrent clients for a fixed
time (after a warm-up under the same load), stops the server by its PID, and reports throughput, p50/p99 latency,
errors and the server's RSS before and after the timed load (and its peak).

First, right before starting the server, it measures the offline batch rate of the same model in this process
on full batches of the same encoded images, decoding included (the server decodes too), and the rate of the
scoring alone (images already decoded); the server's throughput is compared with both. The report ends with the
issue's targets checked: no errors, throughput >= 80% of the offline rate, server RSS growth <= 50 MB.

    PYTHONPATH=src python benchmarks/serve_load.py --model results/bottle_x/export/onnx_fp32 \
        --images ../shared/data/mvtec_ad/bottle/train/good --clients 16 --duration 60
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from anomalens.serve.backends import load_predictor
from anomalens.serve.process import served


def rss_mb(pid: int, field: str = "VmRSS:") -> float:
    """Resident memory of ``pid`` (``VmHWM:``: its peak) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def offline_rates(model: Path, bodies: list[bytes], seconds: float) -> tuple[float, float]:
    """Images/s offline on full batches: (decoding + scoring, scoring alone), ``seconds`` each."""
    predictor = load_predictor(model, device="cpu")
    chosen = [bodies[i % len(bodies)] for i in range(predictor.max_batch)]
    batch = np.stack([predictor.prepare(body) for body in chosen])
    predictor.predict_prepared(batch)  # warm-up
    rates = []
    for decode in (True, False):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            predictor.predict_prepared(np.stack([predictor.prepare(body) for body in chosen]) if decode else batch)
            done += len(batch)
        rates.append(done / (time.perf_counter() - started))
    del predictor
    gc.collect()
    return rates[0], rates[1]


def load(url: str, headers: dict[str, str], bodies: list[bytes], clients: int, seconds: float) -> tuple[list[float], list[str]]:
    """``clients`` threads posting images for ``seconds``: the latencies of successful requests and the errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client_loop(index: int) -> None:
        with httpx.Client(timeout=60) as client:
            i = index
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    response = client.post(f"{url}/v1/predict", content=bodies[i % len(bodies)], headers=headers)
                    problem = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    problem = type(exc).__name__
                with lock:
                    if problem is None:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors.append(problem)
                i += clients

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="bundle or run folder")
    parser.add_argument("--images", required=True, type=Path, help="an image or a folder of images to send")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--offline-seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of the same load before RSS is first read")
    parser.add_argument("--max-batch", type=int, default=None)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    files = sorted(args.images.glob("*.png")) if args.images.is_dir() else [args.images]
    bodies = [p.read_bytes() for p in files[:32]]
    offline, offline_scoring = offline_rates(args.model, bodies, args.offline_seconds)

    token = secrets.token_urlsafe(16)
    extra = ["--max-wait-ms", str(args.max_wait_ms), "--queue-size", str(max(64, 4 * args.clients)), "--device", "cpu"]
    if args.max_batch:
        extra += ["--max-batch", str(args.max_batch)]
    headers = {"Authorization": f"Bearer {token}"}
    with served(args.model, token=token, extra_args=extra) as server:
        url = server.url
        # warm-up under the same load: the engine's and faiss's buffers reach their size for every batch size, so
        # that the RSS growth measured below shows what the timed load adds (a leak), not the first allocations
        rss_start = rss_mb(server.pid)
        load(url, headers, bodies, args.clients, args.warmup)
        rss_before = rss_mb(server.pid)
        started = time.perf_counter()
        latencies, errors = load(url, headers, bodies, args.clients, args.duration)
        elapsed = time.perf_counter() - started
        rss_after = rss_mb(server.pid)
        rss_peak = rss_mb(server.pid, "VmHWM:")
    lat = np.array(latencies) * 1000.0
    report = {
        "model": str(args.model), "clients": args.clients, "duration_s": round(elapsed, 1),
        "requests_ok": len(latencies), "errors": len(errors), "error_kinds": sorted(set(errors)),
        "throughput_images_per_s": round(len(latencies) / elapsed, 2),
        "offline_batch_images_per_s": round(offline, 2),
        "offline_scoring_only_images_per_s": round(offline_scoring, 2),
        "throughput_share_of_offline": round(len(latencies) / elapsed / offline, 3),
        "throughput_share_of_offline_scoring_only": round(len(latencies) / elapsed / offline_scoring, 3),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
        "server_rss_mb_at_start": round(rss_start, 1), "server_rss_mb_before": round(rss_before, 1), "server_rss_mb_after": round(rss_after, 1),
        "server_rss_growth_mb": round(rss_after - rss_before, 1), "server_rss_peak_mb": round(rss_peak, 1),
        "warmup_s": args.warmup,
    }
    report["targets"] = {
        "zero_errors": report["errors"] == 0,
        "throughput_at_least_80pct_of_offline": report["throughput_share_of_offline"] >= 0.8,
        "rss_growth_at_most_50mb": report["server_rss_growth_mb"] <= 50,
    }
    print(json.dumps(report, indent=2))
    if args.output is not None:
        args.output.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
