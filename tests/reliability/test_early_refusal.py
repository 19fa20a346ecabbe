"""Under overload a request that could not be admitted is refused before its body is read: the refusal
costs the headers, not the upload (loadtest/overload.py measures what that buys)."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest

from blazeface_tools.testkit.servers import app_in_thread
from service.api.app import create_app
from service.settings import Settings
from tests.api.conftest import ScriptedBackend, jpeg

pytestmark = pytest.mark.slow


def test_a_full_queue_refuses_before_the_body_arrives() -> None:
    backend = ScriptedBackend()
    backend.delay_s = 3.0  # the first image holds the only backend slot; the second fills the queue
    settings = Settings(max_queue=1, max_batch=1, max_inflight_batches=1, request_timeout_s=20)
    image = jpeg()
    with app_in_thread(create_app(settings, backend=backend)) as url:
        host, port = url.removeprefix("http://").split(":")

        def post() -> None:
            httpx.post(f"{url}/detect", content=image, headers={"content-type": "image/jpeg"}, timeout=30)

        holders = [threading.Thread(target=post) for _ in range(2)]
        for holder in holders:
            holder.start()
            time.sleep(0.5)  # in order: the first reaches the backend, the second waits in the queue
        declared = 5_000_000
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                f"POST /detect HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
                f"Content-Length: {declared}\r\n\r\n".encode()
                + image[:100]  # a sliver of the body; the rest is never sent
            )
            answer = sock.recv(65536)
        for holder in holders:
            holder.join()
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 429"), answer[:200]
    assert b"retry-after:" in head and b"connection: close" in head
    assert backend.calls == 2  # the refused request never reached the backend
