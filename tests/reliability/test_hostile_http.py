"""Hostile HTTP at the socket, against a real `python -m service`: each attack is refused before it costs
anything, and nothing it does is counted or logged as a server error.

Measured on the code before these bounds: a 64 MB header held the event loop 7.8 s (other clients stalled
2.6 s, RSS +87 MB) and was then served; a body trickled at 1 byte/s was held for good (1 500 such
connections at once); a batch cut before its closing boundary was a 200 with its last image missing; a
client aborting mid-upload was counted as a 500 with two tracebacks logged. Bounds here are generous
(answers within seconds, never latencies): the runs are on a loaded 2-core CI machine.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from blazeface_tools.testkit.images import scan_bomb
from blazeface_tools.testkit.servers import ServiceProcess, service_process
from tests.api.conftest import jpeg

pytestmark = pytest.mark.slow

UPLOAD_TIMEOUT_S = 2.0
HEAD_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 40
ANSWER_WITHIN_S = 5.0  # for an answer that is due at once (or at UPLOAD_TIMEOUT_S)
HOSTILE_BYTES = 16 * 1024 * 1024  # far past the default 32 KiB head / 8 KiB URL limits


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, built_models: None) -> Iterator[ServiceProcess]:
    env = {
        "WORKERS": "1",
        "UPLOAD_TIMEOUT_S": str(UPLOAD_TIMEOUT_S),
        "HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    }
    with service_process(tmp_path_factory.mktemp("hostile"), **env) as process:
        yield process


def connect(server: ServiceProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])), timeout=10)


def read_answer(sock: socket.socket, within_s: float) -> bytes:
    """What the server sends until it closes, or b"" if it sends nothing within `within_s`."""
    answer = b""
    deadline = time.monotonic() + within_s
    while (left := deadline - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
        try:
            chunk = sock.recv(65536)
        except ConnectionError:
            break
        if not chunk:
            break
        answer += chunk
    return answer


def status_of(answer: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    return int(match.group(1)) if match else None


def problem_of(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), head
    return orjson.loads(body)


def requests_total(server: ServiceProcess) -> dict[tuple[str, str], float]:
    """blazeface_requests_total by (route, status)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    pattern = r'^blazeface_requests_total\{route="([^"]*)",status="(\d+)"\} (\S+)$'
    return {(route, status): float(value) for route, status, value in re.findall(pattern, text, re.MULTILINE)}


@pytest.mark.parametrize(
    ("start", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-filler: ", 431),  # one endless header value
        (b"GET /healthz?q=", 414),  # an endless request target
    ],
    ids=["header", "url"],
)
def test_a_huge_head_is_refused_before_it_is_read(server: ServiceProcess, start: bytes, status: int) -> None:
    # The head never ends: a server that reads it all before judging it never answers.
    with connect(server) as sock:
        sock.sendall(start)
        piece, sent = b"a" * 65536, 0
        try:
            while sent < HOSTILE_BYTES:
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server had answered and stopped reading: fine, the answer is buffered
        answer = read_answer(sock, ANSWER_WITHIN_S)
    assert status_of(answer) == status, answer[:200]
    assert problem_of(answer)["status"] == status
    # A large but legal head is still served, and the server is healthy.
    response = httpx.get(server.url + "/healthz", headers={"x-filler": "a" * 16_000}, timeout=10)
    assert response.status_code == 200


