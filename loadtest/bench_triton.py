"""Triton throughput benchmark: TritonBackend over gRPC (and system shared memory) at swept concurrency.

    python -m loadtest.bench_triton                                   # CPU tritonserver, the _cpu models
    python -m loadtest.bench_triton --url triton:8001 --suffix _trt   # a GPU Triton: the TensorRT plans
        [--concurrency 1 4 16 64] [--batches 1 16] [--seconds 5] [--shm] [--models short full]

Without --url it starts the CPU tritonserver from nvidia-pytriton (blazeface_tools/triton_cpu/server.py)
on free loopback ports, which serves only the `_cpu` models, and stops it at the end. For each model,
batch size, mode (`grpc`; `grpc+shm` too with --shm, for a Triton on this host) and concurrency,
`concurrency` callers each send a batch and the next as soon as it returns (closed loop, as the API's
micro-batcher with MAX_INFLIGHT_BATCHES = concurrency does), for --seconds after a warm-up. Reported per
point: images/s, calls, failed calls by error (Overloaded = Triton shed it), p50/p99 latency per call,
the mean batch Triton executed (from its statistics: how well its dynamic batcher merged the calls) and
the share of one core this process used (near 1.0: the client, not Triton, is the limit). Points run one
after another, each with the server to itself. Writes loadtest/results/bench_triton.json and prints a
table. A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as triton

from blazeface_tools import CHECKOUT as REPO_ROOT
from blazeface_tools.triton_cpu.server import Ports, TritonServer
from service.backends.triton import TritonBackend
from service.backends.triton_config import TritonSettings
from service.errors import ServiceError
from service.specs import MODELS

RESULTS = REPO_ROOT / "loadtest" / "results" / "bench_triton.json"
SUFFIXES = ("_trt", "_onnx", "_cpu")
WARMUP_S = 1.0


@dataclass(frozen=True)
class Point:
    model: str
    batch: int
    mode: str
    concurrency: int
    seconds: float
    calls: int
    errors: dict[str, int]  # failed calls by service error (Overloaded, BackendUnavailable, ...)
    images_per_s: float
    p50_ms: float
    p99_ms: float
    triton_batch: float  # images per Triton execution over the point
    client_cpu: float  # this process's CPU seconds per wall second


async def executions(stats: triton.InferenceServerClient, name: str) -> tuple[int, int]:
    """(inferences, executions) Triton has counted for the model."""
    response = await stats.get_inference_statistics(name)
    (model,) = response.model_stats
    return int(model.inference_count), int(model.execution_count)


async def closed_loop(
    backend: TritonBackend, model: str, data: np.ndarray, concurrency: int, seconds: float
) -> tuple[list[float], Counter[str], float]:
    """Per-call latencies (s), failures by error and the wall time of `concurrency` callers."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    stop_at = time.perf_counter() + seconds

    async def caller() -> None:
        while (began := time.perf_counter()) < stop_at:
            try:
                await backend.infer(model, data)
            except ServiceError as exc:
                errors[type(exc).__name__] += 1
                await asyncio.sleep(0.001)  # no hot loop against a server that refuses
                continue
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return latencies, errors, time.perf_counter() - began


async def measure_point(
    backend: TritonBackend,
    stats: triton.InferenceServerClient,
    model: str,
    batch: int,
    mode: str,
    concurrency: int,
    seconds: float,
) -> Point:
    size = MODELS[model].input_size
    data = np.random.default_rng(batch).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    await closed_loop(backend, model, data, concurrency, WARMUP_S)  # channels, regions, Triton's queues
    name = backend.settings.model_name(model)
    inferences, runs = await executions(stats, name)
    cpu = time.process_time()
    latencies, errors, wall = await closed_loop(backend, model, data, concurrency, seconds)
    cpu = time.process_time() - cpu
    inferences_after, runs_after = await executions(stats, name)
    ms = np.array(latencies) * 1e3
    return Point(
        model=model,
        batch=batch,
        mode=mode,
        concurrency=concurrency,
        seconds=round(wall, 3),
        calls=len(latencies),
        errors=dict(errors),
        images_per_s=round(len(latencies) * batch / wall, 1),
        p50_ms=round(float(np.percentile(ms, 50)), 2) if len(ms) else float("nan"),
        p99_ms=round(float(np.percentile(ms, 99)), 2) if len(ms) else float("nan"),
        triton_batch=round((inferences_after - inferences) / max(runs_after - runs, 1), 1),
        client_cpu=round(cpu / wall, 2),
    )


async def measure(
    url: str,
    suffix: str,
    models: list[str],
    batches: list[int],
    modes: list[str],
    concurrencies: list[int],
    seconds: float,
) -> list[Point]:
    stats = triton.InferenceServerClient(url)
    points = []
    try:
        for mode in modes:
            settings = TritonSettings(
                url=url,
                model_suffix=suffix,
                timeout_s=30,
                use_shared_memory=mode == "grpc+shm",
                max_batch=max(batches),
                shm_max_regions=max(concurrencies),  # one region per call in flight
            )
            backend = TritonBackend(settings)
            await backend.start()
            try:
                for model in models:
                    for batch in batches:
                        for concurrency in concurrencies:
                            point = await measure_point(
                                backend, stats, model, batch, mode, concurrency, seconds
                            )
                            print_row(point)
                            points.append(point)
            finally:
                await backend.close()
    finally:
        await stats.close()
    return points


HEADER = (
    f"{'model':6} {'batch':>5} {'mode':9} {'conc':>4} {'img/s':>9} {'calls':>7} {'errors':>7} "
    f"{'p50 ms':>8} {'p99 ms':>8} {'triton batch':>12} {'client cpu':>10}"
)


def print_row(point: Point) -> None:
    print(
        f"{point.model:6} {point.batch:5d} {point.mode:9} {point.concurrency:4d} {point.images_per_s:9.1f} "
        f"{point.calls:7d} {sum(point.errors.values()):7d} {point.p50_ms:8.2f} {point.p99_ms:8.2f} "
        f"{point.triton_batch:12.1f} {point.client_cpu:10.2f}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", help="gRPC host:port of a running Triton; default: start the CPU one here")
    parser.add_argument(
        "--suffix", choices=SUFFIXES, default="_cpu", help="which models: blazeface_<model><suffix>"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16], help="images per call")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 4, 16, 64], help="calls in flight")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per point")
    parser.add_argument("--shm", action="store_true", help="also through system shared memory (same host)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.url is None and args.suffix != "_cpu":
        parser.error(f"--suffix {args.suffix} needs --url: the CPU tritonserver serves only the _cpu models")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    server = None
    url = args.url
    startup_s = None
    if url is None:
        server = TritonServer(ports=Ports.free(), log_path=args.out.with_suffix(".tritonserver.log"))
        startup_s = server.start()
        url = server.grpc_url
    modes = ["grpc", "grpc+shm"] if args.shm else ["grpc"]
    print(HEADER)
    try:
        points = asyncio.run(
            measure(url, args.suffix, args.models, args.batches, modes, args.concurrency, args.seconds)
        )
    finally:
        if server is not None:
            server.stop()
    if startup_s is not None:
        print(f"tritonserver start to all models ready: {startup_s:.2f} s")
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "url": url if server is None else "CPU tritonserver started by the benchmark",
        "suffix": args.suffix,
        "startup_s": startup_s,
        "seconds_per_point": args.seconds,
        "results": [asdict(point) for point in points],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
