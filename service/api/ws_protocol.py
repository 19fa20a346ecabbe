"""uvicorn's default WebSocket protocol (websockets-sansio) with the peer's reads bounded by our writes.

uvicorn 0.54 answers every ping with a pong written straight to the transport; its `pause_writing` only
holds back the application's own sends. A client that sends pings and never reads the pongs therefore
grows the server's write buffer without limit (measured: ~25 MB/s per socket). Here, while the transport
is over its high-water mark, the protocol stops reading from the peer: no pings are parsed, so no pongs
are queued, and TCP pushes the back-pressure onto the client. The buffer stays within the high-water mark
plus one read. A peer that never reads again also never answers the server's keepalive ping, so uvicorn's
keepalive timeout (`ws_ping_interval` + `ws_ping_timeout`, 20 + 20 s) fails the connection; it is aborted
then, since a close frame that cannot be flushed would keep it open for good.

A message is held to the worker's upload buffer (`UPLOAD_BUFFER_BYTES`, shared with HTTP bodies) from
its first byte until the app has handled it, and must arrive within `UPLOAD_TIMEOUT_S`: the library
buffers a frame whole before uvicorn hands it on, so without these a socket that sends most of a
message and stops holds up to `MAX_BODY_BYTES` for good (see `_account`).

If the WebSocket library refuses the handshake request itself (`service/api/protocol.py` refuses what
it knows of first), its answer is problem+json here, where the library writes plain text. When it
refuses while parsing the request, it queues that answer, which uvicorn never writes; it is written
here, and the connection closed. uvicorn would otherwise leave it open until the client gives up, and at
shutdown fail an assertion (a second answer) that kills the worker before its lifespan ends.

A socket closed here (1013, 1008, 1007) while the app handles a message drops the app's reply, which
uvicorn would refuse with an ERROR. At shutdown a socket whose client reads nothing is aborted after
`LINGER_S`, as its close frame cannot be flushed either: it held the worker's exit to the grace period.

A text message that is not UTF-8 closes the connection with 1007, as uvicorn does, but logged as the
client's fault in one line, where uvicorn logs an ERROR with a traceback.

Also fixes a spurious "ASGI callable returned without completing handshake." ERROR after every denial
response (our 401/403/422 on the handshake): uvicorn forgets to mark the handshake complete once the
denial is sent (open uvicorn PR #3138 makes the same change).
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import http
import logging
from typing import TYPE_CHECKING, Any

import orjson
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.datastructures import Headers
from websockets.frames import Frame
from websockets.http11 import Response

from service.api.limits import UPLOAD_BUFFER_STATE, UploadBuffer
from service.api.problems import PROBLEM_MEDIA_TYPE, problem_body
from service.api.protocol import LINGER_S
from service.settings import get_settings

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveEvent, ASGISendEvent

log = logging.getLogger(__name__)
_LIBRARY_PREFIX = "Failed to open a WebSocket connection: "  # how the library's refusals begin
# What a frame costs beyond its payload while a message is assembled: a bytes object and its list slot
# (a message sent as one-byte fragments would otherwise hold several times what is counted).
_FRAME_OVERHEAD = 64
_TRY_AGAIN_LATER = 1013
_POLICY_VIOLATION = 1008
_INVALID_DATA = 1007


class BoundedWebSocketProtocol(WebSocketsSansIOProtocol):
    """Passed to uvicorn as `ws=` (`service/__main__.py`)."""

    write_paused = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.reject = self._reject  # type: ignore[method-assign]
        # Filled by the app's lifespan before any connection is accepted; None under another app.
        self.upload_buffer: UploadBuffer | None = self.app_state.get(UPLOAD_BUFFER_STATE)
        self.upload_timeout_s = get_settings().upload_timeout_s
        self._held = 0  # bytes this connection holds in the upload buffer
        self._frame_bytes = 0  # the frames of the message being assembled, with their overhead
        self._delivered: collections.deque[int] = collections.deque()  # messages queued for the app
        self._taken = 0  # the message the app took last: done when it asks for the next
        self._message_timer: asyncio.TimerHandle | None = None

    @staticmethod
    def _reject(status: http.HTTPStatus | int, text: str) -> Response:
        """The library's refusal of a handshake, as problem+json (it adds its own headers after)."""
        status = http.HTTPStatus(status)
        # uvicorn rejects with no text where an app closes the socket before accepting it.
        detail = text.removeprefix(_LIBRARY_PREFIX).strip().rstrip(".") or "the handshake was refused"
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
        self._account()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.handshake_exc is not None and not self.handshake_initiated and not self.close_sent:
            self.handshake_complete = self.close_sent = True
            # A request it cannot read at all (one with a body, say) it answers with nothing.
            answer = (
                b"".join(self.conn.data_to_send())
                or self._reject(400, str(self.conn.handshake_exc)).serialize()
            )
            self.transport.write(answer)
            self.transport.close()
        self._account()

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()
        super().connection_lost(exc)

    def handle_text(self, event: Frame) -> None:
        self._frame_bytes = len(event.data) + _FRAME_OVERHEAD
        super().handle_text(event)

    def handle_bytes(self, event: Frame) -> None:
        self._frame_bytes = len(event.data) + _FRAME_OVERHEAD
        super().handle_bytes(event)

    def handle_cont(self, event: Frame) -> None:
        self._frame_bytes += len(event.data) + _FRAME_OVERHEAD
        super().handle_cont(event)

    def _account(self) -> None:
        """Hold this connection's messages to the upload buffer, as `limits.BodyLimitMiddleware` holds
        HTTP bodies: the message arriving (bytes the library has not parsed yet, and the frames parsed
        so far) and the messages queued for, or being handled by, the app. Past the buffer, the
        connection fails with 1013 (try again later). A message must also arrive within
        UPLOAD_TIMEOUT_S of its first byte (not counting while reading waits for the app), else 1008."""
        if self.upload_buffer is None or self.close_sent or self.disconnected:  # given back already
            return
        arriving = len(self.conn.reader.buffer) + self._frame_bytes
        held = arriving + sum(self._delivered) + self._taken
        if not self.upload_buffer.fits(held - self._held):
            self._fail(_TRY_AGAIN_LATER, "the upload buffer is full; retry later")
            return
        self.upload_buffer.held += held - self._held
        self._held = held
        # Paused for the app, the message is not timed; paused for a client that does not read, it is.
        if not arriving or self.read_paused:
            self._stop_message_timer()
        elif self._message_timer is None:
            self._message_timer = self.loop.call_later(self.upload_timeout_s, self._message_timed_out)

    def _message_timed_out(self) -> None:
        self._message_timer = None
        self._fail(_POLICY_VIOLATION, f"a message did not arrive within {self.upload_timeout_s:g} s")

    def _stop_message_timer(self) -> None:
        if self._message_timer is not None:
            self._message_timer.cancel()
            self._message_timer = None

    def _fail(self, code: int, reason: str, level: int = logging.WARNING) -> None:
        """Close with `code` and end the stream, discarding what the client still sends (the library
        stops parsing, so nothing more is held, and reading resumes if it was paused), and drop the
        connection after a linger: time for the client to read the close frame, if it reads at all."""
        log.log(level, "closed a WebSocket with %d: %s", code, reason)
        self.conn.fail(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.close_sent = True
        self.frames = []
        while not self.queue.empty():  # messages the app has not taken are not handled
            self.queue.get_nowait()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._release()
        self.loop.call_later(LINGER_S, self.transport.abort)

    def _release(self) -> None:
        self._stop_message_timer()
        if self.upload_buffer is not None:
            self.upload_buffer.held -= self._held
        self._held = self._frame_bytes = self._taken = 0
        self._delivered.clear()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                # Failed as the other closes here are: the client's close may have come in the same read.
                self._fail(_INVALID_DATA, "text messages must be UTF-8", logging.INFO)
                return
        if not self.close_sent:  # else uvicorn discards it
            self._delivered.append(self._frame_bytes)
        self._frame_bytes = 0
        self._stop_message_timer()  # the next message, if begun, is timed from here (`_account`)
        super().send_receive_event_to_app()

    async def receive(self) -> ASGIReceiveEvent:
        self._taken = 0  # the app is done with the message it took last
        message = await super().receive()
        if message["type"] == "websocket.receive" and self._delivered:
            self._taken = self._delivered.popleft()
        # uvicorn resumes reading once the application has taken every message; a full write buffer
        # must keep it stopped (no await between the two calls, so nothing is read in between).
        if self.write_paused:
            self.transport.pause_reading()
        self._account()
        return message

    async def send(self, message: ASGISendEvent) -> None:
        if self.close_sent and self.handshake_complete and self.initial_response is None:
            # Closed here, below the app (`_fail`, a text message not UTF-8), while the app was handling
            # a message: its reply has nowhere to go. uvicorn would raise RuntimeError, an ERROR logged.
            if message["type"] == "websocket.send":
                raise ClientDisconnected
            if message["type"] == "websocket.close":
                return
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True

    def shutdown(self) -> None:
        super().shutdown()
        # Its close frame waits behind whatever the client has not read; one that reads nothing (a ping
        # flood that fills the buffer with pongs) would hold the worker's shutdown to its grace period.
        self.loop.call_later(LINGER_S, self.transport.abort)

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        if self.transport.get_write_buffer_size():
            self.transport.abort()
