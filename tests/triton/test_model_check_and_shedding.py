"""Triton's config is the truth at run time, and Triton sheds load: against the real CPU tritonserver.

`start()` reads each model's config and refuses to start (naming the setting) when MAX_BATCH does not fit
it, so the service fails its start-up; when Triton answers only later, the check runs then. A request
that Triton's queue policy rejects is Overloaded (429 with Retry-After at the API), never a failure the
circuit breaker counts.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from tritonclient.utils import InferenceServerException

from blazeface_tools.testkit.servers import free_port, service_process
from blazeface_tools.triton_cpu.server import Ports, TritonServer
from service.backends.breaker import CircuitBreaker, CircuitState
from service.backends.triton import TritonBackend
from service.backends.triton_config import ModelMismatch, TritonSettings
from service.backends.triton_errors import translate_error
from service.errors import BackendUnavailable, Overloaded
from tests.triton.support import cpu_repository, images, our_regions, run

CPU_BATCHING = "dynamic_batching { max_queue_delay_microseconds: 2000 }"
# Every request waits in the batcher's queue for company, so a 1 µs queue timeout rejects each one.
SHEDDING = (
    "dynamic_batching { max_queue_delay_microseconds: 2000 "
    "default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 1 } }"
)


@pytest.mark.parametrize(
    "message",
    # As Triton 2.51 words them (seen on the CPU server), both with status UNAVAILABLE.
    ["[request id: <id_unknown>] Exceeds maximum queue size", "Request timeout expired"],
)
def test_shed_requests_are_overloaded(message: str) -> None:
    error = translate_error(InferenceServerException(message, status="StatusCode.UNAVAILABLE"), "ctx")
    assert isinstance(error, Overloaded) and error.status == 429 and error.retry_after_s == 1
    assert message in error.detail


def test_unavailable_without_those_words_is_a_server_down() -> None:
    exc = InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE")
    assert type(translate_error(exc, "ctx")) is BackendUnavailable


@pytest.mark.slow
def test_max_batch_over_the_served_config_refuses_to_start(triton_server: TritonServer) -> None:
    async def scenario() -> None:
        backend = TritonBackend(TritonSettings(url=triton_server.grpc_url, max_batch=128))
        with pytest.raises(ModelMismatch) as info:
            await backend.start()
        message = str(info.value)
        assert "blazeface_short_cpu" in message
        assert "MAX_BATCH=128 is over its max_batch_size 64 (set MAX_BATCH to at most 64)" in message
        with pytest.raises(RuntimeError):  # closed, its channel released
            await backend.infer("short", images("short", 1))

        fitting = TritonBackend(TritonSettings(url=triton_server.grpc_url, max_batch=64))
        await fitting.start()
        try:
            await fitting.infer("full", images("full", 64))
        finally:
            await fitting.close()

    run(scenario)


@pytest.mark.slow
def test_service_with_a_mismatched_max_batch_does_not_start(triton_server: TritonServer) -> None:
    env = {
        **os.environ,
        "BACKEND": "triton",
        "TRITON_URL": triton_server.grpc_url,
        "MAX_BATCH": "128",
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.run(
        [sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=120
    )
    assert process.returncode != 0
    assert "MAX_BATCH=128 is over its max_batch_size 64" in process.stdout + process.stderr


async def first_mismatch(backend: TritonBackend) -> ModelMismatch:
    """The ModelMismatch of the first call once the channel reconnects (it backs off up to a second)."""
    for _ in range(100):
        try:
            await backend.infer("short", images("short", 1))
        except ModelMismatch as exc:
            return exc
        except BackendUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("no ModelMismatch once Triton answered")


@pytest.mark.slow
def test_config_is_checked_when_triton_first_answers(tmp_path: Path) -> None:
    """The API may start before Triton: no refusal then, but readiness stays false and calls fail with
    the mismatch (503) once Triton answers."""
    ports = Ports.free()
    server = TritonServer(ports=ports, log_path=tmp_path / "tritonserver.log")

    async def scenario() -> None:
        backend = TritonBackend(TritonSettings(url=f"127.0.0.1:{ports.grpc}", max_batch=128))
        await backend.start()  # nothing listens yet
        try:
            await asyncio.to_thread(server.start, 120)
            mismatch = await first_mismatch(backend)
            assert mismatch.status == 503 and "MAX_BATCH=128" in mismatch.detail
            assert not await backend.ready()
        finally:
            await backend.close()

    try:
        run(scenario)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shedding_server(
    start_triton: Callable[..., TritonServer], tmp_path_factory: pytest.TempPathFactory
) -> TritonServer:
    """The CPU models with a queue policy that rejects every request."""

    def shed(config: str) -> str:
        assert CPU_BATCHING in config
        return config.replace(CPU_BATCHING, SHEDDING)

    return start_triton(cpu_repository(tmp_path_factory.mktemp("shedding"), shed))


@pytest.mark.slow
@pytest.mark.parametrize("use_shm", [False, True], ids=["socket", "shm"])
def test_shed_request_is_overloaded_not_a_breaker_failure(
    shedding_server: TritonServer, use_shm: bool
) -> None:
    async def scenario() -> None:
        backend = TritonBackend(TritonSettings(url=shedding_server.grpc_url, use_shared_memory=use_shm))
        breaker = CircuitBreaker(backend, failure_threshold=1)
        await breaker.start()
        try:
            for _ in range(3):
                with pytest.raises(Overloaded) as info:
                    await breaker.infer("short", images("short", 2))
                assert "Request timeout expired" in info.value.detail
            assert breaker.state("short") is CircuitState.CLOSED
            # The request never ran, so its region went back to the pool: one region served all three.
            assert len(our_regions(backend)) == (1 if use_shm else 0)
        finally:
            await breaker.close()

    run(scenario)


@pytest.mark.slow
def test_shed_request_is_429_with_retry_after(shedding_server: TritonServer, tmp_path: Path) -> None:
    with service_process(tmp_path, BACKEND="triton", TRITON_URL=shedding_server.grpc_url) as api:
        image = (Path(__file__).parents[1] / "data" / "photos" / "astronaut.jpg").read_bytes()
        for _ in range(3):
            response = httpx.post(
                f"{api.url}/detect", content=image, headers={"content-type": "image/jpeg"}, timeout=30
            )
            assert response.status_code == 429, response.text
            assert response.headers["retry-after"] == "1"
            assert "Triton's queue is full" in response.json()["detail"]
        assert httpx.get(f"{api.url}/readyz", timeout=5).status_code == 200  # no circuit opened
