"""Upload size, time and memory limits enforced while the body streams in, before anything buffers it all."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import error_response
from service.errors import Overloaded, PayloadTooLarge, UploadTimeout

# The key under which the app's lifespan state carries its `UploadBuffer` to the WebSocket protocol.
UPLOAD_BUFFER_STATE = "upload_buffer"


@dataclass
class UploadBuffer:
    """`UPLOAD_BUFFER_BYTES`: the bytes a worker's uploads in progress hold, HTTP bodies and WebSocket
    messages alike. One per app (so per worker), shared by `BodyLimitMiddleware` and
    `ws_protocol.BoundedWebSocketProtocol`; all on the event loop, so no lock."""

    capacity: int
    held: int = 0

    def fits(self, size: int) -> bool:
        return self.held + size <= self.capacity

    def full(self) -> Overloaded:
        return Overloaded(f"the uploads in progress hold the {self.capacity}-byte upload buffer; retry later")


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit at once; counts streamed bytes otherwise.

    Reading past the limit raises `PayloadTooLarge` inside whatever is reading the body (FastAPI's
    form parser, `request.stream()`), which the problem handler answers with 413. So does a body that has
    not all arrived `upload_timeout_s` after its headers: `UploadTimeout`, 408 (a body trickled at a
    byte a second would otherwise hold its connection for good).

    Any answer sent before the whole body has arrived (that 413, or a 401/415/422/429 given without
    reading it) carries `Connection: close`, so the rest of an upload is not swallowed on a kept-alive
    connection, and a client still sending stops and reads the answer now, not when its upload ends.
    The connection then closes with a linger, below the app (`protocol.BoundedHttpToolsProtocol`), so
    that the reset an unread upload would cause does not lose the answer.

    The bytes all requests in progress have received are held to `upload_buffer` (one per worker,
    shared with WebSocket messages): a body that would take them past it is refused with 429, before it
    is read when its Content-Length says so, else at the chunk that crosses. Without it,
    MAX_CONNECTIONS uploads of MAX_BODY_BYTES each could be held at once. Received bytes are counted,
    not declared ones, so a client that declares a large body and trickles it holds only what it sent.
    """

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, upload_timeout_s: float, upload_buffer: UploadBuffer
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.upload_timeout_s = upload_timeout_s
        self.upload_buffer = upload_buffer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        has_body = False
        declared = -1
        for name, value in scope["headers"]:
            if name == b"transfer-encoding":
                has_body = True
            elif name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                has_body = has_body or declared != 0
        received = 0
        body_done = not has_body
        buffer = self.upload_buffer
        timeout_s = self.upload_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body, receive() waits for a disconnect: no deadline there
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise UploadTimeout(f"the body did not arrive within {timeout_s:g} s") from None
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                if received + size > limit:
                    raise PayloadTooLarge(f"body exceeds the {limit}-byte limit")
                if not buffer.fits(size):
                    raise buffer.full()
                received += size
                buffer.held += size
                body_done = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_done:
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        if declared > limit or not buffer.fits(declared):
            error = (
                PayloadTooLarge(f"body of {declared} bytes exceeds the {limit}-byte limit")
                if declared > limit
                else buffer.full()
            )
            await error_response(error)(scope, receive, closing_send)
            return
        try:
            await self.app(scope, limited_receive, closing_send)
        finally:
            buffer.held -= received
