"""Every error becomes an RFC 9457 problem+json response here, in one place."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from service.errors import Overloaded, ServiceError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://blazeface-serve.dev/problems/"


def problem_body(status: int, title: str, detail: str, slug: str) -> dict[str, Any]:
    return {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail}


def problem_for(exc: ServiceError) -> dict[str, Any]:
    return problem_body(exc.status, exc.title, exc.detail, exc.slug)


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=body["status"], media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)  # registered for ServiceError only
    headers: dict[str, str] = {}
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after_s)
    if exc.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problem_response(problem_for(exc), headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    # Name the fields, never echo the input (it may be a large or binary body).
    parts = [
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in exc.errors()
    ]
    return problem_response(problem_body(422, "Invalid option", "; ".join(parts), "invalid-option"))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return problem_response(
        problem_body(exc.status_code, str(exc.detail), str(exc.detail), slug), dict(exc.headers or {})
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Logged with its traceback; the client sees no stack, path or library message.
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(problem_body(500, "Internal error", "unexpected server error", "internal"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
