"""uvicorn's httptools protocol with bounds on what a connection costs before the app sees a request.

uvicorn reads the request line and headers without any size limit, and they are accumulated by
concatenation as they arrive (a header value inside httptools, the URL in uvicorn): a 64 MB header sent
in 4 KB pieces held the event loop for seconds (quadratic copying) and its size in memory, all before
any of our code ran. Here, per connection:

- the head (request line and headers, bytes as received) is fed to the parser only up to
  `MAX_HEADER_BYTES`; a head still incomplete by then is answered 431; so are trailers (the header
  lines after a chunked body, which uvicorn would add to the request's headers, one by one and without
  limit) past `MAX_HEADER_BYTES`; those within it are discarded, as RFC 9110 §6.5.1 lets a recipient;
- the head must be complete `HEAD_TIMEOUT_S` after the connection opened or the request's first byte
  came, else 408 (a new connection that sent nothing is closed without one): uvicorn times out only
  idle keep-alive connections, and its timer stops at any byte, even the CRLF httptools skips before a
  head, so a connection that never sends, or trickles its head, would hold its place under
  `MAX_CONNECTIONS` for good;
- the request target is counted as the parser hands it over; past `MAX_URL_BYTES`, 414;
- past `MAX_CONNECTIONS` open connections in this worker (HTTP, idle keep-alive and WebSocket alike),
  a new connection is answered 503 at once, before anything is read from it;
- a connection whose answer came before its request body had all arrived (the app's refusals and
  limits, sent with `Connection: close`) is not reset but closed with a linger, here at the transport:
  see `_linger`.

- a request the parser cannot read (bad framing, conflicting lengths, bad chunk sizes, not HTTP/1.x) is
  answered 400 (505 for another HTTP version) as problem+json, where uvicorn sends plain text.

These answers are written here, below the ASGI app: problem+json with `Connection: close`, not counted
in `blazeface_requests_total` (no request reached the app), one log line each. Passed to uvicorn as
`http=` (`service/__main__.py`).

uvicorn's own `limit_concurrency` is not used: it counts the same connections (plus running tasks) but
checks only when a head is complete, so connections trickling their heads are never refused, and its 503
is plain text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS

from service.api.problems import PROBLEM_MEDIA_TYPE, problem_body
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


# What a lingering close (`BoundedHttpToolsProtocol._linger`) reads and discards at most, in time and bytes.
LINGER_S = 1.0
LINGER_MAX_BYTES = 64 * 1024 * 1024


class _UrlTooLong(Exception):
    """Raised in the parser's URL callback: the only way to stop httptools mid-buffer."""


class _TrailersTooLarge(Exception):
    """Raised in the parser's header callback, as `_UrlTooLong`."""


class _UnsupportedVersion(Exception):
    """Raised in the parser's headers-complete callback, as `_UrlTooLong`."""


