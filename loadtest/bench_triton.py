"""Triton round-trip benchmark: TritonBackend over gRPC, with and without system shared memory, against
the same ONNX Runtime call made in-process (what the embedded backend pays).

    python -m loadtest.bench_triton [--url HOST:PORT] [--batches 1 32] [--calls 50] [--rounds 3]

Without --url it starts the CPU tritonserver from nvidia-pytriton
(blazeface_tools/triton_cpu/server.py) on free
loopback ports and stops it at the end. One call at a time (latency, not throughput); configurations
are timed in interleaved rounds so load from other processes falls on all of them alike; the median
and 90th percentile per call are reported, and the ratio to in-process ONNX Runtime. Writes
`loadtest/results/bench_triton.json` and prints a table. A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from blazeface_tools import CHECKOUT as REPO_ROOT
from blazeface_tools.triton_cpu.server import Ports, TritonServer
from blazeface_tools.weights.build import ensure_built
from service.backends.triton import TritonBackend, TritonSettings
from service.specs import MODELS

RESULTS = REPO_ROOT / "loadtest" / "results" / "bench_triton.json"
MODES = ("in-process", "grpc", "grpc+shm")


@dataclass(frozen=True)
class Result:
    model: str
    batch: int
    mode: str
    calls: int
    ms_median: float
    ms_p90: float
    ms_per_image: float  # median / batch
    vs_in_process: float  # median / in-process median


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


async def measure(
    url: str, models: list[str], batches: list[int], calls: int, rounds: int
) -> dict[tuple[str, int, str], list[float]]:
    paths = ensure_built()
    sessions = {m: ort.InferenceSession(str(paths[m]), providers=["CPUExecutionProvider"]) for m in models}
    backends = {
        mode: TritonBackend(TritonSettings(url=url, timeout_s=30, use_shared_memory=mode == "grpc+shm"))
        for mode in MODES[1:]
    }
    for backend in backends.values():
        await backend.start()
    rng = np.random.default_rng(0)
    inputs = {
        (m, b): rng.integers(0, 256, (b, MODELS[m].input_size, MODELS[m].input_size, 3), dtype=np.uint8)
        for m in models
        for b in batches
    }
    times: dict[tuple[str, int, str], list[float]] = {(m, b, mode): [] for m, b in inputs for mode in MODES}
    try:
        for round_ in range(rounds + 1):  # round 0 warms up (sessions, channels, shm regions) and is dropped
            for (model, batch, mode), samples in times.items():
                data = inputs[model, batch]
                for _ in range(calls if round_ else 3):
                    t0 = time.perf_counter()
                    if mode == "in-process":
                        sessions[model].run(None, {"image": data})
                    else:
                        await backends[mode].infer(model, data)
                    if round_:
                        samples.append(time.perf_counter() - t0)
    finally:
        for backend in backends.values():
            await backend.close()
    return times


def summarise(times: dict[tuple[str, int, str], list[float]]) -> list[Result]:
    results = []
    for (model, batch, mode), samples in times.items():
        ms = [t * 1000 for t in samples]
        baseline = statistics.median(times[model, batch, "in-process"]) * 1000
        median = statistics.median(ms)
        results.append(
            Result(
                model=model,
                batch=batch,
                mode=mode,
                calls=len(ms),
                ms_median=round(median, 3),
                ms_p90=round(percentile(ms, 90), 3),
                ms_per_image=round(median / batch, 3),
                vs_in_process=round(median / baseline, 2),
            )
        )
    return results


def print_table(results: list[Result]) -> None:
    print(
        f"{'model':6} {'batch':>5} {'mode':10} {'median ms':>10} {'p90 ms':>8} {'ms/img':>7} {'× in-proc':>9}"
    )
    for r in results:
        print(
            f"{r.model:6} {r.batch:5d} {r.mode:10} {r.ms_median:10.2f} {r.ms_p90:8.2f} "
            f"{r.ms_per_image:7.3f} {r.vs_in_process:9.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="gRPC host:port of a running Triton serving the _cpu models")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--calls", type=int, default=50, help="calls per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    server = None
    url = args.url
    startup_s = None
    if url is None:
        server = TritonServer(ports=Ports.free(), log_path=args.out.with_suffix(".tritonserver.log"))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        startup_s = server.start()
        url = server.grpc_url
    try:
        times = asyncio.run(measure(url, args.models, args.batches, args.calls, args.rounds))
    finally:
        if server is not None:
            server.stop()
    results = summarise(times)
    print_table(results)
    if startup_s is not None:
        print(f"tritonserver start to all models ready: {startup_s:.2f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "onnxruntime": ort.__version__},
        "startup_s": startup_s,
        "calls_per_config": args.calls * args.rounds,
        "results": [asdict(r) for r in results],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
