"""Video mode: `ws://…/stream` takes encoded frames and answers each with tracked faces.

Protocol: after the handshake (query options as for `/detect`, plus `smooth` and `fps`: one model,
`service.options.StreamOptions`), every binary message is one encoded image (JPEG/PNG/WebP/BMP); the
server answers each, in order, with one JSON text message: `{"frame": n, "model", "image", "faces": [… with
"track_id"], "timing_ms"}` or, for a frame it could not use (a bad image, or one the service cannot take
now: overload, deadline, backend down), `{"frame": n, "error": <problem>}` — the stream goes on. Track
ids are stable across frames of one connection (`service/tracking.py`); `smooth=true` applies its
One-Euro filter.

The key goes in the `Authorization: Bearer <key>` header, or, from a browser (which cannot set headers
on a WebSocket), as a subprotocol: `new WebSocket(url, ["blazeface.v1", "bearer.<key>"])`; the server
then selects `blazeface.v1` and never echoes the key. A key sent that way must be an HTTP token, as
subprotocol names are (hex or unpadded base64url is; `/`, `=` and `,` are not). A page from another
origin is refused (403) unless `CORS_ORIGINS` lists it (`service.api.auth.verify_origin`); same-origin
pages and clients that send no `Origin` (non-browsers) are not.

A refused Origin, a missing or wrong key, or an invalid option refuses the handshake with the
problem+json HTTP gives (403, 401 or 422, same title and detail): the answer to the upgrade request,
sent with the ASGI websocket denial-response extension, which uvicorn offers with each of its websocket
implementations. Under a server without it the socket is closed before it is accepted, code 1008 (policy
violation), the detail as the reason; clients then see an HTTP 403. A handshake for any other path is
refused the same way, 404.

Metrics: each handshake refused and each message answered is one request of route "/stream" (status 200,
or the problem's), and each binary message one image ("ok", or "rejected" for its own 4xx), as in
`/detect`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.status import WS_1008_POLICY_VIOLATION

from service.api.auth import STREAM_SUBPROTOCOL, verify_origin, verify_stream_key
from service.api.dependencies import resolve_options
from service.api.problems import problem_body, problem_for, problem_response
from service.api.schemas import detect_response
from service.errors import Forbidden, InputError, InvalidOption, ServiceError, Unauthorized
from service.options import StreamOptions, refuse_repeated
from service.tracking import SmoothingOptions, Tracker

router = APIRouter()

ROUTE = "/stream"  # the fixed route label of its requests, as `service/api/observability.py` gives HTTP's
_DENIAL_RESPONSE = "websocket.http.response"
_MAX_CLOSE_REASON = 120  # a close frame's reason is at most 123 bytes (the details are ASCII)


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    settings, observer = websocket.app.state.settings, websocket.app.state.observer
    headers, subprotocols = websocket.headers, websocket.scope["subprotocols"]
    started = time.perf_counter()
    try:
        verify_origin(headers.get("origin"), headers.get("host", ""), settings.cors_origins)
        verify_stream_key(headers.get("authorization", ""), subprotocols, settings.api_keys)
        # Validated here, not as a FastAPI dependency: its errors would escape before the handshake
        # could be refused.
        refuse_repeated(websocket.query_params.multi_items(), "query string", StreamOptions)
        query = StreamOptions.model_validate(dict(websocket.query_params))
    except (Forbidden, Unauthorized, InvalidOption) as exc:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        await _refuse(websocket, problem_for(exc), headers)
        observer.on_request(ROUTE, exc.status, time.perf_counter() - started)
        return
    options = resolve_options(websocket, query.given())
    await websocket.accept(STREAM_SUBPROTOCOL if STREAM_SUBPROTOCOL in subprotocols else None)
    tracker = Tracker(smoothing=SmoothingOptions(fps=query.fps) if query.smooth else None)
    engine = websocket.app.state.engine
    frame = 0
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            started = time.perf_counter()
            data = message.get("bytes")
            if data is None:  # answered, but not a frame: the frame numbers go on unchanged
                not_binary = InvalidOption("send frames as binary")
                await _send(websocket, {"frame": frame, "error": problem_for(not_binary)})
                observer.on_request(ROUTE, not_binary.status, time.perf_counter() - started)
                continue
            outcome: str | None = None  # an image's outcome; None where the service refused the frame
            try:
                result = await engine.detect(data, options, started + settings.request_timeout_s)
            except InputError as exc:
                reply, status, outcome = {"frame": frame, "error": problem_for(exc)}, exc.status, "rejected"
            except ServiceError as exc:  # overload, deadline, backend down: this frame is dropped, as
                # a video client would drop it; the next may be served (Retry-After is the problem's)
                reply, status = {"frame": frame, "error": problem_for(exc)}, exc.status
            else:
                reply = {"frame": frame, **detect_response(result, tracker.update(result.faces))}
                status, outcome = 200, "ok"
            await _send(websocket, reply)
            if outcome is not None:
                observer.on_image(options.model, outcome)
            observer.on_request(ROUTE, status, time.perf_counter() - started)
            frame += 1
    except WebSocketDisconnect:
        return


@router.websocket("/{path:path}")
async def no_stream_here(websocket: WebSocket) -> None:
    """A WebSocket handshake for any other path: 404, where Starlette would send an empty 403."""
    started = time.perf_counter()
    detail = f"the WebSocket endpoint is {ROUTE}"
    await _refuse(websocket, problem_body(404, "Not Found", detail, "not-found"))
    websocket.app.state.observer.on_request("other", 404, time.perf_counter() - started)


async def _send(websocket: WebSocket, reply: dict[str, Any]) -> None:
    await websocket.send_text(orjson.dumps(reply).decode())


async def _refuse(
    websocket: WebSocket, problem: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    if _DENIAL_RESPONSE in (websocket.scope.get("extensions") or {}):
        await websocket.send_denial_response(problem_response(problem, headers))
    else:
        await websocket.close(WS_1008_POLICY_VIOLATION, reason=problem["detail"][:_MAX_CLOSE_REASON])
