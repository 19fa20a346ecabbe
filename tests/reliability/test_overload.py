"""Overload: far more concurrent requests than the batch queue holds, against a real `python -m service`.

The excess must be refused fast with 429 + Retry-After (not queued until it times out), the admitted
requests must finish in bounded time, nothing may hang, and the queue must drain back to zero after.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blazeface_tools.testkit.servers import ServiceProcess, service_process
from tests.conftest import DATA

pytestmark = pytest.mark.slow

CONCURRENT = 200
MAX_QUEUE = 8
CLIENT_TIMEOUT_S = 60.0  # "nothing hangs": every request ends well before this
# Bounds, generous against what 2 shared CPU cores measured (printed with -s): the 429 is decided after
# the image is decoded, so its latency includes waiting for a decode thread behind ~200 others.
REFUSAL_P99_BOUND_S = 5.0
ADMITTED_P99_BOUND_S = 10.0  # = REQUEST_TIMEOUT_S: anything slower would have been a 504
PHOTO = (DATA / "photos" / "grace_hopper.jpg").read_bytes()


@dataclass
class Result:
    status: int | None
    seconds: float
    retry_after: str | None = None
    content_type: str = ""
    error: str = ""


async def one(client: httpx.AsyncClient, url: str) -> Result:
    started = time.monotonic()
    try:
        response = await client.post(
            f"{url}/detect?model=full", content=PHOTO, headers={"content-type": "image/jpeg"}
        )
    except httpx.HTTPError as exc:
        return Result(None, time.monotonic() - started, error=repr(exc))
    return Result(
        response.status_code,
        time.monotonic() - started,
        response.headers.get("retry-after"),
        response.headers.get("content-type", ""),
    )


async def flood(url: str) -> list[Result]:
    limits = httpx.Limits(max_connections=CONCURRENT + 10, max_keepalive_connections=CONCURRENT + 10)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT_S, limits=limits) as client:
        await client.get(f"{url}/healthz")
        return await asyncio.wait_for(
            asyncio.gather(*(one(client, url) for _ in range(CONCURRENT))), CLIENT_TIMEOUT_S + 10
        )


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def queue_depths(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        sample.labels["model"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "blazeface_queue_depth"
    }


@pytest.fixture(scope="module")
def overloaded(tmp_path_factory: pytest.TempPathFactory, built_models: None):  # type: ignore[no-untyped-def]
    # MAX_BATCH 4 keeps one backend call short of the whole queue, so the queue really fills.
    env = {"WORKERS": "1", "MAX_QUEUE": str(MAX_QUEUE), "MAX_BATCH": "4", "ORT_THREADS": "1"}
    with service_process(tmp_path_factory.mktemp("overload"), **env) as server:
        started = time.monotonic()
        results = asyncio.run(flood(server.url))
        wall = time.monotonic() - started
        yield server, results, wall


def test_excess_is_refused_fast_with_retry_after(overloaded) -> None:  # type: ignore[no-untyped-def]
    _, results, wall = overloaded
    statuses = [r.status for r in results]
    refused = [r for r in results if r.status == 429]
    admitted = [r for r in results if r.status == 200]
    print(
        f"\n{CONCURRENT} concurrent, MAX_QUEUE={MAX_QUEUE}: {len(admitted)} × 200, {len(refused)} × 429, "
        f"wall {wall:.2f} s; 429 p50 {sorted(r.seconds for r in refused)[len(refused) // 2]:.3f} s "
        f"p99 {p99([r.seconds for r in refused]):.3f} s max {max(r.seconds for r in refused):.3f} s; "
        f"200 p50 {sorted(r.seconds for r in admitted)[len(admitted) // 2]:.3f} s "
        f"p99 {p99([r.seconds for r in admitted]):.3f} s"
    )
    assert set(statuses) <= {200, 429}, [r for r in results if r.status not in (200, 429)]
    assert refused, "the queue never filled: nothing to test"
    assert len(admitted) >= MAX_QUEUE
    for result in refused:
        assert result.content_type == "application/problem+json"
        assert result.retry_after is not None and int(result.retry_after) >= 1
    assert p99([r.seconds for r in refused]) < REFUSAL_P99_BOUND_S


def test_admitted_requests_finish_in_bounded_time(overloaded) -> None:  # type: ignore[no-untyped-def]
    _, results, _ = overloaded
    admitted = [r.seconds for r in results if r.status == 200]
    assert p99(admitted) < ADMITTED_P99_BOUND_S
    assert all(r.seconds < CLIENT_TIMEOUT_S for r in results)  # nothing hung


def test_queue_drains_and_service_recovers(overloaded) -> None:  # type: ignore[no-untyped-def]
    server: ServiceProcess = overloaded[0]
    deadline = time.monotonic() + 10
    while (depths := queue_depths(server.url)) and any(depths.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert depths == {"full": 0.0}  # only models that have seen traffic export a depth
    for model in ("short", "full"):
        response = httpx.post(
            f"{server.url}/detect?model={model}",
            content=PHOTO,
            headers={"content-type": "image/jpeg"},
            timeout=10,
        )
        assert response.status_code == 200
        assert len(response.json()["faces"]) == 1
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    assert "Traceback" not in server.log()
