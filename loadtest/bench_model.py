"""Model-only benchmark: ONNX Runtime latency per image for each model, batch size and thread count.

    python -m loadtest.bench_model [--batches 1 8 64] [--threads 1 2] [--repeats 30] [--no-spin]

Every session runs as the embedded backend would: CPU provider, one inter-op thread, sequential
execution, all graph optimisations; only `intra_op_num_threads` varies (and, with `--no-spin`, whether
idle pool threads busy-wait). Configurations are timed in interleaved rounds, so load from other
processes that comes and goes falls on all of them alike, and the median call time is reported (it
shrugs off the stalls a shared machine adds). Writes `loadtest/results/bench_model.json` and prints a
table and the fastest thread count per model and batch. A benchmark, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
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
from blazeface_tools.weights.build import ensure_built
from service.backends.onnx import make_session
from service.specs import MODELS

RESULTS = REPO_ROOT / "loadtest" / "results" / "bench_model.json"


@dataclass(frozen=True)
class Result:
    model: str
    batch: int
    intra_op_threads: int
    calls: int
    ms_per_call: float  # median
    ms_per_image: float  # median call / batch
    images_per_s: float


def time_calls(
    sess: ort.InferenceSession, feed: dict[str, np.ndarray], calls: int, budget_s: float
) -> list[float]:
    """Seconds per call: `calls` calls, or fewer (at least 2) once `budget_s` is spent."""
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < calls and (len(times) < 2 or time.perf_counter() - started < budget_s):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return times


def run(
    models: list[str],
    batches: list[int],
    threads: list[int],
    repeats: int,
    rounds: int,
    budget_s: float,
    spin: bool = True,
) -> list[Result]:
    paths = ensure_built()
    rng = np.random.default_rng(0)
    configs = [(name, n, b) for name in models for n in threads for b in batches]
    sessions = {(name, n): make_session(paths[name], n, spin) for name in models for n in threads}
    feeds: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for name in models:
        size = MODELS[name].input_size
        for b in batches:
            feeds[name, b] = {"image": rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)}
    for name, n, b in configs:  # warm-up: first calls allocate arenas and pick kernels
        time_calls(sessions[name, n], feeds[name, b], 3, 0.0)
    times: dict[tuple[str, int, int], list[float]] = {c: [] for c in configs}
    per_round = -(-repeats // rounds)
    for _ in range(rounds):
        for name, n, b in configs:
            times[name, n, b] += time_calls(sessions[name, n], feeds[name, b], per_round, budget_s / rounds)
    results = []
    for (name, n, b), ts in times.items():
        median_ms = statistics.median(ts) * 1e3
        results.append(
            Result(
                model=name,
                batch=b,
                intra_op_threads=n,
                calls=len(ts),
                ms_per_call=round(median_ms, 4),
                ms_per_image=round(median_ms / b, 4),
                images_per_s=round(b / median_ms * 1e3, 1),
            )
        )
    return results


def fastest(results: list[Result]) -> dict[str, dict[int, int]]:
    """The thread count with the lowest ms/image, per model and batch size."""
    best: dict[str, dict[int, int]] = {}
    for model in dict.fromkeys(r.model for r in results):
        for batch in dict.fromkeys(r.batch for r in results if r.model == model):
            rows = [r for r in results if r.model == model and r.batch == batch]
            best.setdefault(model, {})[batch] = min(rows, key=lambda r: r.ms_per_image).intra_op_threads
    return best


def table(results: list[Result]) -> str:
    lines = [
        f"{'model':<6} {'batch':>5} {'threads':>7} {'calls':>5} {'ms/call':>9} {'ms/image':>9} {'img/s':>8}"
    ]
    for r in results:
        lines.append(
            f"{r.model:<6} {r.batch:>5} {r.intra_op_threads:>7} {r.calls:>5} "
            f"{r.ms_per_call:>9.3f} {r.ms_per_image:>9.3f} {r.images_per_s:>8.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=sorted(MODELS), choices=sorted(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per configuration")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds the repeats are split over")
    parser.add_argument("--budget-s", type=float, default=5.0, help="time cap per configuration")
    parser.add_argument(
        "--no-spin", action="store_true", help="idle intra-op threads sleep instead of spinning"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    results = run(
        args.models,
        args.batches,
        args.threads,
        args.repeats,
        args.rounds,
        args.budget_s,
        spin=not args.no_spin,
    )
    best = fastest(results)
    print(table(results))
    for model, per_batch in best.items():
        print(
            f"fastest intra_op_num_threads for {model}: "
            + ", ".join(f"b{b}: {t}" for b, t in per_batch.items())
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "bench_model",
        "onnxruntime": ort.__version__,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "settings": {
            "inter_op_threads": 1,
            "execution_mode": "sequential",
            "graph_optimization": "all",
            "intra_op_spinning": not args.no_spin,
            "repeats": args.repeats,
            "rounds": args.rounds,
        },
        "results": [asdict(r) for r in results],
        "fastest_threads": best,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
