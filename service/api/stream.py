"""Video mode: `ws://…/stream` takes encoded frames and answers each with tracked faces.

Protocol: after the handshake (query options as for `/detect`, plus `smooth` and `fps`: one model,
`service.options.StreamOptions`), every binary message is one encoded image (JPEG/PNG/WebP/BMP); the
server answers each, in order, with one JSON text message: `{"frame": n, "model", "image", "faces": [… with
"track_id"], "timing_ms"}` or, for a frame it could not use, `{"frame": n, "error": <problem>}` — the
stream goes on. Track ids are stable across frames of one connection (`service/tracking.py`);
`smooth=true` applies its One-Euro filter.

A missing or wrong key, or an invalid option, refuses the handshake with the problem+json HTTP gives
(401 or 422, same title and detail): the answer to the upgrade request, sent with the ASGI websocket
denial-response extension, which uvicorn offers with each of its websocket implementations. Under a
server without it the socket is closed before it is accepted, code 1008 (policy violation), the detail
as the reason; clients then see an HTTP 403. (uvicorn 0.54's default implementation, websockets-sansio,
logs a spurious "ASGI callable returned without completing handshake." error after each denial; open
uvicorn PR #3138 fixes it, and `--ws wsproto` does not log it.)
"""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.status import WS_1008_POLICY_VIOLATION, WS_1011_INTERNAL_ERROR

from service.api.auth import verify_bearer
from service.api.dependencies import resolve_options
from service.api.problems import problem_for, problem_response
from service.api.schemas import detect_response
from service.errors import InputError, InvalidOption, ServiceError, Unauthorized
from service.options import StreamOptions
from service.tracking import SmoothingOptions, Tracker

router = APIRouter()

_DENIAL_RESPONSE = "websocket.http.response"
_MAX_CLOSE_REASON = 120  # a close frame's reason is at most 123 bytes (the details are ASCII)


@router.websocket("/stream")
async def stream(websocket: WebSocket) -> None:
    settings = websocket.app.state.settings
    try:
        verify_bearer(websocket.headers.get("authorization", ""), settings.api_keys)
        # Validated here, not as a FastAPI dependency: its errors would escape before the handshake
        # could be refused.
        query = StreamOptions.model_validate(dict(websocket.query_params))
    except (Unauthorized, InvalidOption) as exc:
        await _refuse(websocket, exc)
        return
    options = resolve_options(websocket, query.given())
    await websocket.accept()
    tracker = Tracker(smoothing=SmoothingOptions(fps=query.fps) if query.smooth else None)
    engine = websocket.app.state.engine
    frame = 0
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                await websocket.send_text(
                    orjson.dumps(
                        {"frame": frame, "error": problem_for(InvalidOption("send frames as binary"))}
                    ).decode()
                )
                continue
            try:
                result = await engine.detect(data, options, time.perf_counter() + settings.request_timeout_s)
            except InputError as exc:
                reply = {"frame": frame, "error": problem_for(exc)}
            else:
                reply = {"frame": frame, **detect_response(result, tracker.update(result.faces))}
            await websocket.send_text(orjson.dumps(reply).decode())
            frame += 1
    except WebSocketDisconnect:
        return
    except ServiceError as exc:  # backend down, overload, deadline: tell the client, then close
        await websocket.send_text(orjson.dumps({"frame": frame, "error": problem_for(exc)}).decode())
        await websocket.close(WS_1011_INTERNAL_ERROR, reason=exc.title)


async def _refuse(websocket: WebSocket, exc: ServiceError) -> None:
    if _DENIAL_RESPONSE in (websocket.scope.get("extensions") or {}):
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        await websocket.send_denial_response(problem_response(problem_for(exc), headers))
    else:
        await websocket.close(WS_1008_POLICY_VIOLATION, reason=exc.detail[:_MAX_CLOSE_REASON])
