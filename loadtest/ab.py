"""A/B the HTTP service under settings variants, interleaved so background load falls on all alike.

    python -m loadtest.ab --rounds 3 --seconds 8 --concurrency 8 \\
        'DECODE_THREADS=40' 'DECODE_THREADS=0'

Each variant is a space-separated list of settings (environment variables) for `python -m service`
(WORKERS defaults to the core count, PREPROCESS to fast); every round starts each variant's server
fresh, warms it, loads it with the photo mix
(blazeface_tools/testkit/photos.py) and records img/s, p50 and p99.
Prints the median over rounds per variant and writes loadtest/results/ab.json. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
from pathlib import Path

from blazeface_tools.testkit import photos
from blazeface_tools.testkit.servers import service_process
from loadtest.httpload import run_load

REPO = Path(__file__).resolve().parents[1]


def parse_variant(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="e.g. 'DECODE_THREADS=1 MAX_WAIT_US=0'")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    payloads = [path.read_bytes() for path in photos.build().values()]
    base = {"WORKERS": str(os.cpu_count() or 1), "PREPROCESS": "fast", "MAX_QUEUE": "1024"}
    runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in args.variants}
    for _ in range(args.rounds):
        for variant in args.variants:
            env = {**base, **parse_variant(variant)}
            with tempfile.TemporaryDirectory() as tmp, service_process(Path(tmp), **env) as server:
                url = f"{server.url}/detect"
                asyncio.run(run_load(url, payloads, args.concurrency, 2.0))
                result = asyncio.run(run_load(url, payloads, args.concurrency, args.seconds))
            runs[variant].append(
                {
                    "images_per_s": result.rate,
                    "p50_ms": result.percentile(50),
                    "p99_ms": result.percentile(99),
                }
            )
    print(f"\nconcurrency {args.concurrency}, {args.rounds} rounds × {args.seconds:g} s, median of rounds")
    print("| variant | images/s | p50 ms | p99 ms | p99/p50 |\n|---|---|---|---|---|")
    summary = {}
    for variant, rows in runs.items():
        med = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        summary[variant] = {"median": med, "rounds": rows}
        print(
            f"| `{variant}` | {med['images_per_s']:.1f} | {med['p50_ms']:.1f} | {med['p99_ms']:.1f} | "
            f"{med['p99_ms'] / med['p50_ms']:.2f} |"
        )
    out = REPO / "loadtest" / "results" / "ab.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"concurrency": args.concurrency, "variants": summary}, indent=2))


if __name__ == "__main__":
    main()