class _LingeringTransport:
    """The transport as one request's cycle sees it. uvicorn closes the connection as soon as an answer
    with `Connection: close` is sent; if the request body is still arriving, that close would reset the
    connection (unread data → RST) and a client still sending could lose the answer. Such a close
    lingers instead (`BoundedHttpToolsProtocol._linger`); every other call goes to the transport."""

    def __init__(self, protocol: BoundedHttpToolsProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        self._cycle = cycle
        self._transport = protocol.transport

    def close(self) -> None:
        if self._cycle.response_complete and self._cycle.more_body and not self._cycle.disconnected:
            self._protocol._linger()
        else:
            self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        settings: Settings | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = settings or get_settings()
        self.max_header_bytes = settings.max_header_bytes
        self.max_url_bytes = settings.max_url_bytes
        self.max_connections = settings.max_connections
        self.head_timeout_s = settings.head_timeout_s
        # Bytes the current head may still use; None while a body is being read (it has its own limit).
        self._head_left: int | None = self.max_header_bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_begun = False  # a byte of the current head has arrived
        self._url_bytes = 0
        self._trailer_bytes = 0
        self._unsupported_version = False
        self._refused = False  # answered here: what the client still sends is discarded, unparsed
        self._discarded = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(
                503,
                "Too many connections",
                f"this worker has {self.max_connections} connections open; retry shortly",
                "too-many-connections",
                retry_after=True,
            )
        else:
            self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes | memoryview) -> None:
        if self._refused:
            self._discarded += len(data)
            if self._discarded > LINGER_MAX_BYTES:
                self.transport.close()
            return
        left = self._head_left
        if left is not None and data:  # a head's bytes (httptools skips CRLFs before one, unannounced)
            self._head_begun = True
            self._start_head_timer()
        if left is None or len(data) <= left:
            if left is not None:
                self._head_left = left - len(data)
            super().data_received(data)
            return
        # Feed only what the head may still use: if it is not complete by then, it is too large.
        view = memoryview(data)
        self._head_left = 0
        super().data_received(view[:left])
        if self._refused or self.transport.is_closing() or self.transport.get_protocol() is not self:
            return  # answered (414, 400) or upgraded to a WebSocket: uvicorn drops the rest of that read too
        if self._head_left == 0:  # the same head, budget spent (a completed head resets it)
            self._refuse(
                431,
                "Request header fields too large",
                f"the request line and headers exceed {self.max_header_bytes} bytes",
                "header-too-large",
            )
        else:
            self.data_received(view[left:])  # a body, or the next pipelined head

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0
        self._trailer_bytes = 0
        # A request pipelined in the read that ended the one before: its head is timed from here.
        self._head_begun = True
        self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.max_url_bytes:
            raise _UrlTooLong  # uvicorn turns it into send_400_response, answered 414 below
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_left is not None:
            super().on_header(name, value)
            return
        self._trailer_bytes += len(name) + len(value) + len(": \r\n")  # the line, as for the head
        if self._trailer_bytes > self.max_header_bytes:
            raise _TrailersTooLarge

    def send_400_response(self, msg: str) -> None:
        """What uvicorn calls when the parser stops (our callbacks' exceptions included)."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # Mid-request (a malformed body, or trailers too long): our answer replaces the app's, which
            # is cut off from the connection; if it has begun, there is no answer to give.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:
                self.transport.close()
                return
        if self._url_bytes > self.max_url_bytes:
            detail = f"the request target exceeds {self.max_url_bytes} bytes"
            self._refuse(414, "URI too long", detail, "uri-too-long", logged=True)
        elif self._trailer_bytes > self.max_header_bytes:
            detail = f"the trailer fields exceed {self.max_header_bytes} bytes"
            self._refuse(431, "Request header fields too large", detail, "header-too-large", logged=True)
        elif self._unsupported_version:
            detail = "this server speaks HTTP/1.0 and HTTP/1.1"
            self._refuse(505, "HTTP version not supported", detail, "http-version-not-supported", logged=True)
        else:
            detail = "the request is not valid HTTP/1.1 (RFC 9112)"
            self._refuse(400, "Bad request", detail, "bad-request", logged=True)

    def on_headers_complete(self) -> None:
        self._head_left = None
        self._stop_head_timer()
        if self.parser.get_http_version() not in ("1.0", "1.1"):
            self._unsupported_version = True
            raise _UnsupportedVersion
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:  # a request (not a WebSocket upgrade)
            self.cycle.transport = _LingeringTransport(self, self.cycle)  # type: ignore[assignment]

    def handle_websocket_upgrade(self) -> None:
        # uvicorn hands the head on to the WebSocket library, whose limits on it are lower than ours
        # (a line, the header count) and whose refusal uvicorn never writes out: refuse it here instead.
        request_line = len(self.scope["method"]) + len(self.url) + len(" HTTP/1.1\r\n") + 1
        header_lines = [len(name) + len(value) + len(": \r\n") for name, value in self.scope["headers"]]
        if request_line > MAX_LINE_LENGTH:
            detail = f"a WebSocket request line is at most {MAX_LINE_LENGTH} bytes"
            self._refuse(414, "URI too long", detail, "uri-too-long")
        elif len(header_lines) > MAX_NUM_HEADERS or max(header_lines, default=0) > MAX_LINE_LENGTH:
            detail = (
                f"a WebSocket request has at most {MAX_NUM_HEADERS} header lines of {MAX_LINE_LENGTH} bytes"
            )
            self._refuse(431, "Request header fields too large", detail, "header-too-large")
        else:
            super().handle_websocket_upgrade()

    def on_message_complete(self) -> None:
        # The next request on this connection (what of it this read already holds goes uncounted).
        self._head_left = self.max_header_bytes
        self._head_begun = False
        super().on_message_complete()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # a pipelined head behind a request in progress: close after it
            return
        if not self._head_begun:
            # Nothing sent: closed without an answer, as an idle keep-alive connection is; a client
            # (a pool, a browser's preconnect) that sends a request just then would take a 408 for it.
            self.transport.close()
            return
        detail = f"the request line and headers did not arrive within {self.head_timeout_s:g} s"
        self._refuse(408, "Request header timeout", detail, "header-timeout")

    def _start_head_timer(self) -> None:
        if self._head_timer is None:  # else the head already being timed keeps its start
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(
        self, status: int, title: str, detail: str, slug: str, retry_after: bool = False, logged: bool = False
    ) -> None:
        """Answer and close, with a linger; `logged`: uvicorn has ("Invalid HTTP request received.")."""
        self._stop_head_timer()
        if not logged:
            log.warning("refused a connection with %d: %s", status, detail)
        body = orjson.dumps(problem_body(status, title, detail, slug))
        head = [STATUS_LINE[status]]
        for name, value in [
            *self.server_state.default_headers,
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *([(b"retry-after", b"1")] if retry_after else []),
        ]:
            head += [name, b": ", value, b"\r\n"]
        self.transport.write(b"".join([*head, b"\r\n", body]))
        self._linger()

    def _linger(self) -> None:
        """Close after an answer sent while the client may still be sending: closing with unread input
        would reset the connection, and a client still sending could lose the answer. So the connection
        half-closes (the client reads the answer and end of stream) and discards what still arrives,
        unparsed and outside the app, until the client closes too, LINGER_MAX_BYTES have come, or
        LINGER_S passes: an "HTTP lingering close", as nginx does."""
        if self._refused:
            return
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
