"""Request and response shapes: pydantic models for the OpenAPI schema, and the function that fills
responses.

Responses are built as plain dicts and serialised with orjson (the models document them; validating
every response through pydantic would cost more than the decoder). Request bodies carry the options of
`service.options.RequestOptions` beside the image(s); `DetectJsonRequest` also validates JSON bodies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.engine import DetectResult
from service.options import RequestOptions
from service.postprocess import Face
from service.tracking import TrackedFace


class DetectJsonRequest(RequestOptions):
    """`POST /detect` as JSON: the image as base64 (a data URL is accepted too), options beside it."""

    image: str = Field(json_schema_extra={"contentEncoding": "base64"})


class DetectForm(RequestOptions):
    """`POST /detect` as multipart/form-data: the image as a file field, options as text fields."""

    image: bytes


class DetectBatchForm(RequestOptions):
    """`POST /detect/batch`: one file field `images` per image, options as text fields."""

    images: list[bytes]


def request_body(content: Mapping[str, type[BaseModel] | dict[str, Any]]) -> dict[str, Any]:
    """`openapi_extra` declaring a required body: a schema, or the model to take it from, per media type.

    (These routes read their bodies themselves, whichever of several types they are, so FastAPI does not
    know the models; their `$defs` are inlined, as the document's components do not hold them.)
    """
    schemas = {
        media: _inlined(schema.model_json_schema()) if isinstance(schema, type) else schema
        for media, schema in content.items()
    }
    return {"requestBody": {"required": True, "content": {m: {"schema": s} for m, s in schemas.items()}}}


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rpartition("/")[2]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(schema)


class Point(BaseModel):
    x: float
    y: float


class Box(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float


class Keypoints(BaseModel):
    right_eye: Point
    left_eye: Point
    nose_tip: Point
    mouth_center: Point
    right_ear_tragion: Point
    left_ear_tragion: Point


class Roi(BaseModel):
    """Rotated square crop for downstream models (MediaPipe's detection-to-ROI)."""

    center: Point
    size: float
    angle_degrees: float


class FaceOut(BaseModel):
    score: float = Field(ge=0, le=1)
    box: Box
    keypoints: Keypoints
    roll_degrees: float
    roi: Roi
    track_id: int | None = Field(None, description="video mode (/stream) only: stable across frames")


class ImageSize(BaseModel):
    width: int
    height: int


class TimingMs(BaseModel):
    decode: float
    queue: float
    inference: float
    postprocess: float
    total: float


class DetectResponse(BaseModel):
    """Faces in pixels of the original, EXIF-upright image, sorted by score."""

    model: str
    image: ImageSize
    faces: list[FaceOut]
    candidates_truncated: bool = Field(
        False,
        description="true when every one of the candidates the model returns (its best 100 by score) is "
        "over the score threshold: weaker ones past them may have been left out (only with a very low "
        "min_score); false: the faces are complete",
    )
    timing_ms: TimingMs


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    request_id: str | None = Field(
        None, description="the request's X-Request-ID (given or made): find it in the service's logs"
    )


class Readiness(BaseModel):
    """`/readyz`: 200 with "ready", or 503 with "unavailable" while the backend is not answering."""

    status: Literal["ready", "unavailable"]
    backend: str


class BatchResponse(BaseModel):
    """One entry per uploaded image, in order: a detection or a problem for that image."""

    results: list[DetectResponse | Problem]


def face_dict(face: Face) -> dict[str, Any]:
    out: dict[str, Any] = {
        "score": face.score,
        "box": dict(zip(("x1", "y1", "x2", "y2"), face.box, strict=True)),
        "keypoints": {name: {"x": x, "y": y} for name, (x, y) in face.keypoints.items()},
        "roll_degrees": face.roll_degrees,
        "roi": {
            "center": {"x": face.roi.center_x, "y": face.roi.center_y},
            "size": face.roi.size,
            "angle_degrees": face.roi.angle_degrees,
        },
    }
    if isinstance(face, TrackedFace):
        out["track_id"] = face.track_id
    return out


def detect_response(result: DetectResult, faces: Sequence[Face] | None = None) -> dict[str, Any]:
    """`faces` replaces the result's own (video mode sends them tracked and smoothed)."""
    return {
        "model": result.model,
        "image": {"width": result.width, "height": result.height},
        "faces": [face_dict(face) for face in (result.faces if faces is None else faces)],
        "candidates_truncated": result.candidates_truncated,
        "timing_ms": result.timing.__dict__,
    }
