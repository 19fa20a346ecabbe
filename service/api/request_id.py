"""A request id per HTTP request and WebSocket: the client's `X-Request-ID` when it is a usable one,
else a new one. It is echoed in the `X-Request-ID` response header, put in problem+json bodies
(`problems.problem_response`) and on every log line written while the request is handled
(`service/logs.py`), so that a failing request can be found in the logs."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.logs import current_request_id

HEADER = b"x-request-id"
# Visible ASCII, bounded: what a proxy or tracing header would send; anything else is replaced, since
# it is echoed in a header and in logs.
_USABLE = re.compile(rb"[\x21-\x7e]{1,128}")

# The HTTP answer, the WebSocket handshake's acceptance or its HTTP denial: where headers go.
_ANSWER_STARTS = frozenset({"http.response.start", "websocket.accept", "websocket.http.response.start"})


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == HEADER and _USABLE.fullmatch(value):
            return value.decode("ascii")
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Outermost: everything inside (handlers, problem answers, log lines) sees the id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] in _ANSWER_STARTS:
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        token = current_request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
