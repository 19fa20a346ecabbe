"""FastAPI dependencies that turn a detection request into its images, options and deadline.

Options come from the query string (`QueryOptions`, which also gives FastAPI the documented query
parameters) and, for a JSON or multipart body, from the body: a value in the body overrides the query's,
and so does a null, which asks for the service default. Both are validated by the one options model, so
an invalid value, or an option given twice, is the same 422 problem whichever carried it.

The dependencies are `async def`: FastAPI runs a sync dependency in a worker thread, two thread hops
per request that cost more than the decoder.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query, Request
from starlette.requests import HTTPConnection

from service.api.uploads import read_form, read_image
from service.options import DetectOptions, QueryOptions, refuse_repeated


@dataclass(frozen=True)
class Upload:
    """The images of a request (one for `/detect`), their options, and the request's deadline."""

    images: list[bytes]
    options: DetectOptions
    deadline: float  # time.perf_counter() time, counted from before the body was read


def resolve_options(connection: HTTPConnection, *given: Mapping[str, Any]) -> DetectOptions:
    """Options given by several sources, the later overriding, over the service defaults."""
    settings = connection.app.state.settings
    merged = {name: value for source in given for name, value in source.items()}
    return DetectOptions.resolve(merged, model=settings.default_model, preprocess=settings.preprocess)


async def image_upload(request: Request, query: Annotated[QueryOptions, Query()]) -> Upload:
    """`/detect`: one image as multipart, raw bytes or base64 JSON."""
    deadline = _deadline(request)
    refuse_repeated(request.query_params.multi_items(), "query string")
    _check_room(request, query)
    data, body_options = await read_image(request)
    return Upload([data], resolve_options(request, query.given(), body_options), deadline)


async def batch_upload(request: Request, query: Annotated[QueryOptions, Query()]) -> Upload:
    """`/detect/batch`: multipart file fields named `images`."""
    deadline = _deadline(request)
    refuse_repeated(request.query_params.multi_items(), "query string")
    _check_room(request, query)
    max_files = request.app.state.settings.max_batch_images
    images, body_options = await read_form(request, "images", max_files=max_files)
    return Upload(images, resolve_options(request, query.given(), body_options), deadline)


def _check_room(request: Request, query: QueryOptions) -> None:
    """Refuse before reading the body when the request could not be admitted anyway: under overload a
    refusal then costs a few microseconds, not the upload. (A JSON body may name another model; its
    own admission still follows.)"""
    engine = getattr(request.app.state, "engine", None)  # none before startup (ASGI-level tests)
    if engine is not None:
        engine.check_room(query.model or request.app.state.settings.default_model)


def _deadline(request: Request) -> float:
    return time.perf_counter() + request.app.state.settings.request_timeout_s
