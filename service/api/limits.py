"""Upload size and time limits enforced while the body streams in, before anything buffers it all."""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_for, problem_response
from service.errors import PayloadTooLarge, UploadTimeout

# After answering before the body has all arrived, keep reading (and discarding) this long at most
# before the connection closes: an "HTTP lingering close", as nginx does.
LINGER_S = 1.0
LINGER_MAX_BYTES = 64 * 1024 * 1024


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit at once; counts streamed bytes otherwise.

    Reading past the limit raises `PayloadTooLarge` inside whatever is reading the body (FastAPI's
    form parser, `request.stream()`), which the problem handler answers with 413. So does a body that has
    not all arrived `upload_timeout_s` after its headers: `UploadTimeout`, 408 (a body trickled at a
    byte a second would otherwise hold its connection for good).

    Any answer sent before the whole body has arrived (that 413, or a 401/415/422 given without reading
    it) carries `Connection: close`, so the rest of an upload is not swallowed on a kept-alive
    connection, and a client still sending stops and reads the answer now, not when its upload ends.
    Closing at once would reset the connection (unread data → RST) and an asyncio client, which drops
    what it had not read when a write fails, would lose the answer: so the connection lingers, reading
    and discarding, until the client stops sending or LINGER_S passes.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int, upload_timeout_s: float) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.upload_timeout_s = upload_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        has_body = expects_continue = False
        declared = -1
        for name, value in scope["headers"]:
            if name == b"transfer-encoding":
                has_body = True
            elif name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
            elif name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                has_body = has_body or declared != 0
        received = 0
        body_done = not has_body
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
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"body exceeds the {limit}-byte limit")
                body_done = not message.get("more_body", False)
            return message

        async def linger() -> None:
            """Discard what the client is still sending, bounded in time and bytes."""
            if expects_continue and received == 0:
                return  # reading now would send "100 Continue" after the final answer
            deadline, drained = time.monotonic() + LINGER_S, 0
            while (left := deadline - time.monotonic()) > 0 and drained < LINGER_MAX_BYTES:
                try:
                    message = await asyncio.wait_for(receive(), left)
                except TimeoutError:
                    return  # the client went quiet: it is reading the answer
                if message["type"] != "http.request":
                    return
                drained += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return

        closing = False

        async def closing_send(message: Message) -> None:
            nonlocal closing
            if message["type"] == "http.response.start" and not body_done:
                closing = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            elif message["type"] == "http.response.body" and closing and not message.get("more_body"):
                # Send the answer, linger, then end it (uvicorn closes the connection on that end).
                await send({**message, "more_body": True})
                await linger()
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        if declared > limit:
            error = PayloadTooLarge(f"body of {declared} bytes exceeds the {limit}-byte limit")
            response = problem_response(problem_for(error))
            await response(scope, receive, closing_send)
            return
        await self.app(scope, limited_receive, closing_send)
