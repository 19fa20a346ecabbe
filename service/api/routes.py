"""Endpoints. Requests become images and options in `dependencies`, errors become problem+json in
`problems`, and the work is the engine's."""

from __future__ import annotations

from importlib import resources
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from service import metrics
from service.api.auth import check_bearer
from service.api.dependencies import Upload, batch_upload, image_upload
from service.api.problems import problem_for
from service.api.schemas import (
    BatchResponse,
    DetectBatchForm,
    DetectForm,
    DetectJsonRequest,
    DetectResponse,
    Problem,
    Readiness,
    detect_response,
    request_body,
)
from service.engine import Engine
from service.errors import InputError

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}}
    for status in (400, 401, 413, 415, 422, 429, 503, 504)
}
_BINARY = {"type": "string", "format": "binary"}


def json_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


@router.post(
    "/detect",
    summary="Detect faces in one image",
    dependencies=[Depends(check_bearer)],
    responses={200: {"model": DetectResponse}, **_ERRORS},
    openapi_extra=request_body(
        {
            "multipart/form-data": DetectForm,
            "image/jpeg": _BINARY,
            "application/octet-stream": _BINARY,
            "application/json": DetectJsonRequest,
        }
    ),
)
async def detect(request: Request, upload: Annotated[Upload, Depends(image_upload)]) -> Response:
    options, engine = upload.options, engine_of(request)
    try:
        result = await engine.detect(upload.images[0], options, upload.deadline)
    except InputError:  # the image's own fault: counted as a batch's bad image is
        engine.observer.on_image(options.model, "rejected")
        raise
    engine.observer.on_image(options.model, "ok")
    return json_response(detect_response(result), {"Server-Timing": result.timing.server_timing()})


@router.post(
    "/detect/batch",
    summary="Detect faces in several images; a bad image gets its own problem entry",
    dependencies=[Depends(check_bearer)],
    responses={200: {"model": BatchResponse}, **_ERRORS},
    openapi_extra=request_body({"multipart/form-data": DetectBatchForm}),
)
async def detect_batch(request: Request, upload: Annotated[Upload, Depends(batch_upload)]) -> Response:
    options = upload.options
    engine = engine_of(request)
    # Admitted whole or refused: a bad image gets its own problem entry, service errors fail the request.
    results: list[dict[str, Any]] = []
    for outcome in await engine.detect_many(upload.images, options, upload.deadline):
        if isinstance(outcome, InputError):
            engine.observer.on_image(options.model, "rejected")
            results.append(problem_for(outcome))
        else:
            engine.observer.on_image(options.model, "ok")
            results.append(detect_response(outcome))
    return json_response({"results": results})


# HEAD as well, for probes that send it; kept out of the schema (one operation per path and purpose).
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", summary="Process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.head("/readyz", include_in_schema=False)
@router.get(
    "/readyz",
    summary="Backend loaded and answering",
    responses={200: {"model": Readiness}, 503: {"model": Readiness, "description": "Backend not ready"}},
)
async def readyz(request: Request) -> Response:
    ready = await engine_of(request).ready()
    body = {"status": "ready" if ready else "unavailable", "backend": request.app.state.settings.backend}
    return Response(orjson.dumps(body), status_code=200 if ready else 503, media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus_metrics() -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)


@router.get("/", summary="Demo page", response_class=HTMLResponse, include_in_schema=False)
async def demo_page() -> HTMLResponse:
    return HTMLResponse(resources.files("service.api").joinpath("static/index.html").read_text("utf-8"))
