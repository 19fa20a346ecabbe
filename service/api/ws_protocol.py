"""uvicorn's default WebSocket protocol (websockets-sansio) with the peer's reads bounded by our writes.

uvicorn 0.54 answers every ping with a pong written straight to the transport; its `pause_writing` only
holds back the application's own sends. A client that sends pings and never reads the pongs therefore
grows the server's write buffer without limit (measured: ~25 MB/s per socket). Here, while the transport
is over its high-water mark, the protocol stops reading from the peer: no pings are parsed, so no pongs
are queued, and TCP pushes the back-pressure onto the client. The buffer stays within the high-water mark
plus one read. A peer that never reads again also never answers the server's keepalive ping, so uvicorn's
keepalive timeout (`ws_ping_interval` + `ws_ping_timeout`, 20 + 20 s) fails the connection; it is aborted
then, since a close frame that cannot be flushed would keep it open for good.

If the WebSocket library refuses the handshake request itself (`service/api/protocol.py` refuses what
it knows of first), its answer is problem+json here, where the library writes plain text. When it
refuses while parsing the request, it queues that answer, which uvicorn never writes; it is written
here, and the connection closed. uvicorn would otherwise leave it open until the client gives up, and at
shutdown fail an assertion (a second answer) that kills the worker before its lifespan ends.

A text message that is not UTF-8 closes the connection with 1007, as uvicorn does, but logged as the
client's fault in one line, where uvicorn logs an ERROR with a traceback.

Also fixes a spurious "ASGI callable returned without completing handshake." ERROR after every denial
response (our 401/403/422 on the handshake): uvicorn forgets to mark the handshake complete once the
denial is sent (open uvicorn PR #3138 makes the same change).
"""

from __future__ import annotations

import email.utils
import http
import logging
from typing import TYPE_CHECKING, Any

import orjson
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.http11 import Response

from service.api.problems import PROBLEM_MEDIA_TYPE, problem_body

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveEvent, ASGISendEvent

log = logging.getLogger(__name__)
_LIBRARY_PREFIX = "Failed to open a WebSocket connection: "  # how the library's refusals begin


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """Passed to uvicorn as `ws=` (`service/__main__.py`)."""

    write_paused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.reject = self._reject  # type: ignore[method-assign]

    @staticmethod
    def _reject(status: http.HTTPStatus | int, text: str) -> Response:
        """The library's refusal of a handshake, as problem+json (it adds its own headers after)."""
        status = http.HTTPStatus(status)
        detail = text.removeprefix(_LIBRARY_PREFIX).strip().rstrip(".")
        body = orjson.dumps(problem_body(status.value, status.phrase, detail, "websocket-handshake"))
        headers = Headers(
            [
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Connection", "close"),
                ("Content-Length", str(len(body))),
                ("Content-Type", PROBLEM_MEDIA_TYPE),
            ]
        )
        return Response(status.value, status.phrase, headers, body)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        self.write_paused = False
        if not self.read_paused:  # uvicorn's own pause: a message waits for the application
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated and not self.close_sent:
            self.handshake_complete = self.close_sent = True
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                self.frames = []
                log.info("closed a WebSocket with 1007: a text message that is not UTF-8")
                self.conn.send_close(1007, "text messages must be UTF-8")
                self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    async def receive(self) -> ASGIReceiveEvent:
        message = await super().receive()
        # uvicorn resumes reading once the application has taken every message; a full write buffer
        # must keep it stopped (no await between the two calls, so nothing is read in between).
        if self.write_paused:
            self.transport.pause_reading()
        return message

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        if self.transport.get_write_buffer_size():
            self.transport.abort()
