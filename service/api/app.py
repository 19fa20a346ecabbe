"""The FastAPI application: everything is built and torn down in the lifespan.

uvicorn --factory service.api.app:create_app
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from service import __version__, metrics
from service.api import problems, stream
from service.api.cors import ProblemCORSMiddleware
from service.api.limits import UPLOAD_BUFFER_STATE, BodyLimitMiddleware, UploadBuffer
from service.api.observability import RequestMetricsMiddleware
from service.api.request_id import RequestIdMiddleware
from service.api.routes import router
from service.backends.base import Backend
from service.backends.factory import make_backend
from service.engine import Engine
from service.observer import Observer
from service.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, backend: Backend | None = None, observer: Observer | None = None
) -> FastAPI:
    """`backend` lets tests inject a scripted backend; by default `settings.backend` picks one. Everything
    is reported to `observer` (default: Prometheus, served at /metrics)."""
    settings = settings or get_settings()
    observer = observer or metrics.PrometheusObserver()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = Engine(settings, backend or make_backend(settings, observer), observer)
        await engine.start()
        app.state.engine = engine
        log.info("blazeface-serve ready: backend=%s", settings.backend)
        try:
            yield {UPLOAD_BUFFER_STATE: upload_buffer}  # for the WebSocket protocol, below the app
        finally:
            await engine.close()
            metrics.mark_worker_dead(os.getpid())

    app = FastAPI(
        title="blazeface-serve",
        version=__version__,
        summary="BlazeFace face detection: boxes, six keypoints, roll and crop ROI per face",
        lifespan=lifespan,
        # Starlette would answer /detect/ with a redirect to the Host header's site, which a client follows
        # with its body.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.observer = observer
    upload_buffer = UploadBuffer(settings.upload_buffer_bytes)
    problems.install(app)
    app.include_router(router)
    app.include_router(stream.router)
    # Innermost, so that its 500 still passes the body limit (which closes a connection mid-upload).
    app.add_middleware(problems.UnexpectedErrorMiddleware)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        upload_timeout_s=settings.upload_timeout_s,
        upload_buffer=upload_buffer,
    )
    if settings.cors_origins:
        app.add_middleware(
            ProblemCORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["Server-Timing", "X-Request-ID"],
        )
    app.add_middleware(RequestMetricsMiddleware, observer=observer, access_log=settings.access_log)
    app.add_middleware(RequestIdMiddleware)  # outermost: every answer and log line inside has the id
    return app
