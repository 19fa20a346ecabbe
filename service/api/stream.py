"""Video mode: `ws://…/stream` takes encoded frames and answers each with tracked faces.

Protocol: after the handshake (query options as for `/detect`, plus `smooth` and `fps`), every binary
message is one encoded image (JPEG/PNG/WebP/BMP); the server answers each, in order, with one JSON text
message: `{"frame": n, "model", "image", "faces": [… with "track_id"], "timing_ms"}` or, for a frame it
could not use, `{"frame": n, "error": <problem>}` — the stream goes on. Track ids are stable across
frames of one connection (`service/tracking.py`); `smooth=true` applies its One-Euro filter.
Auth failures close the socket with code 1008 (policy violation) before it is accepted.
"""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect
from starlette.status import WS_1008_POLICY_VIOLATION, WS_1011_INTERNAL_ERROR

from service.api.auth import verify_bearer
from service.api.problems import problem_for
from service.api.routes import QueryOptions, query_options, resolve_options
from service.api.schemas import detect_response
from service.errors import InputError, InvalidOption, ServiceError, Unauthorized
from service.tracking import SmoothingOptions, Tracker

router = APIRouter()


@router.websocket("/stream")
async def stream(
    websocket: WebSocket,
    query: Annotated[QueryOptions, Depends(query_options)],
    smooth: Annotated[bool, Query(description="One-Euro smoothing of boxes and keypoints")] = False,
    fps: Annotated[float, Query(gt=0, le=1000, description="frame rate for the smoothing filter")] = 30.0,
) -> None:
    settings = websocket.app.state.settings
    try:
        verify_bearer(websocket.headers.get("authorization", ""), settings.api_keys)
        options = resolve_options(websocket, query)
    except (Unauthorized, InvalidOption) as exc:
        await websocket.close(WS_1008_POLICY_VIOLATION, reason=exc.detail[:120])
        return
    await websocket.accept()
    tracker = Tracker(smoothing=SmoothingOptions(fps=fps) if smooth else None)
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
