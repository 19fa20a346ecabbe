"""Every error becomes an RFC 9457 problem+json response here, in one place, and every 5xx is logged
here, once, with its cause chain (the client sees neither)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import Overloaded, ServiceError
from service.logs import current_request_id

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://blazeface-serve.dev/problems/"


def problem_body(status: int, title: str, detail: str, slug: str) -> dict[str, Any]:
    return {"type": TYPE_BASE + slug, "title": title, "status": status, "detail": detail}


def problem_for(exc: ServiceError) -> dict[str, Any]:
    return problem_body(exc.status, exc.title, exc.detail, exc.slug)


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """The answer to a request; it names the request's id (`request_id.py`) so it can be found in the logs."""
    if (request_id := current_request_id.get()) is not None:
        body = {**body, "request_id": request_id}
    return Response(
        orjson.dumps(body), status_code=body["status"], media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


# nginx's "client closed request": what the metrics record for a request whose client went away before
# its answer; nothing is sent.
CLIENT_CLOSED = 499


def _causes(exc: BaseException) -> str:
    """`Outer: message <- Inner: message`, following `raise … from` (or the implicit context)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:  # a chain can loop
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return " <- ".join(f"{type(e).__name__}: {e}" for e in chain)


def _log_server_error(request: Request, status: int, exc: Exception) -> None:
    log.warning("%d on %s %s: %s", status, request.method, request.url.path, _causes(exc))


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)  # registered for ServiceError only
    if exc.status >= 500:
        _log_server_error(request, exc.status, exc)
    return error_response(exc)


def error_response(exc: ServiceError) -> Response:
    """The problem for `exc` with the headers its status calls for."""
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
    if exc.status_code >= 500:
        _log_server_error(request, exc.status_code, exc)
    slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return problem_response(
        problem_body(exc.status_code, str(exc.detail), str(exc.detail), slug), dict(exc.headers or {})
    )


async def _client_disconnected(request: Request, exc: Exception) -> Response:
    # The client aborted (mid-upload, typically): its fault, and nobody reads the answer.
    log.debug("client went away during %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED)


class UnexpectedErrorMiddleware:
    """Any other exception: logged with its traceback, answered 500 without stack, path or library message.

    A middleware (`app.py` adds it innermost), not an `Exception` handler: Starlette re-raises after such a
    handler so that the server logs it again, which made two tracebacks per error.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("500 on %s %s", scope["method"], scope["path"])
            if not started:  # else uvicorn closes the connection, the response being incomplete
                body = problem_body(500, "Internal error", "unexpected server error", "internal")
                await problem_response(body)(scope, receive, send)


def install(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
