"""Endpoints. Parsing lives in `uploads`, errors in `problems`, work in the engine."""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from starlette.requests import HTTPConnection
from starlette.responses import Response

from service import metrics
from service.api.auth import check_bearer
from service.api.problems import problem_for
from service.api.schemas import BatchResponse, DetectResponse, Problem, Readiness, detect_response
from service.api.uploads import read_files, read_image
from service.decoding import Suppression
from service.engine import Engine
from service.errors import InputError, InvalidOption
from service.imaging import Preprocess
from service.options import DetectOptions

router = APIRouter()

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {"application/problem+json": {}}}
    for status in (400, 401, 413, 415, 422, 429, 503, 504)
}
_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "format": "binary"}},
                }
            },
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {"type": "string", "contentEncoding": "base64"},
                        "model": {"type": "string", "enum": ["short", "full"]},
                        "min_score": {"type": "number", "minimum": 0, "maximum": 1},
                        "max_faces": {"type": "integer", "minimum": 1},
                        "suppression": {"type": "string", "enum": ["blend", "nms"]},
                        "preprocess": {"type": "string", "enum": ["exact", "fast"]},
                    },
                    "additionalProperties": False,
                }
            },
        },
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            }
        },
    }
}


QueryOptions = dict[str, Any]


async def query_options(
    model: Annotated[Literal["short", "full"] | None, Query(description="short (≤2 m) or full range")] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1, description="default: the model's")] = None,
    max_faces: Annotated[int | None, Query(ge=1, le=1000)] = None,
    suppression: Annotated[
        Suppression, Query(description="blend (paper §3) or plain nms")
    ] = Suppression.BLEND,
    preprocess: Annotated[Preprocess | None, Query(description="exact or fast (DCT-scaled JPEG)")] = None,
) -> QueryOptions:
    """Options from the query string; `None` means the service default. (async: FastAPI runs a sync
    dependency in a worker thread, two thread hops per request that cost more than the decoder.)"""
    return {
        "model": model,
        "min_score": min_score,
        "max_faces": max_faces,
        "suppression": suppression,
        "preprocess": preprocess,
    }


def resolve_options(
    connection: HTTPConnection, query: QueryOptions, overrides: dict[str, Any] | None = None
) -> DetectOptions:
    settings = connection.app.state.settings
    values = {key: value for key, value in query.items() if value is not None}
    values.update(overrides or {})
    values.setdefault("model", settings.default_model)
    values.setdefault("preprocess", settings.preprocess)
    return DetectOptions(**values)


def json_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


@router.post(
    "/detect",
    summary="Detect faces in one image",
    dependencies=[Depends(check_bearer)],
    responses={200: {"model": DetectResponse}, **_ERRORS},
    openapi_extra=_IMAGE_BODY,
)
async def detect(request: Request, query: Annotated[QueryOptions, Depends(query_options)]) -> Response:
    deadline = time.perf_counter() + request.app.state.settings.request_timeout_s
    data, json_options = await read_image(request)
    options = resolve_options(request, query, json_options)
    result = await engine_of(request).detect(data, options, deadline)
    metrics.IMAGES.labels(options.model, "ok").inc()
    return json_response(detect_response(result), {"Server-Timing": result.timing.server_timing()})


@router.post(
    "/detect/batch",
    summary="Detect faces in several images; a bad image gets its own problem entry",
    dependencies=[Depends(check_bearer)],
    responses={200: {"model": BatchResponse}, **_ERRORS},
    openapi_extra=_BATCH_BODY,
)
async def detect_batch(request: Request, query: Annotated[QueryOptions, Depends(query_options)]) -> Response:
    settings = request.app.state.settings
    deadline = time.perf_counter() + settings.request_timeout_s
    options = resolve_options(request, query)
    images = await read_files(request, "images", max_files=settings.max_batch_images)
    if not images:
        raise InvalidOption("multipart body has no file fields named 'images'")
    engine = engine_of(request)

    async def one(data: bytes) -> dict[str, Any]:
        try:
            result = await engine.detect(data, options, deadline)
        except InputError as exc:  # only this image is bad; service errors fail the request
            metrics.IMAGES.labels(options.model, "rejected").inc()
            return problem_for(exc)
        metrics.IMAGES.labels(options.model, "ok").inc()
        return detect_response(result)

    results = await asyncio.gather(*(one(data) for data in images))
    return json_response({"results": results})


@router.get("/healthz", summary="Process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


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
