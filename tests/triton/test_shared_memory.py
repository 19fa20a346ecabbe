"""Shared memory where Triton cannot see our regions, as in the shipped topologies (compose: other
container; Kubernetes: other pod), against the real CPU tritonserver: the call that finds out falls back to
the socket and succeeds, shared memory is off from then on (one WARNING), later calls go straight to the
socket. At start, the registrations that dead processes of this host left on Triton are removed.
Figures (first call, later calls) are printed: run with `-s` to see them."""

from __future__ import annotations

import logging
import shlex
import statistics
import subprocess
import sys
import time
from multiprocessing import resource_tracker
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest
import tritonclient.grpc as triton_sync

from blazeface_tools.testkit.servers import service_process
from blazeface_tools.triton_cpu.server import TritonServer
from service.backends.triton import TritonBackend
from service.backends.triton_config import TritonSettings
from service.backends.triton_shm import SHM_DIR, region_prefix
from service.specs import MODELS
from tests.triton.support import assert_matches, images, our_regions, run

pytestmark = pytest.mark.slow


def registered(server: TritonServer) -> set[str]:
    client = triton_sync.InferenceServerClient(server.grpc_url)
    try:
        return set(client.get_system_shared_memory_status().regions)
    finally:
        client.close()


def test_region_triton_cannot_open_falls_back_to_the_socket(
    triton_server: TritonServer,
    reference_sessions: dict[str, ort.InferenceSession],
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch = images("short", 4)
    timings_ms: list[float] = []

    async def scenario() -> None:
        warm = TritonBackend(TritonSettings(url=triton_server.grpc_url))  # the figures compare like with like
        await warm.start()
        await warm.infer("short", batch)
        await warm.close()
        backend = TritonBackend(TritonSettings(url=triton_server.grpc_url, use_shared_memory=True))
        await backend.start()
        try:
            # A region whose POSIX object is gone when Triton opens it: what Triton meets when it does not
            # share our /dev/shm, and it answers the same ("Unable to open shared memory region").
            pool = backend._regions
            assert pool is not None
            region = pool.acquire(MODELS["short"], len(batch))
            assert region is not None
            (SHM_DIR / region.name).unlink()
            # Gone behind multiprocessing's back: its tracker must not look for it at exit (it knows the
            # object as "/" + tritonclient's key "/name").
            resource_tracker.unregister("//" + region.name, "shared_memory")
            pool.release(region)
            for _ in range(21):
                began = time.perf_counter()
                got = await backend.infer("short", batch)
                timings_ms.append((time.perf_counter() - began) * 1e3)
                assert_matches(reference_sessions, "short", batch, got)
                # Off after the first call: no region made or registered again.
                assert backend._regions is None
                assert our_regions(backend) == []
                assert not any(name.startswith(backend._prefix) for name in registered(triton_server))
        finally:
            await backend.close()

    with caplog.at_level(logging.WARNING, logger="service.backends.triton"):
        run(scenario)
    warnings = [r.getMessage() for r in caplog.records if "shared memory off" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "Unable to open shared memory region" in warnings[0]
    print(
        f"\nshm refused → socket: first call {timings_ms[0]:.1f} ms, "
        f"later calls median {statistics.median(timings_ms[1:]):.1f} ms"
    )


def can_unshare() -> bool:
    probe = ["unshare", "--mount", "--propagation", "private", "true"]
    try:
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0
    except OSError:
        return False


def test_service_with_its_own_dev_shm_serves_over_the_socket(
    triton_server: TritonServer, tmp_path: Path
) -> None:
    """The service in a mount namespace of its own with a fresh /dev/shm (a container that does not share
    Triton's), TRITON_SHARED_MEMORY=true: every request answers 200, one WARNING says why."""
    if not can_unshare():
        pytest.skip("unshare --mount is not permitted here (needs CAP_SYS_ADMIN)")
    python = tmp_path / "python-own-shm"
    python.write_text(
        "#!/bin/sh\nexec unshare --mount --propagation private sh -c "
        '\'mount -t tmpfs -o size=256m tmpfs /dev/shm && exec "$0" "$@"\' '
        f'{shlex.quote(sys.executable)} "$@"\n'
    )
    python.chmod(0o755)
    image = (Path(__file__).parents[1] / "data" / "photos" / "astronaut.jpg").read_bytes()
    env = {"BACKEND": "triton", "TRITON_URL": triton_server.grpc_url, "TRITON_SHARED_MEMORY": "true"}
    with service_process(tmp_path, python=str(python), **env) as api, httpx.Client(timeout=30) as client:
        for model in ("short", "full", "short"):
            response = client.post(
                f"{api.url}/detect",
                params={"model": model},
                content=image,
                headers={"content-type": "image/jpeg"},
            )
            assert response.status_code == 200, response.text
            assert response.json()["faces"]
        log = api.log()
    assert log.count("shared memory off") == 1, log
    assert "Unable to open shared memory region" in log


def test_start_removes_registrations_of_dead_processes_of_this_host(triton_server: TritonServer) -> None:
    finished = subprocess.Popen(["true"])
    finished.wait()
    host = region_prefix().split("-")[1]
    names = {
        "dead": f"blazeface-{host}-{finished.pid}-1-deadbeef-short-0",  # this host, process gone
        "live": f"{region_prefix()}-short-0",  # this process
        "foreign": f"blazeface-00000000-{finished.pid}-1-cafe-short-0",  # another host: cannot tell
    }
    client = triton_sync.InferenceServerClient(triton_server.grpc_url)
    try:
        for name in names.values():
            (SHM_DIR / name).write_bytes(bytes(1024))  # a POSIX shared-memory object is this file
            client.register_system_shared_memory(name, "/" + name, 1024)

        async def scenario() -> None:
            backend = TritonBackend(TritonSettings(url=triton_server.grpc_url, use_shared_memory=True))
            await backend.start()
            await backend.close()

        run(scenario)
        left = registered(triton_server)
        assert names["dead"] not in left and not (SHM_DIR / names["dead"]).exists()
        assert {names["live"], names["foreign"]} <= left
    finally:
        for name in names.values():
            client.unregister_system_shared_memory(name)
            (SHM_DIR / name).unlink(missing_ok=True)
        client.close()


FULL_DEV_SHM = """
import logging, sys
from service.backends.triton_config import TritonSettings
from service.backends.triton_shm import RegionPool, region_prefix
from service.specs import MODELS
logging.basicConfig(level=logging.WARNING, stream=sys.stdout)
pool = RegionPool(None, region_prefix(), TritonSettings(max_batch=16), ())  # acquire never calls Triton
assert pool.acquire(MODELS["short"], 16) is not None  # 0.86 MiB: fits the 2 MiB /dev/shm
assert pool.acquire(MODELS["full"], 16) is None  # 1.8 MiB: does not, beside it
assert pool.acquire(MODELS["full"], 16) is None  # and is not tried again
print("survived")
"""


def test_a_full_dev_shm_stops_the_pool_growing_instead_of_crashing(tmp_path: Path) -> None:
    """Without its pages reserved, a region on a full tmpfs is a SIGBUS at the first write."""
    if not can_unshare():
        pytest.skip("unshare --mount is not permitted here (needs CAP_SYS_ADMIN)")
    script = 'mount -t tmpfs -o size=2m tmpfs /dev/shm && exec "$0" -c "$1"'
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, sys.executable, FULL_DEV_SHM],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("could not make region") == 1, result.stdout
    assert "No space left on device" in result.stdout and "survived" in result.stdout
