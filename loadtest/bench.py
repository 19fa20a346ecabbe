"""End-to-end benchmark: model-only, in-process pipeline, HTTP, and the MediaPipe peer, in one run.

    python -m loadtest.bench [--quick] [--model short] [--preprocess fast]

Same photos (blazeface_tools/testkit/photos.py: 640×480, 1280×720, 1920×1080, 12 MP JPEGs) and cores
for every row:
the pipeline and the peer run one process per core, the HTTP service `WORKERS` = cores. Prints a table
with the ratios and writes loadtest/results/bench.json. A benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from blazeface_tools.testkit import photos
from blazeface_tools.testkit.servers import service_process
from blazeface_tools.weights.build import ensure_built
from loadtest import bench_model
from loadtest.httpload import run_load

REPO = Path(__file__).resolve().parents[1]

RESULTS = REPO / "loadtest" / "results" / "bench.json"
PEER_PYTHON = REPO / ".venv-mediapipe" / "bin" / "python"


def _pipeline_worker(args: tuple[list[str], str, str, float, Any]) -> int:
    from service.pipeline import Detector

    paths, model, preprocess, seconds, barrier = args
    import cv2

    cv2.setNumThreads(1)
    detector = Detector()
    data = [Path(p).read_bytes() for p in paths]
    for image in data:
        detector.detect(image, model=model, preprocess=preprocess)
    barrier.wait()
    count, stop_at = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        detector.detect(data[count % len(data)], model=model, preprocess=preprocess)
        count += 1
    return count


def pipeline_rate(paths: list[str], model: str, preprocess: str, seconds: float, processes: int) -> float:
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(processes)
    with context.Pool(processes) as pool:
        counts = pool.map(_pipeline_worker, [(paths, model, preprocess, seconds, barrier)] * processes)
    return sum(counts) / seconds


def peer(paths: list[str], model: str, seconds: float, processes: int) -> dict[str, float] | None:
    if not PEER_PYTHON.exists():
        print("(no .venv-mediapipe: run `bash tests/reference/rebuild.sh` for the MediaPipe peer row)")
        return None
    command = [str(PEER_PYTHON), str(REPO / "loadtest" / "mediapipe_peer.py"), "--model", model]
    command += ["--processes", str(processes), "--seconds", str(seconds), *paths]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def http_rows(
    paths: list[str], model: str, preprocess: str, seconds: float, workers: int, concurrencies: list[int]
) -> list[dict[str, float]]:
    payloads = [Path(p).read_bytes() for p in paths]
    env = {"WORKERS": str(workers), "PREPROCESS": preprocess, "DEFAULT_MODEL": model, "MAX_QUEUE": "1024"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, service_process(Path(tmp), **env) as server:
        url = f"{server.url}/detect"
        asyncio.run(run_load(url, payloads, workers * 2, 2.0))  # warm every worker
        for concurrency in concurrencies:
            result = asyncio.run(run_load(url, payloads, concurrency, seconds))
            rows.append(
                {
                    "concurrency": concurrency,
                    "images_per_s": result.rate,
                    "errors": result.errors,
                    "p50_ms": result.percentile(50),
                    "p95_ms": result.percentile(95),
                    "p99_ms": result.percentile(99),
                }
            )
    return rows


def idle_latency(paths: list[str], model: str, preprocess: str, repeats: int) -> dict[str, float]:
    """One 1280×720 JPEG at a time against an idle server: the latency a single user sees."""
    one = [p for p in paths if "1280x720" in p]
    env = {"WORKERS": "1", "PREPROCESS": preprocess, "DEFAULT_MODEL": model}
    with tempfile.TemporaryDirectory() as tmp, service_process(Path(tmp), **env) as server:
        payloads = [Path(one[0]).read_bytes()]
        asyncio.run(run_load(f"{server.url}/detect", payloads, 1, 1.0))
        latencies: list[float] = []
        while len(latencies) < repeats:
            latencies += asyncio.run(run_load(f"{server.url}/detect", payloads, 1, 0.5)).latencies_ms
    latencies.sort()
    return {"p50_ms": latencies[len(latencies) // 2], "p99_ms": latencies[int(0.99 * (len(latencies) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases: finishes in under 3 minutes")
    parser.add_argument("--model", choices=["short", "full"], default="short")
    parser.add_argument("--preprocess", choices=["exact", "fast"], default="fast")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    seconds = 8.0 if args.quick else 30.0
    ensure_built()
    paths = [str(p) for p in photos.build().values()]
    started = time.perf_counter()

    model_rows = bench_model.run(
        [args.model],
        [1, 8, 32, 64],
        [1],
        repeats=10 if args.quick else 30,
        rounds=2,
        budget_s=2.0,
        spin=False,
    )
    pipeline = pipeline_rate(paths, args.model, args.preprocess, seconds, args.cores)
    pipeline_exact = (
        pipeline
        if args.preprocess == "exact"
        else pipeline_rate(paths, args.model, "exact", seconds, args.cores)
    )
    http = http_rows(paths, args.model, args.preprocess, seconds, args.cores, [1, 8, 16, 32])
    idle = idle_latency(paths, args.model, args.preprocess, 100 if args.quick else 300)
    mediapipe = peer(paths, args.model, seconds, args.cores)

    best_http = max(row["images_per_s"] for row in http)
    c8 = next(row for row in http if row["concurrency"] == 8)
    report = {
        "machine": {"cores": args.cores, "cpu": platform.processor() or platform.machine()},
        "model": args.model,
        "preprocess": args.preprocess,
        "photos": sorted(Path(p).name for p in paths),
        "model_only": [row.__dict__ for row in model_rows],
        "pipeline_images_per_s": pipeline,
        "pipeline_exact_images_per_s": pipeline_exact,
        "http": http,
        "idle_1280x720": idle,
        "mediapipe_peer": mediapipe,
        "ratios": {
            "http_over_peer": best_http / mediapipe["images_per_s"] if mediapipe else None,
            "http_over_pipeline": best_http / pipeline,
            "p99_over_p50_at_c8": c8["p99_ms"] / c8["p50_ms"],
        },
        "seconds": time.perf_counter() - started,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print_table(report)


def print_table(report: dict[str, Any]) -> None:
    print(f"\nmodel={report['model']} preprocess={report['preprocess']} cores={report['machine']['cores']}")
    print("| what | images/s | p50 ms | p95 ms | p99 ms |\n|---|---|---|---|---|")
    for row in report["model_only"]:
        print(f"| model only, ORT batch {row['batch']} | {row['images_per_s']:.0f} | | | |")
    print(f"| in-process pipeline ({report['preprocess']}) | {report['pipeline_images_per_s']:.1f} | | | |")
    print(f"| in-process pipeline (exact) | {report['pipeline_exact_images_per_s']:.1f} | | | |")
    for row in report["http"]:
        print(
            f"| HTTP, concurrency {row['concurrency']} | {row['images_per_s']:.1f} | {row['p50_ms']:.1f} | "
            f"{row['p95_ms']:.1f} | {row['p99_ms']:.1f} |"
        )
    idle = report["idle_1280x720"]
    print(f"| HTTP, one 1280×720 JPEG, idle server | | {idle['p50_ms']:.1f} | | {idle['p99_ms']:.1f} |")
    peer_row = report["mediapipe_peer"]
    if peer_row:
        print(
            f"| MediaPipe 0.10.21 in-process (peer) | {peer_row['images_per_s']:.1f} | "
            f"{peer_row['p50_ms']:.1f} | | {peer_row['p99_ms']:.1f} |"
        )
    ratios = report["ratios"]
    print("\n| ratio | value | target |\n|---|---|---|")
    if ratios["http_over_peer"] is not None:
        print(f"| HTTP / MediaPipe peer | {ratios['http_over_peer']:.2f}× | ≥ 2.0× |")
    print(f"| HTTP / in-process pipeline | {ratios['http_over_pipeline']:.2f}× | ≥ 0.8× |")
    print(f"| p99 / p50 at concurrency 8 | {ratios['p99_over_p50_at_c8']:.2f} | ≤ 3 |")
    print(f"\n({report['seconds']:.0f} s; written to {RESULTS.relative_to(REPO)})")


if __name__ == "__main__":
    main()
