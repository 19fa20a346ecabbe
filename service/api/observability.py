"""Request count and latency by route and status, for every response including errors; with
`ACCESS_LOG`, a log line for each as well."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.observer import Observer

log = logging.getLogger(__name__)

# Fixed route labels keep cardinality low whatever paths clients probe.
ROUTES = frozenset(
    {"/", "/detect", "/detect/batch", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}
)


class RequestMetricsMiddleware:
    def __init__(self, app: ASGIApp, observer: Observer, access_log: bool = False) -> None:
        self.app = app
        self.observer = observer
        self.access_log = access_log

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
            seconds = time.perf_counter() - started
            self.observer.on_request(route, status, seconds)
            if self.access_log:
                method, path, ms = scope["method"], scope["path"], round(seconds * 1000, 2)
                log.info(
                    "%s %s %d %.1f ms",
                    method,
                    path,
                    status,
                    ms,
                    extra={"method": method, "path": path, "status": status, "duration_ms": ms},
                )
