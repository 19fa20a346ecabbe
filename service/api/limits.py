"""Upload size limit enforced while the body streams in, before anything buffers it all."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_body, problem_response
from service.errors import PayloadTooLarge


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit at once; counts streamed bytes otherwise.

    Reading past the limit raises `PayloadTooLarge` inside whatever is reading the body (FastAPI's
    form parser, `request.stream()`), which the problem handler answers with 413.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    error = PayloadTooLarge(f"body of {declared} bytes exceeds the {limit}-byte limit")
                    # Close the connection: the client may still be sending the body we refuse to read.
                    response = problem_response(
                        problem_body(error.status, error.title, error.detail, error.slug),
                        {"Connection": "close"},
                    )
                    await response(scope, receive, send)
                    return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"body exceeds the {limit}-byte limit")
            return message

        await self.app(scope, limited_receive, send)
