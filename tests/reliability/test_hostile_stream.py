"""`/stream` under hostile clients, against a real `python -m service`: a pong flood must not grow the
server, cross-origin pages are refused, a browser can send its key as a subprotocol, and frames are
counted in the request and image metrics."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from blazeface_tools.testkit.servers import ServiceProcess, free_port, service_process
from service.api.ws_protocol import BoundedWebSocketProtocol
from tests.conftest import DATA

pytestmark = pytest.mark.slow

KEY = "k1"
LISTED_ORIGIN = "https://app.example"
FRAME = cv2.imencode(".jpg", cv2.imread(str(DATA / "photos" / "astronaut.jpg")))[1].tobytes()
# The pong flood: the server before the fix buffered every pong (~25 MB/s on 2 cores, several hundred MB
# within this budget); with it, it stops reading after a few MB of kernel buffers and grows by ~2 MB.
FLOOD_BYTES = 300_000_000
FLOOD_LIMIT_S = 60.0
STALL_S = 3.0  # no byte accepted for this long: the server stopped reading
RSS_GROWTH_BOUND_MB = 100


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, built_models: None) -> Iterator[ServiceProcess]:
    """Default settings: auth and CORS off."""
    with service_process(tmp_path_factory.mktemp("plain")) as server:
        yield server


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, built_models: None) -> Iterator[ServiceProcess]:
    with service_process(
        tmp_path_factory.mktemp("guarded"), API_KEYS=KEY, CORS_ORIGINS=LISTED_ORIGIN
    ) as server:
        yield server


def ws_url(server: ServiceProcess, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/stream" + query


def refusal(url: str, **kwargs: object) -> tuple[int, dict[str, object]]:
    with pytest.raises(InvalidStatus) as refused, connect(url, **kwargs):  # type: ignore[arg-type]
        pass
    response = refused.value.response
    assert response.headers["content-type"] == "application/problem+json"
    return response.status_code, json.loads(response.body or b"{}")


def detects_a_face(url: str, **kwargs: object) -> str | None:
    """Opens the stream, sends one frame; returns the selected subprotocol."""
    with connect(url, **kwargs) as stream:  # type: ignore[arg-type]
        stream.send(FRAME)
        assert len(json.loads(stream.recv(timeout=10))["faces"]) == 1
        return stream.subprotocol


# --- Origin ---


def test_cross_origin_pages_are_refused_when_cors_is_off(plain: ServiceProcess) -> None:
    status, problem = refusal(ws_url(plain), origin="https://evil.example")
    assert status == 403 and problem["status"] == 403 and problem["title"] == "Forbidden"
    assert detects_a_face(ws_url(plain)) is None  # no Origin: not a browser
    assert detects_a_face(ws_url(plain), origin=plain.url) is None  # the server's own origin


def test_only_listed_origins_may_open_the_stream(guarded: ServiceProcess) -> None:
    auth = {"additional_headers": {"Authorization": f"Bearer {KEY}"}}
    assert refusal(ws_url(guarded), origin="https://evil.example", **auth)[0] == 403
    assert refusal(ws_url(guarded), origin="null", **auth)[0] == 403  # sandboxed frames, file: pages
    detects_a_face(ws_url(guarded), origin=LISTED_ORIGIN, **auth)
    detects_a_face(ws_url(guarded), origin=guarded.url, **auth)


# --- the key from a browser ---


def test_a_browser_sends_its_key_as_a_subprotocol(guarded: ServiceProcess) -> None:
    browser = {"origin": LISTED_ORIGIN, "subprotocols": ["blazeface.v1", f"bearer.{KEY}"]}
    with connect(ws_url(guarded), **browser) as stream:  # type: ignore[arg-type]
        assert stream.subprotocol == "blazeface.v1"
        assert stream.response is not None
        assert not any(KEY in value for value in stream.response.headers.values())  # never echoed
        stream.send(FRAME)
        assert len(json.loads(stream.recv(timeout=10))["faces"]) == 1
    wrong = {"origin": LISTED_ORIGIN, "subprotocols": ["blazeface.v1", "bearer.nope"]}
    assert refusal(ws_url(guarded), **wrong)[0] == 401


# --- metrics ---


def stream_counts(server: ServiceProcess) -> dict[tuple[str, str], float]:
    """/stream's requests by status and images by outcome, as ("status", "200") / ("outcome", "ok")."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(server.url + "/metrics", timeout=10).text):
        for sample in family.samples:
            if sample.name == "blazeface_requests_total" and sample.labels["route"] == "/stream":
                counts["status", sample.labels["status"]] = sample.value
            elif sample.name == "blazeface_images_total" and sample.labels["model"] == "full":
                counts["outcome", sample.labels["outcome"]] = sample.value
    return counts


