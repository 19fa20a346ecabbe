"""Soak: a bounded run of mixed good and bad traffic at fixed concurrency; watch statuses, latency, RSS.

    .venv/bin/python -m loadtest.soak                      # 10 min against a service it starts
    .venv/bin/python -m loadtest.soak --minutes 1 --concurrency 4
    .venv/bin/python -m loadtest.soak --url http://127.0.0.1:8000 --pid 1234   # a running one (loopback)

Good traffic: real photos on both models, the batch endpoint and base64 JSON (corpus.good_requests).
Bad traffic: every non-trickled case of the generated corpus (blazeface_tools/testkit/corpus.py), whose
expected statuses assume the limits this script starts the service with (MAX_BODY_BYTES 2 MiB,
MAX_PIXELS 20 MP, MAX_BATCH_IMAGES 8). Hostile traffic (`--hostile-fraction`): the requests that used
to buy unbounded work — every anchor a candidate, a large flat PNG, a JPEG of thousands of empty scans,
a batch cut before its closing boundary, a 64 KiB header, a 16 KiB URL (corpus.hostile_requests).
Reports requests, statuses, 5xx, statuses other than the documented one, good-request p50/p99 and the
server's RSS (start after warm-up, end, peak), and writes loadtest/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from blazeface_tools.testkit.corpus import Case, build_corpus, good_requests, hostile_requests
from blazeface_tools.testkit.servers import service_process

REPO = Path(__file__).resolve().parents[1]

LIMITS = {"max_body_bytes": 2 * 1024 * 1024, "max_pixels": 20_000_000, "max_batch_images": 8}
REQUEST_TIMEOUT_S = 30.0
RSS_EVERY_S = 2.0


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)  # "case name: got N" for status != expect
    good_latencies_ms: list[float] = field(default_factory=list)
    bad_latencies_ms: list[float] = field(default_factory=list)
    good: int = 0
    bad: int = 0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def send(client: httpx.AsyncClient, url: str, case: Case) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        response = await client.request(
            "POST", url + case.url_path, timeout=REQUEST_TIMEOUT_S, **case.httpx_kwargs(asynchronous=True)
        )
        status = str(response.status_code)
    except httpx.HTTPError as exc:
        status = f"error:{type(exc).__name__}"
    return status, (time.perf_counter() - started) * 1e3


async def soak(
    url: str,
    pid: int | None,
    minutes: float,
    concurrency: int,
    bad_fraction: float,
    hostile_fraction: float,
    seed: int,
) -> tuple[Tally, float]:
    good, bad = good_requests(), build_corpus(include_slow=False, **LIMITS)
    hostile = hostile_requests(LIMITS["max_pixels"])
    tally = Tally()
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(limits=limits) as client:
        for case in good:  # warm-up: both models, the batch path; RSS "start" is measured after it
            await send(client, url, case)
        started = time.monotonic()
        deadline = started + minutes * 60

        async def worker(index: int) -> None:
            rng = random.Random(seed * 1000 + index)
            while time.monotonic() < deadline:
                draw = rng.random()
                is_bad = draw < bad_fraction + hostile_fraction
                case = rng.choice(bad if draw < bad_fraction else hostile if is_bad else good)
                status, ms = await send(client, url, case)
                tally.statuses[status] += 1
                if status != str(case.expect):
                    tally.unexpected[f"{case.name}: got {status}"] += 1
                if is_bad:
                    tally.bad += 1
                    tally.bad_latencies_ms.append(ms)
                else:
                    tally.good += 1
                    if status == "200":
                        tally.good_latencies_ms.append(ms)

        async def sample_rss() -> None:
            while pid is not None and time.monotonic() < deadline:
                value = rss_mb(pid)
                if value is not None:
                    tally.rss_mb.append((time.monotonic() - started, value))
                await asyncio.sleep(RSS_EVERY_S)

        await asyncio.gather(sample_rss(), *(worker(i) for i in range(concurrency)))
        elapsed = time.monotonic() - started
    if pid is not None and (value := rss_mb(pid)) is not None:
        tally.rss_mb.append((elapsed, value))
    return tally, elapsed


def summarise(tally: Tally, elapsed: float, args: argparse.Namespace, url: str) -> dict[str, object]:
    rss = [mb for _, mb in tally.rss_mb]
    by_minute: dict[int, list[float]] = {}
    for seconds, mb in tally.rss_mb:
        by_minute.setdefault(int(seconds // 60), []).append(mb)
    server_errors = sum(n for status, n in tally.statuses.items() if status.startswith("5"))
    no_answer = sum(n for status, n in tally.statuses.items() if status.startswith("error"))
    return {
        "url": url,
        "minutes": round(elapsed / 60, 2),
        "concurrency": args.concurrency,
        "bad_fraction": args.bad_fraction,
        "hostile_fraction": args.hostile_fraction,
        "requests": tally.good + tally.bad,
        "good_requests": tally.good,
        "bad_requests": tally.bad,
        "requests_per_s": round((tally.good + tally.bad) / elapsed, 1),
        "statuses": dict(sorted(tally.statuses.items())),
        "server_errors_5xx": server_errors,
        "no_answer": no_answer,
        "unexpected_statuses": dict(tally.unexpected.most_common()),
        "good_200_latency_ms": {
            "p50": percentile(tally.good_latencies_ms, 50),
            "p99": percentile(tally.good_latencies_ms, 99),
            "max": max(tally.good_latencies_ms, default=None),
        },
        "bad_latency_ms": {
            "p50": percentile(tally.bad_latencies_ms, 50),
            "p99": percentile(tally.bad_latencies_ms, 99),
        },
        "rss_mb": {
            "start": rss[0] if rss else None,
            "end": rss[-1] if rss else None,
            "peak": max(rss, default=None),
            "samples": len(rss),
            # Growth that keeps climbing minute after minute is a leak; a plateau is allocator pools.
            "max_by_minute": [round(max(by_minute[m]), 1) for m in sorted(by_minute)],
        },
    }


def print_table(summary: dict[str, object]) -> None:
    rows: list[tuple[str, object]] = [
        ("duration", f"{summary['minutes']} min at concurrency {summary['concurrency']}"),
        (
            "requests",
            f"{summary['requests']} ({summary['good_requests']} good, {summary['bad_requests']} bad)",
        ),
        ("throughput", f"{summary['requests_per_s']} req/s"),
        ("statuses", summary["statuses"]),
        ("5xx", summary["server_errors_5xx"]),
        ("no answer", summary["no_answer"]),
        ("unexpected statuses", summary["unexpected_statuses"] or "none"),
    ]
    good = summary["good_200_latency_ms"]
    rss = summary["rss_mb"]
    assert isinstance(good, dict) and isinstance(rss, dict)
    fmt = lambda v: "n/a" if v is None else f"{v:.1f}"  # noqa: E731
    rows.append(("good p50 / p99 / max", f"{fmt(good['p50'])} / {fmt(good['p99'])} / {fmt(good['max'])} ms"))
    rows.append(
        ("RSS start / end / peak", f"{fmt(rss['start'])} / {fmt(rss['end'])} / {fmt(rss['peak'])} MB")
    )
    rows.append(("RSS max by minute", f"{rss['max_by_minute']} MB"))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--bad-fraction", type=float, default=0.3, help="share of requests from the corpus")
    parser.add_argument("--hostile-fraction", type=float, default=0.1, help="share of hostile requests")
    parser.add_argument("--url", help="a running service on loopback (default: start one)")
    parser.add_argument("--pid", type=int, help="its process id, to sample RSS (with --url)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "loadtest" / "results" / "soak.json")
    args = parser.parse_args()
    if not 0 < args.minutes <= 24 * 60 or not 1 <= args.concurrency <= 256:
        parser.error("--minutes must be in (0, 1440] and --concurrency in [1, 256]")
    with ExitStack() as stack:
        if args.url:
            if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
                parser.error("--url must be a loopback address")
            url, pid = args.url.rstrip("/"), args.pid
        else:
            env = {key.upper(): str(value) for key, value in LIMITS.items()}
            server = stack.enter_context(
                service_process(Path(tempfile.mkdtemp(prefix="soak-")), WORKERS="1", **env)
            )
            url, pid = server.url, server.process.pid
        tally, elapsed = asyncio.run(
            soak(
                url, pid, args.minutes, args.concurrency, args.bad_fraction, args.hostile_fraction, args.seed
            )
        )
    summary = summarise(tally, elapsed, args, url)
    print_table(summary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 1 if summary["server_errors_5xx"] or summary["no_answer"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
