"""Overload: drive 2× and 4× the measured capacity and watch what the service still delivers.

    .venv/bin/python -m loadtest.overload                   # ≈ 3 min against a service it starts
    .venv/bin/python -m loadtest.overload --seconds 10 --capacity-seconds 5

First the capacity, open loop as the overload itself (requests sent on a fixed schedule whether or not
earlier ones were answered, as real clients do): a ramp of rates from a closed-loop estimate, and the
capacity is the best goodput the ramp reached (it stops once two steps in a row add less than 5 %).
Then 2× and 4× that rate. The mix is the benchmark photo mix (640×480 … 12 MP JPEGs) with one large,
cheap-to-send PNG in every `--large-every` requests.
Reports per phase: goodput (200s within REQUEST_TIMEOUT_S, per second), refusals (429/503) and their
latency, p99 of admitted requests, the latest answer, unanswered requests, and the server's peak RSS
(all its processes); writes loadtest/results/overload.json. A benchmark, not a test: nothing asserts,
but the targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from blazeface_tools.testkit import photos
from blazeface_tools.testkit.servers import service_process
from loadtest.httpload import encode_post, read_response, run_load

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "loadtest" / "results" / "overload.json"
REQUEST_TIMEOUT_S = 10.0  # the service's default deadline; the client waits a little longer
LARGE_SIDE = 6000  # 36 MP, under the default MAX_PIXELS (40 MP)


@dataclass
class Phase:
    name: str
    offered_rps: float
    seconds: float
    statuses: Counter[str] = field(default_factory=Counter)
    ok_latencies_ms: list[float] = field(default_factory=list)
    refusal_latencies_ms: list[float] = field(default_factory=list)
    latest_answer_s: float = 0.0
    unanswered: int = 0
    peak_rss_mb: float = 0.0

    @property
    def goodput(self) -> float:
        within = sum(1 for ms in self.ok_latencies_ms if ms <= REQUEST_TIMEOUT_S * 1e3)
        return within / self.seconds

    def summary(self) -> dict[str, object]:
        return {
            "phase": self.name,
            "offered_rps": round(self.offered_rps, 1),
            "goodput_rps": round(self.goodput, 1),
            "statuses": dict(self.statuses),
            "admitted_p50_ms": percentile(self.ok_latencies_ms, 50),
            "admitted_p99_ms": percentile(self.ok_latencies_ms, 99),
            "refusal_p99_ms": percentile(self.refusal_latencies_ms, 99),
            "latest_answer_s": round(self.latest_answer_s, 2),
            "unanswered": self.unanswered,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
        }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 1)


def large_png() -> bytes:
    """A 36 MP PNG of a flat image: ~100 KB to send, a full-size decode to pay."""
    pixels = np.full((LARGE_SIDE, LARGE_SIDE, 3), 128, np.uint8)
    ok, data = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return data.tobytes()


def server_rss_mb(pid: int) -> float:
    """RSS of the server and its worker processes (children), MB."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for one in pids:
        try:
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