def test_frames_are_counted_like_detect_requests(guarded: ServiceProcess) -> None:
    before = stream_counts(guarded)
    headers = {"Authorization": f"Bearer {KEY}"}
    with connect(ws_url(guarded, "?model=full"), additional_headers=headers) as stream:
        for message in (FRAME, b"not an image", "text is not a frame", FRAME):
            stream.send(message)
            stream.recv(timeout=10)
    assert refusal(ws_url(guarded))[0] == 401  # a refused handshake is a request too
    after = stream_counts(guarded)
    delta = {key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key)}
    assert delta == {
        ("status", "200"): 2,
        ("status", "400"): 1,
        ("status", "422"): 1,
        ("status", "401"): 1,
        ("outcome", "ok"): 2,
        ("outcome", "rejected"): 1,
    }


# --- handshake refusals ---


def test_a_refused_handshake_logs_no_error(plain: ServiceProcess) -> None:
    assert refusal(ws_url(plain, "?model=nope"))[0] == 422
    detects_a_face(ws_url(plain))  # a whole session later, the refusal's task has surely ended
    assert "without completing handshake" not in plain.log()


# --- pong flood ---


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def open_raw_stream(port: int) -> socket.socket:
    """A WebSocket handshake by hand, leaving a socket that reads nothing unless asked."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the pongs pile up on the server
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def pings(count: int) -> bytes:
    """`count` masked pings with 125-byte payloads (the largest a control frame takes)."""
    mask = os.urandom(4)
    payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(b"p" * 125))
    return (bytes([0x89, 0x80 | 125]) + mask + payload) * count


def flood(sock: socket.socket) -> tuple[int, bool]:
    """Sends pings, never reads: until FLOOD_BYTES, a stall of STALL_S or FLOOD_LIMIT_S. Returns the
    bytes the server took and whether it stopped taking them."""
    chunk = pings(512)
    sock.settimeout(0.5)
    sent, started, last_progress = 0, time.monotonic(), time.monotonic()
    while sent < FLOOD_BYTES and time.monotonic() - started < FLOOD_LIMIT_S:
        with contextlib.suppress(TimeoutError):
            sent += sock.send(chunk)
            last_progress = time.monotonic()
        if time.monotonic() - last_progress > STALL_S:
            return sent, True
    return sent, False


def test_a_pong_flood_does_not_grow_the_server(plain: ServiceProcess) -> None:
    pid, port = plain.process.pid, int(plain.url.rsplit(":", 1)[1])
    start_mb = rss_mb(pid)
    with open_raw_stream(port) as sock:
        sent, stalled = flood(sock)
        growth_mb = rss_mb(pid) - start_mb
        print(f"\npong flood: the server took {sent / 1e6:.0f} MB of pings; RSS +{growth_mb:.0f} MB")
        assert growth_mb < RSS_GROWTH_BOUND_MB
        assert stalled  # back-pressure reached the client
        assert httpx.get(plain.url + "/healthz", timeout=10).status_code == 200  # others are served


# --- keepalive on a peer that never reads (the protocol alone, with a short keepalive) ---


async def accept_and_wait(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] != "websocket.disconnect":
            pass


def test_a_peer_that_never_reads_is_dropped_after_the_keepalive_timeout() -> None:
    config = uvicorn.Config(
        accept_and_wait,
        port=free_port(),
        ws=BoundedWebSocketProtocol,
        ws_ping_interval=0.5,
        ws_ping_timeout=0.5,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with open_raw_stream(config.port) as sock:
            # The server stops reading at once; its keepalive ping goes unanswered, and the close frame
            # it then sends cannot be flushed to a peer that does not read: only an abort ends it.
            sock.settimeout(0.5)
            deadline = time.monotonic() + 20
            dropped = False
            while not dropped and time.monotonic() < deadline:
                try:
                    sock.send(pings(512))
                except TimeoutError:
                    pass
                except OSError:  # reset by the server
                    dropped = True
            assert dropped
    finally:
        server.should_exit = True
        thread.join(10)
