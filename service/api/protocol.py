"""uvicorn's httptools protocol with bounds on what a connection costs before the app sees a request.

uvicorn reads the request line and headers without any size limit, and they are accumulated by
concatenation as they arrive (a header value inside httptools, the URL in uvicorn): a 64 MB header sent
in 4 KB pieces held the event loop for seconds (quadratic copying) and its size in memory, all before
any of our code ran. Here, per connection:

- the head (request line and headers, bytes as received) is fed to the parser only up to
  `MAX_HEADER_BYTES`; a head still incomplete by then is answered 431;
- the request target is counted as the parser hands it over; past `MAX_URL_BYTES`, 414;
- past `MAX_CONNECTIONS` open connections in this worker (HTTP, idle keep-alive and WebSocket alike),
  a new connection is answered 503 at once, before anything is read from it;
- a connection whose answer came before its request body had all arrived (the app's refusals and
  limits, sent with `Connection: close`) is not reset but closed with a linger, here at the transport:
  see `_linger`.

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

from service.api.problems import PROBLEM_MEDIA_TYPE, problem_body
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


# What a lingering close (`BoundedHttpToolsProtocol._linger`) reads and discards at most, in time and bytes.
LINGER_S = 1.0
LINGER_MAX_BYTES = 64 * 1024 * 1024


class _UrlTooLong(Exception):
    """Raised in the parser's URL callback: the only way to stop httptools mid-buffer."""


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
        # Bytes the current head may still use; None while a body is being read (it has its own limit).
        self._head_left: int | None = self.max_header_bytes
        self._url_bytes = 0
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

    def data_received(self, data: bytes | memoryview) -> None:
        if self._refused:
            self._discarded += len(data)
            if self._discarded > LINGER_MAX_BYTES:
                self.transport.close()
            return
        left = self._head_left
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

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > self.max_url_bytes:
            raise _UrlTooLong  # uvicorn turns it into send_400_response, answered 414 below
        super().on_url(url)

    def send_400_response(self, msg: str) -> None:
        if self._url_bytes > self.max_url_bytes:
            self._refuse(
                414, "URI too long", f"the request target exceeds {self.max_url_bytes} bytes", "uri-too-long"
            )
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._head_left = None
        previous = self.cycle
        super().on_headers_complete()
        if self.cycle is not None and self.cycle is not previous:  # a request (not a WebSocket upgrade)
            self.cycle.transport = _LingeringTransport(self, self.cycle)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        # The next request on this connection (what of it this read already holds goes uncounted).
        self._head_left = self.max_header_bytes
        super().on_message_complete()

    def _refuse(self, status: int, title: str, detail: str, slug: str, retry_after: bool = False) -> None:
        """Answer and close, with a linger."""
        if status != 414:  # uvicorn has logged that one ("Invalid HTTP request received.")
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
