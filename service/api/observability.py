"""Request count and latency by route and status, for every response including errors."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observer import Observer

# Fixed route labels keep cardinality low whatever paths clients probe.
ROUTES = frozenset(
    {"/", "/detect", "/detect/batch", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}
)


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, observer: Observer) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.observer.on_request(route, status, time.perf_counter() - started)
