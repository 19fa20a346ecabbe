"""The bounded HTTP protocol at its exact limits: uvicorn in a thread with small bounds, raw sockets, and an
ASGI app that answers 200 with the size of the body it read."""

from __future__ import annotations

import functools
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from blazeface_tools.testkit.servers import free_port
from service.api.protocol import BoundedHttpToolsProtocol
from service.settings import Settings

MAX_HEADER_BYTES = 2048
MAX_URL_BYTES = 512
MAX_CONNECTIONS = 3


async def body_size_app(scope: Scope, receive: Receive, send: Send) -> None:
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    settings = Settings(
        max_header_bytes=MAX_HEADER_BYTES, max_url_bytes=MAX_URL_BYTES, max_connections=MAX_CONNECTIONS
    )
    config = uvicorn.Config(
        body_size_app,
        port=free_port(),
        http=functools.partial(BoundedHttpToolsProtocol, settings=settings),  # type: ignore[arg-type]
        lifespan="off",
        log_level="error",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield config.port
    server.should_exit = True
    thread.join(10)


def exchange(port: int, data: bytes, piece: int | None = None) -> bytes:
    """Send `data` (at once, or `piece` bytes at a time) and read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for start in range(0, len(data), piece or len(data)):
            sock.sendall(data[start : start + (piece or len(data))])
        sock.settimeout(1.0)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass  # a kept-alive connection: the answer has come
        return answer


def statuses(answer: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def head_of(size: int, target: bytes = b"/") -> bytes:
    """A GET whose request line and headers are exactly `size` bytes."""
    start, end = b"GET " + target + b" HTTP/1.1\r\nhost: x\r\nx-filler: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("piece", [None, 100], ids=["one-write", "100-byte-writes"])
def test_the_head_limit_is_exact(port: int, piece: int | None) -> None:
    assert statuses(exchange(port, head_of(MAX_HEADER_BYTES), piece)) == [200]
    answer = exchange(port, head_of(MAX_HEADER_BYTES + 1), piece)
    assert statuses(answer) == [431]
    assert b"content-type: application/problem+json" in answer and b"connection: close" in answer


def test_the_url_limit_is_exact(port: int) -> None:
    assert statuses(exchange(port, head_of(1024, b"/" + b"u" * (MAX_URL_BYTES - 1)))) == [200]
    assert statuses(exchange(port, head_of(1024, b"/" + b"u" * MAX_URL_BYTES))) == [414]
    # Longer than the whole head budget, in one write: one answer, the 414.
    assert statuses(exchange(port, head_of(3 * MAX_HEADER_BYTES, b"/" + b"u" * 2 * MAX_HEADER_BYTES))) == [
        414
    ]


def test_each_request_on_a_connection_has_its_own_head_budget(port: int) -> None:
    # Two maximal heads one after the other on one kept-alive connection, and a body far larger than the
    # head budget in the same write as its head: all served, the body whole. Then one head too many.
    body = b"b" * (4 * MAX_HEADER_BYTES)
    post = b"PUT / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for request in (head_of(MAX_HEADER_BYTES), head_of(MAX_HEADER_BYTES), post + body):
            sock.sendall(request)
            answer = sock.recv(65536)
            assert statuses(answer) == [200], answer
        assert answer.endswith(str(len(body)).encode())
        sock.sendall(head_of(MAX_HEADER_BYTES + 1))
        assert statuses(sock.recv(65536)) == [431]


def test_connections_past_the_limit_are_refused_at_once(port: int) -> None:
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # accepted by the server
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            answer = extra.recv(65536)  # before sending anything
        assert statuses(answer) == [503]
        assert b"retry-after: 1" in answer
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while statuses(exchange(port, head_of(100))) != [200]:
        assert time.monotonic() < deadline, "still refusing after the connections closed"
        time.sleep(0.1)
