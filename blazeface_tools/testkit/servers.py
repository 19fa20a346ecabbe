"""Start real servers on free loopback ports for tests: uvicorn in a subprocess or in a thread."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from blazeface_tools import CHECKOUT
from service.api.protocol import BoundedHttpToolsProtocol
from service.api.ws_protocol import BoundedWebSocketProtocol

REPO = CHECKOUT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, timeout_s: float = 60.0, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + path, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url}{path} not ready within {timeout_s} s")


@dataclass
class ServiceProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def service_process(
    tmp_path: Path, *, python: str = sys.executable, cwd: Path = REPO, **env: str
) -> Iterator[ServiceProcess]:
    """`python -m service` with the given settings (upper-case keywords), as users run it; `python` and
    `cwd` run another installation of it (e.g. a wheel in a fresh venv)."""
    port = free_port()
    log_path = tmp_path / f"service-{port}.log"
    full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **env}
    full_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [python, "-m", "service"], cwd=cwd, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    server = ServiceProcess(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_until_ready(server.url)
        yield server
    except TimeoutError:
        server.stop(signal.SIGKILL)
        raise AssertionError("service did not start:\n" + server.log()[-3000:]) from None
    finally:
        server.stop()


@contextlib.contextmanager
def app_in_thread(app: FastAPI) -> Iterator[str]:
    """A real uvicorn server for an app built in this process (e.g. with a scripted backend), with the
    service's own HTTP protocol and WebSocket protocol on the app's settings, as `python -m service`."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        log_level="warning",
        lifespan="on",
        http=functools.partial(BoundedHttpToolsProtocol, settings=app.state.settings),  # type: ignore[arg-type]
        ws=BoundedWebSocketProtocol,
        ws_max_size=app.state.settings.max_body_bytes,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    try:
        wait_until_ready(url, path="/healthz")
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
