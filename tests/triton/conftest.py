"""Fixtures for the Triton tests: the ONNX models and a real CPU `tritonserver` on free loopback ports."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import onnxruntime as ort
import pytest

from blazeface_tools import TRITON_REPO
from blazeface_tools.triton_cpu.server import Ports, TritonServer, TritonServerError
from blazeface_tools.weights.build import ensure_built
from service.specs import MODELS


@pytest.fixture(scope="session")
def onnx_paths() -> dict[str, Path]:
    """Every model's ONNX file, converted first when missing or stale."""
    return ensure_built()


@pytest.fixture(scope="session")
def reference_sessions(onnx_paths: dict[str, Path]) -> dict[str, ort.InferenceSession]:
    """In-process ONNX Runtime on the same files Triton serves: the expected outputs."""
    return {
        model: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for model, path in onnx_paths.items()
    }


@pytest.fixture(scope="session")
def start_triton(
    onnx_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., TritonServer]]:
    """Starts servers on fresh free ports (retrying once if a port was taken meanwhile), from
    `model_repository` (default triton_repo/); stops them all at the end of the session, whatever the
    tests did to them."""
    servers: list[TritonServer] = []

    def start(model_repository: Path = TRITON_REPO) -> TritonServer:
        for attempt in range(2):
            log = tmp_path_factory.mktemp("triton") / "tritonserver.log"
            server = TritonServer(
                model_repository=model_repository,
                models=[f"blazeface_{m}_cpu" for m in MODELS],
                ports=Ports.free(),
                log_path=log,
            )
            servers.append(server)
            try:
                server.start(timeout_s=120)
                return server
            except TritonServerError:
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def triton_server(start_triton: Callable[..., TritonServer]) -> TritonServer:
    """One server shared by the tests that leave it running."""
    return start_triton()


@pytest.fixture
def own_triton_server(start_triton: Callable[..., TritonServer]) -> Iterator[TritonServer]:
    """A server of the test's own, for tests that kill, pause or restart it."""
    server = start_triton()
    try:
        yield server
    finally:
        server.stop()