async def _exchange(host: str, port: int, request: bytes) -> int:
    """One request on its own connection (open-loop clients do not wait for a free connection)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        status, _ = await read_response(reader)
        return status
    finally:
        writer.close()


async def open_loop(url: str, requests: list[bytes], phase: Phase, pid: int) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    started = time.perf_counter()
    count = int(phase.offered_rps * phase.seconds)
    interval = 1.0 / phase.offered_rps

    async def one(index: int) -> None:
        await asyncio.sleep(max(0.0, started + index * interval - time.perf_counter()))
        sent = time.perf_counter()
        try:
            status = str(
                await asyncio.wait_for(
                    _exchange(host, port, requests[index % len(requests)]), REQUEST_TIMEOUT_S + 5
                )
            )
        except TimeoutError:
            phase.unanswered += 1
            return
        except OSError as exc:
            status = f"error:{type(exc).__name__}"
        took = time.perf_counter() - sent
        phase.statuses[status] += 1
        phase.latest_answer_s = max(phase.latest_answer_s, took)
        if status == "200":
            phase.ok_latencies_ms.append(took * 1e3)
        elif status in ("429", "503"):
            phase.refusal_latencies_ms.append(took * 1e3)

    async def watch_rss() -> None:
        while True:
            phase.peak_rss_mb = max(phase.peak_rss_mb, server_rss_mb(pid))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch_rss())
    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        watcher.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per overload phase")
    parser.add_argument("--capacity-seconds", type=float, default=10.0, help="per ramp step")
    parser.add_argument("--ramp-start", type=float, default=1.0, help="first ramp rate, × closed-loop rate")
    parser.add_argument("--large-every", type=int, default=10, help="one large PNG per this many requests")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    mix = [path.read_bytes() for path in photos.build().values()]
    large = large_png()
    bodies = [mix[i % len(mix)] for i in range(args.large_every - 1)] + [large]
    env = {"WORKERS": str(args.workers), "REQUEST_TIMEOUT_S": str(REQUEST_TIMEOUT_S)}
    with tempfile.TemporaryDirectory() as tmp, service_process(Path(tmp), **env) as server:
        url = server.url + "/detect"
        kinds = ["image/jpeg"] * (len(bodies) - 1) + ["image/png"]
        requests = [encode_post(url, body, kind) for body, kind in zip(bodies, kinds, strict=True)]
        asyncio.run(run_load(url, mix, 8, 3.0))  # warm-up
        estimate = asyncio.run(run_load(url, bodies, 8, 5.0))
        base = (estimate.requests - estimate.errors) / estimate.seconds
        ramp: list[Phase] = []
        step = args.ramp_start

        # Up until two steps in a row add less than 5 % to the best goodput so far (one step alone is
        # noisy): the capacity is the best the ramp reached.
        def growing() -> bool:
            if len(ramp) < 3:
                return True
            before = max(phase.goodput for phase in ramp[:-2])
            return max(ramp[-1].goodput, ramp[-2].goodput) > 1.05 * before

        while len(ramp) < 10 and growing():
            phase = Phase(f"ramp {step:g}× closed-loop rate", step * base, args.capacity_seconds)
            asyncio.run(open_loop(url, requests, phase, server.process.pid))
            ramp.append(phase)
            step *= 1.4
            time.sleep(2.0)
        capacity = max(phase.goodput for phase in ramp)
        phases = [*ramp]
        for factor in (2, 4):
            phase = Phase(f"{factor}× capacity", factor * capacity, args.seconds)
            asyncio.run(open_loop(url, requests, phase, server.process.pid))
            phases.append(phase)
            time.sleep(REQUEST_TIMEOUT_S)  # let queues drain between phases

    rows = [phase.summary() for phase in phases]
    print(
        f"{'phase':28} {'offered':>8} {'goodput':>8} {'p99 ok ms':>10} {'refusal p99':>12} "
        f"{'latest s':>9} {'lost':>5} {'RSS MB':>7}  statuses"
    )
    for row in rows:
        print(
            f"{row['phase']:28} {row['offered_rps']:8} {row['goodput_rps']:8} "
            f"{row['admitted_p99_ms']!s:>10} {row['refusal_p99_ms']!s:>12} {row['latest_answer_s']:9} "
            f"{row['unanswered']:5} {row['peak_rss_mb']:7}  {row['statuses']}"
        )
    base, worst = capacity, phases[-1]
    refusal_p99 = percentile(worst.refusal_latencies_ms, 99)
    print(
        f"capacity {capacity:.1f} img/s; targets: goodput at 4× = {worst.goodput / base:.0%} of it (≥ 80 %); "
        f"refusal p99 "
        f"{refusal_p99} ms (< 50); latest answer {worst.latest_answer_s:.2f} s (≤ {REQUEST_TIMEOUT_S + 0.5})"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"args": vars(args), "capacity": capacity, "phases": rows}, indent=2))
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