def test_a_trickled_body_times_out_and_excess_connections_are_refused(server: ServiceProcess) -> None:
    head = b"POST /detect HTTP/1.1\r\nhost: x\r\ncontent-type: image/jpeg\r\ncontent-length: 1000\r\n\r\n"
    # One body at 5 bytes/s (it would take 200 s): answered 408 once UPLOAD_TIMEOUT_S has passed.
    with connect(server) as sock:
        sock.sendall(head)
        started, answer = time.monotonic(), b""
        while not answer and time.monotonic() - started < UPLOAD_TIMEOUT_S + ANSWER_WITHIN_S:
            sock.sendall(b"x")
            answer = read_answer(sock, 0.2)
        answer += read_answer(sock, ANSWER_WITHIN_S)  # the rest, up to the server's close
    assert status_of(answer) == 408, answer[:200]
    assert problem_of(answer)["status"] == 408

    # Many trickling uploads at once: past MAX_CONNECTIONS the server refuses at once instead of
    # holding them all.
    extra = 20
    socks = [connect(server) for _ in range(MAX_CONNECTIONS + extra)]
    try:
        for sock in socks:
            with contextlib.suppress(OSError):  # a refused connection may be closed already
                sock.sendall(head + b"x")
        answers = [read_answer(sock, 0.05) for sock in socks]  # a refusal comes at connect
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while sum(status_of(a) == 503 for a in answers) < extra and time.monotonic() < deadline:
            answers = [a or read_answer(s, 0.05) for a, s in zip(answers, socks, strict=True)]
    finally:
        for sock in socks:
            sock.close()
    refused = [a for a in answers if status_of(a) == 503]
    assert len(refused) >= extra, [status_of(a) for a in answers]
    for answer in refused:
        assert problem_of(answer)["status"] == 503
        assert b"retry-after: 1" in answer.lower()
    # Once they are gone (a refused connection lingers up to 1 s), new connections are served again.
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while httpx.get(server.url + "/healthz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline, "still refusing after the connections closed"
        time.sleep(0.2)


def test_a_multipart_batch_cut_short_is_a_400_never_fewer_results(server: ServiceProcess) -> None:
    images = [jpeg(64 + 8 * i, 48) for i in range(3)]
    boundary = "hostileboundary"
    parts = b"".join(
        f'--{boundary}\r\ncontent-disposition: form-data; name="images"; filename="{i}.jpg"\r\n'
        "content-type: image/jpeg\r\n\r\n".encode()
        + image
        + b"\r\n"
        for i, image in enumerate(images)
    )
    complete = parts + f"--{boundary}--\r\n".encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}

    def post(body: bytes) -> httpx.Response:
        return httpx.post(server.url + "/detect/batch", content=body, headers=headers, timeout=30)

    response = post(complete)
    assert response.status_code == 200
    assert len(response.json()["results"]) == len(images)
    for cut in (complete[: len(parts)], complete[: len(parts) - len(images[-1]) // 2]):  # no end; mid-part
        response = post(cut)
        assert response.status_code == 400, response.text[:300]
        assert response.headers["content-type"] == "application/problem+json"


def test_a_client_aborting_mid_upload_is_no_server_error(server: ServiceProcess) -> None:
    log_before = len(server.log())
    counted_before = requests_total(server)
    heads = [
        b"POST /detect HTTP/1.1\r\nhost: x\r\ncontent-type: image/jpeg\r\ncontent-length: 100000\r\n\r\n",
        b"POST /detect HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=B\r\n"
        b'content-length: 100000\r\n\r\n--B\r\ncontent-disposition: form-data; name="image"; '
        b'filename="a.jpg"\r\n\r\n',
    ]
    aborts = 0
    for head in heads:
        for reset in (False, True):  # a plain close (FIN), and an abortive one (RST)
            with connect(server) as sock:
                sock.sendall(head + b"\xff" * 1000)
                time.sleep(0.3)  # the request is in the app, reading the body
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            aborts += 1

    def detect_counts() -> dict[str, float]:
        after = requests_total(server)
        return {
            status: value - counted_before.get((route, status), 0.0)
            for (route, status), value in after.items()
            if route == "/detect" and value != counted_before.get((route, status), 0.0)
        }

    deadline = time.monotonic() + ANSWER_WITHIN_S
    while sum(detect_counts().values()) < aborts and time.monotonic() < deadline:
        time.sleep(0.1)
    counts = detect_counts()
    assert not [status for status in counts if status.startswith("5")], counts
    assert counts == {"499": aborts}
    log = server.log()[log_before:]
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-3000:]


SMALL_BODY_BYTES = 256 * 1024
UPLOAD_BUFFER_BYTES = 2 * SMALL_BODY_BYTES


@pytest.fixture(scope="module")
def small_buffer(tmp_path_factory: pytest.TempPathFactory, built_models: None) -> Iterator[ServiceProcess]:
    env = {
        "WORKERS": "1",
        "MAX_BODY_BYTES": str(SMALL_BODY_BYTES),
        "UPLOAD_BUFFER_BYTES": str(UPLOAD_BUFFER_BYTES),
    }
    with service_process(tmp_path_factory.mktemp("buffer"), **env) as process:
        yield process


def raw_head(length: int | None) -> bytes:
    framing = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    return f"POST /detect HTTP/1.1\r\nhost: x\r\ncontent-type: image/jpeg\r\n{framing}\r\n\r\n".encode()


def test_uploads_in_progress_are_held_to_the_upload_buffer(small_buffer: ServiceProcess) -> None:
    """Two uploads one byte short of MAX_BODY_BYTES fill the buffer: every other body is refused, 429 with
    Retry-After, at once when its Content-Length says so; both uploads still finish; then it is free."""
    holders = [connect(small_buffer) for _ in range(2)]
    try:
        for sock in holders:
            sock.sendall(raw_head(SMALL_BODY_BYTES) + b"\xff" * (SMALL_BODY_BYTES - 1))
        # Held once the server has read them: a 3-byte body no longer fits (until then it is a 400).
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while (tiny := post_raw(small_buffer, b"abc")).status_code != 429:
            assert tiny.status_code == 400 and time.monotonic() < deadline, tiny.text[:200]
            time.sleep(0.05)
        assert tiny.headers["retry-after"] == "1"
        assert "upload buffer" in tiny.json()["detail"]
        for framing, first in ((SMALL_BODY_BYTES, b""), (None, b"1000\r\n" + b"\xff" * 4096 + b"\r\n")):
            with connect(small_buffer) as sock:
                sock.sendall(raw_head(framing) + first)  # no more is sent: the answer must not wait for it
                answer = read_answer(sock, ANSWER_WITHIN_S)
            assert status_of(answer) == 429, answer[:200]
            assert problem_of(answer)["status"] == 429
            assert b"connection: close" in answer.lower() and b"retry-after: 1" in answer.lower()
        for sock in holders:  # the last byte: admitted all along, so answered as any non-image (400)
            sock.sendall(b"\xff")
            assert status_of(read_answer(sock, ANSWER_WITHIN_S)) == 400
    finally:
        for sock in holders:
            sock.close()
    image = jpeg(160, 120)  # padded to the largest body (a decoder stops at the image's end)
    assert post_raw(small_buffer, image + bytes(SMALL_BODY_BYTES - len(image))).status_code == 200


def post_raw(server: ServiceProcess, body: bytes) -> httpx.Response:
    return httpx.post(
        server.url + "/detect", content=body, headers={"content-type": "image/jpeg"}, timeout=10
    )


def test_trailers_are_bounded_as_the_head_is(server: ServiceProcess) -> None:
    """uvicorn adds trailer fields to the request's headers without limit (a flood of them grew the worker
    by 400 MB): past MAX_HEADER_BYTES they are refused 431, at once; a few are discarded and the upload
    served."""
    head = (
        b"POST /detect HTTP/1.1\r\nhost: x\r\ncontent-type: image/jpeg\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    image = jpeg(160, 120)
    body = f"{len(image):x}\r\n".encode() + image + b"\r\n0\r\n"
    with connect(server) as sock:
        sock.sendall(head + body + b"x-trailer: 1\r\n\r\n")
        answer = read_answer(sock, ANSWER_WITHIN_S)
    assert status_of(answer) == 200, answer[:300]
    with connect(server) as sock:
        sock.sendall(head + body)
        line, sent = b"x-trailer: " + b"a" * 1000 + b"\r\n", 0
        try:
            while sent < HOSTILE_BYTES:  # the trailers never end: only a bound answers
                sock.sendall(line * 64)
                sent += len(line) * 64
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock, ANSWER_WITHIN_S)
    assert status_of(answer) == 431, answer[:300]
    assert "trailer" in str(problem_of(answer)["detail"])


def test_a_head_that_does_not_arrive_in_time_is_answered_408(server: ServiceProcess) -> None:
    """A connection that sends nothing, or trickles its head, would otherwise hold its place under
    MAX_CONNECTIONS for good (uvicorn times out only idle keep-alive connections)."""
    served = b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
    # A head trickled from the start, or after a request (a lone CRLF too: httptools skips it, unseen
    # by uvicorn, whose keep-alive timer it stops).
    for before, trickle in ((b"", b"GET /healthz HTTP/1.1\r\nhost: x\r\n"), (served, b"\r\n")):
        with connect(server) as sock:
            if before:
                sock.sendall(before)
                assert status_of(read_answer(sock, 1.0)) == 200  # kept alive: read until the time is up
            started, answer = time.monotonic(), b""
            for byte in trickle:
                sock.sendall(bytes([byte]))
                if answer := read_answer(sock, 0.1):
                    break
            answer += read_answer(sock, HEAD_TIMEOUT_S + ANSWER_WITHIN_S)
            waited = time.monotonic() - started
        assert status_of(answer) == 408, answer[:300]
        assert problem_of(answer)["title"] == "Request header timeout"
        assert waited >= HEAD_TIMEOUT_S - 0.1  # not before its time: a slow but honest client is served
    # A new connection that sends nothing is closed then, without an answer: a client sending its first
    # request just as it is timed out would take a 408 for it.
    with connect(server) as sock:
        started = time.monotonic()
        assert read_answer(sock, HEAD_TIMEOUT_S + ANSWER_WITHIN_S) == b""
        assert HEAD_TIMEOUT_S - 0.1 <= time.monotonic() - started < HEAD_TIMEOUT_S + ANSWER_WITHIN_S - 0.5
    # An idle keep-alive connection is not timed by it (uvicorn's own 5 s is): a head sent at once is
    # served however late in the connection it comes.
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(served)
            assert status_of(read_answer(sock, 1.0)) == 200
            time.sleep(HEAD_TIMEOUT_S)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"HELLO\r\n\r\n", 400),
        (b"POST /detect HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n", 400),
        (b"POST /detect HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /detect HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 6\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\nhost: x\r\n\r\n", 505),
    ],
    ids=["not-http", "length-and-chunked", "bad-chunk-size", "two-lengths", "http-2.0"],
)
def test_a_request_that_is_not_http_1_1_is_answered_as_problem_json(
    server: ServiceProcess, request_bytes: bytes, status: int
) -> None:
    with connect(server) as sock:
        sock.sendall(request_bytes)
        answer = read_answer(sock, ANSWER_WITHIN_S)
    assert status_of(answer) == status, answer[:300]
    assert problem_of(answer)["status"] == status
    assert b"connection: close" in answer.lower()


