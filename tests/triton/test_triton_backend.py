"""TritonBackend: error translation (every library error maps), then against the real CPU tritonserver
from nvidia-pytriton (no mocks): outputs, concurrency, shared memory, kill/pause/restart."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import grpc
import grpc.aio
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_sync
import tritonclient.utils
import tritonclient.utils.shared_memory
from tritonclient.utils import InferenceServerException
from tritonclient.utils.shared_memory import SharedMemoryException

from blazeface_tools.triton_cpu.server import SHM_DIR, Ports, TritonServer, _running, _stubs_of
from service.backends.triton import TritonBackend
from service.backends.triton_config import TritonSettings
from service.backends.triton_errors import LIBRARY_ERRORS, translate_error
from service.backends.triton_errors import translated as _translated
from service.errors import BackendUnavailable, DeadlineExceeded
from service.settings import Settings
from service.specs import MODELS
from tests.triton.support import assert_matches, images, our_regions, run

# --- error translation (no server) ------------------------------------------------------------------


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda code: code.name)
def test_every_grpc_status_maps(code: grpc.StatusCode) -> None:
    expected = DeadlineExceeded if code is grpc.StatusCode.DEADLINE_EXCEEDED else BackendUnavailable
    raised = [
        InferenceServerException("details", status=str(code)),  # what tritonclient raises
        grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "details"),  # raw gRPC
    ]
    for exc in raised:
        with pytest.raises(expected) as info, _translated("ctx"):
            raise exc
        assert info.value.__cause__ is exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (InferenceServerException("no status"), BackendUnavailable),
        (InferenceServerException("odd status", status="weird"), BackendUnavailable),
        (SharedMemoryException("unable to create"), BackendUnavailable),
        (grpc.aio.UsageError("channel closed"), BackendUnavailable),
        (grpc.aio.AbortError("aborted"), BackendUnavailable),
        (grpc.aio.InternalError("internal"), BackendUnavailable),
        (ConnectionRefusedError("refused"), BackendUnavailable),
        (FileNotFoundError("/dev/shm/x"), BackendUnavailable),
        (TimeoutError(), DeadlineExceeded),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else value.__name__,
)
def test_other_library_errors_map(exc: Exception, expected: type[Exception]) -> None:
    assert isinstance(translate_error(exc, "ctx"), expected)
    with pytest.raises(expected) as info, _translated("ctx"):
        raise exc
    assert info.value.__cause__ is exc


@pytest.mark.parametrize("module", [tritonclient.utils, tritonclient.utils.shared_memory, grpc.aio])
def test_every_library_exception_class_is_translated(module: object) -> None:
    """A new exception class in tritonclient or grpc.aio fails here until LIBRARY_ERRORS covers it."""
    classes = [obj for _, obj in inspect.getmembers(module, inspect.isclass) if issubclass(obj, Exception)]
    assert classes
    assert [cls for cls in classes if not issubclass(cls, LIBRARY_ERRORS)] == []


def test_settings_validate() -> None:
    assert TritonSettings(model_suffix="_trt").model_name("full") == "blazeface_full_trt"
    bad: list[dict[str, Any]] = [{"timeout_s": 0}, {"ready_timeout_s": -1}, {"max_batch": 0}, {"url": ""}]
    for fields in bad:
        with pytest.raises(ValueError):
            TritonSettings(**fields)


def test_from_service_settings() -> None:
    settings = Settings.model_validate(
        {
            "backend": "triton",
            "triton_url": "triton:8001",
            "triton_model_suffix": "_trt",
            "triton_timeout_s": 0.25,
            "triton_shared_memory": True,
            "max_batch": 8,
        }
    )
    assert TritonBackend.from_settings(settings).settings == TritonSettings(
        url="triton:8001", model_suffix="_trt", timeout_s=0.25, use_shared_memory=True, max_batch=8
    )


def test_lifecycle_and_bad_batches() -> None:
    async def scenario() -> None:
        backend = TritonBackend(TritonSettings(url=f"127.0.0.1:{Ports.free().grpc}"))
        with pytest.raises(RuntimeError):
            await backend.infer("short", images("short", 1))
        await backend.start()
        for model, batch in [
            ("short", images("full", 1)),
            ("short", images("short", 1).astype(np.float32)),
            ("short", images("short", 1)[0]),
            ("short", images("short", 0)),
            ("tiny", images("short", 1)),
        ]:
            with pytest.raises(ValueError):
                await backend.infer(model, batch)
        await backend.close()
        assert not await backend.ready()
        with pytest.raises(RuntimeError):
            await backend.infer("short", images("short", 1))
        with pytest.raises(RuntimeError):
            await backend.start()

    run(scenario)


@pytest.mark.parametrize("use_shm", [False, True], ids=["socket", "shm"])
def test_nothing_listening_is_unavailable_fast(use_shm: bool) -> None:
    async def scenario() -> None:
        settings = TritonSettings(url=f"127.0.0.1:{Ports.free().grpc}", use_shared_memory=use_shm)
        backend = TritonBackend(settings)
        await backend.start()
        try:
            began = time.monotonic()
            with pytest.raises(BackendUnavailable) as info:
                await backend.infer("short", images("short", 1))
            assert time.monotonic() - began < 1.0
            assert isinstance(info.value.__cause__, LIBRARY_ERRORS)
            assert not await backend.ready()
        finally:
            await backend.close()

    run(scenario)


# --- against the real server ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("use_shm", [False, True], ids=["socket", "shm"])
def test_outputs_equal_onnxruntime(
    triton_server: TritonServer, reference_sessions: dict[str, ort.InferenceSession], use_shm: bool
) -> None:
    async def scenario() -> None:
        backend = TritonBackend(TritonSettings(url=triton_server.grpc_url, use_shared_memory=use_shm))
        await backend.start()
        try:
            assert await backend.ready()
            for model in MODELS:
                for size in (1, 5):
                    batch = images(model, size, seed=size)
                    assert_matches(reference_sessions, model, batch, await backend.infer(model, batch))
            assert bool(our_regions(backend)) == use_shm
        finally:
            await backend.close()
        assert our_regions(backend) == []

    run(scenario)


@pytest.mark.slow
@pytest.mark.parametrize("use_shm", [False, True], ids=["socket", "shm"])
def test_concurrent_single_images(
    triton_server: TritonServer, reference_sessions: dict[str, ort.InferenceSession], use_shm: bool
) -> None:
    model, calls = "short", 16
    stats = triton_sync.InferenceServerClient(triton_server.grpc_url)

    def executions() -> int:
        return int(stats.get_inference_statistics(f"blazeface_{model}_cpu").model_stats[0].execution_count)

    async def scenario() -> None:
        backend = TritonBackend(TritonSettings(url=triton_server.grpc_url, use_shared_memory=use_shm))
        await backend.start()
        try:
            batches = [images(model, 1, seed=seed) for seed in range(calls)]
            results = await asyncio.gather(*(backend.infer(model, batch) for batch in batches))
            for batch, result in zip(batches, results, strict=True):
                assert_matches(reference_sessions, model, batch, result)
        finally:
            await backend.close()

    try:
        before = executions()
        run(scenario)
        # Triton's dynamic batcher merged them: fewer executions than requests (ARCHITECTURE.md §7).
        assert executions() - before < calls
    finally:
        stats.close()


@pytest.mark.slow
@pytest.mark.parametrize("use_shm", [False, True], ids=["socket", "shm"])
def test_kill_then_restart_recovers_same_backend(
    own_triton_server: TritonServer, reference_sessions: dict[str, ort.InferenceSession], use_shm: bool
) -> None:
    server = own_triton_server
    batch = images("full", 2)

    async def scenario() -> None:
        backend = TritonBackend(TritonSettings(url=server.grpc_url, use_shared_memory=use_shm))
        await backend.start()
        try:
            assert_matches(reference_sessions, "full", batch, await backend.infer("full", batch))

            # Traffic in flight while the server dies: every call ends, failures are BackendUnavailable.
            stop = asyncio.Event()
            failures: list[float] = []

            async def traffic() -> None:
                while not stop.is_set():
                    try:
                        await backend.infer("full", batch)
                    except BackendUnavailable:
                        failures.append(time.monotonic())
                        await asyncio.sleep(0.01)

            workers = [asyncio.create_task(traffic()) for _ in range(4)]
            await asyncio.sleep(0.3)
            stubs = _stubs_of(server.pid or 0)
            killed_at = time.monotonic()
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(0.5)
            assert failures and failures[0] - killed_at < 1.0
            began = time.monotonic()
            assert not await backend.ready()
            with pytest.raises(BackendUnavailable):
                await backend.infer("full", batch)
            assert time.monotonic() - began < 1.0
            stop.set()
            await asyncio.wait_for(asyncio.gather(*workers), timeout=5)
            # The supervisor ended the orphaned stubs and removed their regions.
            assert stubs and not any(_running(stub.pid) for stub in stubs)
            assert not any((SHM_DIR / stub.shm_region).exists() for stub in stubs)

            await asyncio.to_thread(server.start)
            deadline = time.monotonic() + 10
            while not await backend.ready():
                assert time.monotonic() < deadline, "same backend object did not reconnect"
                await asyncio.sleep(0.05)
            assert_matches(reference_sessions, "full", batch, await backend.infer("full", batch))
        finally:
            await backend.close()
        assert our_regions(backend) == []

    run(scenario)


@pytest.mark.slow
@pytest.mark.parametrize("use_shm", [False, True], ids=["socket", "shm"])
def test_paused_server_is_a_deadline_then_recovers(
    own_triton_server: TritonServer, reference_sessions: dict[str, ort.InferenceSession], use_shm: bool
) -> None:
    server = own_triton_server
    batch = images("short", 1)
    settings = TritonSettings(
        url=server.grpc_url, timeout_s=0.3, ready_timeout_s=0.2, use_shared_memory=use_shm
    )

    async def scenario() -> None:
        backend = TritonBackend(settings)
        await backend.start()
        try:
            await backend.infer("short", batch)
            server.pause()
            try:
                began = time.monotonic()
                with pytest.raises(DeadlineExceeded):
                    await backend.infer("short", batch)
                assert time.monotonic() - began < 1.0
                assert not await backend.ready()
                # Triton may still answer that request later: its region is gone, never reused.
                assert our_regions(backend) == []
            finally:
                server.resume()
            assert await backend.ready()
            assert_matches(reference_sessions, "short", batch, await backend.infer("short", batch))
            assert_matches(reference_sessions, "short", batch, await backend.infer("short", batch))
        finally:
            await backend.close()
        assert our_regions(backend) == []

    run(scenario)