@pytest.fixture
def stopped_by_the_test(tmp_path: Path, built_models: None) -> Iterator[ServiceProcess]:
    with service_process(tmp_path, WORKERS="1") as process:
        yield process


WS_UPGRADE = (
    b"GET /stream HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
    b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


def ws_handshake(
    server: ServiceProcess, query: str = "", headers: bytes = b""
) -> tuple[socket.socket, bytes]:
    """A raw WebSocket on /stream, past its handshake, and the head of the server's 101."""
    sock = connect(server)
    sock.sendall(WS_UPGRADE.replace(b"/stream", f"/stream{query}".encode())[:-2] + headers + b"\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: what follows the head is the stream's
        assert chunk, head
        head += chunk
    assert status_of(head) == 101, head
    return sock, head


def ws_open(server: ServiceProcess, query: str = "") -> socket.socket:
    return ws_handshake(server, query)[0]


def ws_frame_head(opcode: int, length: int, final: bool = True) -> bytes:
    """A client frame's head (masked with zeros, so the payload goes as it is)."""
    size = bytes([0x80 | length]) if length < 126 else bytes([0x80 | 127]) + struct.pack("!Q", length)
    return bytes([0x80 * final | opcode]) + size + bytes(4)


def flood_pings_unread(sock: socket.socket) -> None:
    """Pings, and the pongs left unread in a small receive buffer, until the server stops reading (its
    write buffer full) or closes."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(1.0)
    with contextlib.suppress(TimeoutError, ConnectionError):
        for _ in range(40):
            sock.sendall((ws_frame_head(0x9, 125) + b"p" * 125) * 1000)


def close_code(answer: bytes) -> int | None:
    """The code of the close frame the server sent (a server frame is not masked), if it did."""
    if answer[:1] != b"\x88" or len(answer) < 4:
        return None
    return int(struct.unpack("!H", answer[2:4])[0])


def test_websocket_handshakes_refused_below_the_app_are_answered_and_closed(
    stopped_by_the_test: ServiceProcess,
) -> None:
    """The WebSocket library's own handshake refusals were plain text, or never written (the connection
    hung until the client gave up, and a SIGTERM meanwhile killed the worker before its shutdown)."""
    server = stopped_by_the_test
    upgrade, key = WS_UPGRADE.split(b"sec-websocket-key")
    key = b"sec-websocket-key" + key[:-2]  # its line, without the head's end
    for request, status, detail in (
        (upgrade + key + b"x-filler: " + b"a" * 10_000 + b"\r\n\r\n", 431, "at most 128 header lines"),
        (upgrade + b"\r\n", 400, "missing Sec-WebSocket-Key header"),
        (upgrade.replace(b"/stream", b"/detect") + key + b"\r\n", 404, "the WebSocket endpoint is /stream"),
        (upgrade + key + b"content-length: 3\r\n\r\nabc", 400, "did not receive a valid HTTP request"),
    ):
        with connect(server) as sock:
            sock.sendall(request)
            answer = read_answer(sock, ANSWER_WITHIN_S)
        assert status_of(answer) == status, answer[:300]
        assert detail in str(problem_of(answer)["detail"])
        assert b"connection: close" in answer.lower()
    # permessage-deflate is not negotiated: frames are images, and inflating them is memory uncounted.
    offer = b"sec-websocket-extensions: permessage-deflate; client_max_window_bits\r\n"
    sock, head = ws_handshake(server, headers=offer)
    assert b"sec-websocket-extensions" not in head.lower(), head
    sock.close()
    # A client that floods pings and reads none of the pongs fills the write buffer, which the close
    # frame of the shutdown then waits behind: it must not hold the exit to SHUTDOWN_GRACE_S.
    flooder = ws_open(server)
    flood_pings_unread(flooder)
    with flooder, connect(server) as refused:
        refused.sendall(upgrade + b"\r\n")
        assert status_of(read_answer(refused, ANSWER_WITHIN_S)) == 400
        assert server.stop() == 0  # with the refused connection still open on the client's side
    log = server.log()
    assert "Application shutdown complete" in log
    assert "graceful shutdown exceeded" not in log and "ERROR" not in log, log[-2000:]


def test_a_websocket_text_message_that_is_not_utf8_closes_it_as_the_clients_fault(
    server: ServiceProcess,
) -> None:
    log_before = len(server.log())
    with ws_open(server) as sock:
        sock.sendall(ws_frame_head(0x1, 2) + b"\xff\xfe")  # a text frame
        answer = read_answer(sock, ANSWER_WITHIN_S)
    assert close_code(answer) == 1007, answer
    with ws_open(server) as sock:  # and with the client's own close in the same read: no answer is due
        sock.sendall(ws_frame_head(0x1, 2) + b"\xff\xfe" + ws_frame_head(0x8, 2) + struct.pack("!H", 1000))
        read_answer(sock, ANSWER_WITHIN_S)
    time.sleep(0.2)
    log = server.log()[log_before:]
    assert "Traceback" not in log and "ERROR" not in log, log


def test_a_websocket_message_must_arrive_within_the_upload_timeout(server: ServiceProcess) -> None:
    """As an HTTP body must: a message begun and never finished held its bytes for good."""
    with ws_open(server) as sock:
        sock.sendall(ws_frame_head(0x2, 100_000) + b"\xff" * 50_000)
        started = time.monotonic()
        answer = read_answer(sock, UPLOAD_TIMEOUT_S + ANSWER_WITHIN_S)
    assert close_code(answer) == 1008, answer[:100]
    assert b"did not arrive within" in answer
    assert time.monotonic() - started >= UPLOAD_TIMEOUT_S - 0.1


def test_a_websocket_message_is_timed_while_its_client_reads_nothing(server: ServiceProcess) -> None:
    """Reading pauses while the client leaves the server's replies unread (here pongs to a ping flood);
    the message's clock must not: stopping it there let a client hold a message indefinitely."""
    log_before = len(server.log())
    with ws_open(server) as sock:
        # The first frame of a message, whole: pings may come between it and the rest.
        sock.sendall(ws_frame_head(0x2, 50_000, final=False) + b"\xff" * 50_000)
        flood_pings_unread(sock)
        deadline = time.monotonic() + UPLOAD_TIMEOUT_S + ANSWER_WITHIN_S
        while "closed a WebSocket with 1008" not in server.log()[log_before:]:  # the client reads nothing
            assert time.monotonic() < deadline, server.log()[log_before:][-2000:]
            time.sleep(0.1)


def test_websocket_messages_share_the_upload_buffer(small_buffer: ServiceProcess) -> None:
    """Messages arriving, or waiting for the app, are held to UPLOAD_BUFFER_BYTES with the HTTP bodies:
    past it a socket is closed 1013 (try again later) and an upload refused 429. 16 sockets each holding
    most of a 20 MB message grew a worker by 300 MB, with no bound short of MAX_CONNECTIONS of them."""
    holders = [ws_open(small_buffer) for _ in range(2)]
    try:
        for sock in holders:  # each holds a payload one byte short of MAX_BODY_BYTES
            sock.sendall(ws_frame_head(0x2, SMALL_BODY_BYTES) + b"\xff" * (SMALL_BODY_BYTES - 1))
        deadline = time.monotonic() + ANSWER_WITHIN_S
        while (tiny := post_raw(small_buffer, b"abc")).status_code != 429:
            assert tiny.status_code == 400 and time.monotonic() < deadline, tiny.text[:200]
            time.sleep(0.05)
        with ws_open(small_buffer) as third:
            third.sendall(ws_frame_head(0x2, 4000) + b"\xff" * 3000)
            answer = read_answer(third, ANSWER_WITHIN_S)
        assert close_code(answer) == 1013, answer[:100]
    finally:
        for sock in holders:
            sock.close()
    # Released as each message is done: frames of most of MAX_BODY_BYTES, one after another, go through
    # a buffer that holds two of them.
    image = jpeg(160, 120)
    frame = image + bytes(SMALL_BODY_BYTES - 1000 - len(image))
    deadline = time.monotonic() + ANSWER_WITHIN_S
    while post_raw(small_buffer, frame).status_code != 200:  # the closed sockets' bytes are given back
        assert time.monotonic() < deadline, "the upload buffer is still held"
        time.sleep(0.05)
    with ws_open(small_buffer) as sock:
        for i in range(6):
            sock.sendall(ws_frame_head(0x2, len(frame)) + frame)
            reply = read_ws_text(sock, i)
            assert orjson.loads(reply)["image"] == {"width": 160, "height": 120}, reply[:300]


def test_a_websocket_closed_while_the_app_handles_a_message_drops_the_reply(
    small_buffer: ServiceProcess,
) -> None:
    """uvicorn refuses a reply sent after the protocol closed the socket with an ERROR; it is dropped."""
    log_before = len(small_buffer.log())
    with ws_open(small_buffer) as holder, ws_open(small_buffer, "?preprocess=exact") as busy:
        holder.sendall(ws_frame_head(0x2, SMALL_BODY_BYTES) + b"\xff" * (SMALL_BODY_BYTES - 1))
        time.sleep(0.5)  # read by then (no answer tells: what is left, 1 byte over half, fits any upload)
        slow = scan_bomb(99)  # 100 scans of 36 MP: about a second to decode
        busy.sendall(ws_frame_head(0x2, len(slow)) + slow)
        time.sleep(0.2)
        busy.sendall(ws_frame_head(0x2, SMALL_BODY_BYTES) + b"\xff" * (SMALL_BODY_BYTES - 1000))
        answer = read_answer(busy, ANSWER_WITHIN_S)
        assert close_code(answer) == 1013, answer[:100]  # the first frame: the app was still decoding
        time.sleep(2.0)  # for the app to finish and reply
    log = small_buffer.log()[log_before:]
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]


def read_ws_text(sock: socket.socket, index: int) -> bytes:
    """One unfragmented text message from the server."""
    sock.settimeout(ANSWER_WITHIN_S)

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, data
            data += chunk
        return data

    first, length = exactly(2)
    assert first == 0x81, (index, first, exactly(length & 0x7F))
    length &= 0x7F
    if length == 126:
        length = struct.unpack("!H", exactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", exactly(8))[0]
    return exactly(length)
