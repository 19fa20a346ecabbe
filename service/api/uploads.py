"""The three ways to send an image (multipart, raw bytes, base64 JSON) → bytes plus JSON options."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.errors import ImageDecodeError, InvalidOption, UnsupportedMediaType

RAW_TYPES = ("image/", "application/octet-stream")
JSON_OPTION_KEYS = frozenset({"model", "min_score", "max_faces", "suppression", "preprocess"})
# Option values are short words or numbers; anything longer is refused without being echoed back.
_MAX_OPTION_CHARS = 32


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_image(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The image bytes of a `/detect` request and any options given in a JSON body."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        files = await read_files(request, "image", max_files=1)
        if not files:
            raise InvalidOption("multipart body has no file field named 'image'")
        return files[0], {}
    if kind == "application/json":
        return _from_json(await request.body())
    if kind.startswith(RAW_TYPES):
        return await request.body(), {}
    raise UnsupportedMediaType(
        "send multipart/form-data, image/*, application/octet-stream or application/json, "
        f"not {kind or 'no type'}"
    )


async def read_files(request: Request, field: str, max_files: int) -> list[bytes]:
    """The bytes of every uploaded file named `field`, in order."""
    if media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType(f"send multipart/form-data with file fields named {field!r}")
    async with request.form(max_files=max_files, max_fields=16) as form:
        uploads = [item for item in form.getlist(field) if isinstance(item, UploadFile)]
        return [await upload.read() for upload in uploads]


def _from_json(body: bytes) -> tuple[bytes, dict[str, Any]]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidOption("body is not valid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("image"), str):
        raise InvalidOption('JSON body must be an object with a base64 string "image"')
    unknown = set(document) - JSON_OPTION_KEYS - {"image"}
    if unknown:
        raise InvalidOption(f"unknown JSON keys: {sorted(unknown)}")
    for key in JSON_OPTION_KEYS & set(document):
        _check_option_type(key, document[key])
    encoded = document.pop("image")
    if encoded.startswith("data:"):  # tolerate a data URL, as browsers produce
        encoded = encoded.partition(",")[2]
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError('"image" is not valid base64') from None
    return data, document


def _check_option_type(key: str, value: Any) -> None:
    """JSON can carry any type where the query string only carries text: refuse wrong types here, by
    name and without echoing the value (a list `model` once reached a dict lookup and became a 500)."""
    if value is None:
        return  # DetectOptions decides what null means (the default, where an option has one)
    if key in ("min_score", "max_faces"):
        numeric = isinstance(value, int) if key == "max_faces" else isinstance(value, int | float)
        if isinstance(value, bool) or not numeric:
            kind = "an integer" if key == "max_faces" else "a number"
            raise InvalidOption(f"{key} must be {kind}, not a JSON {_json_type(value)}")
    elif not isinstance(value, str):
        raise InvalidOption(f"{key} must be a string, not a JSON {_json_type(value)}")
    elif len(value) > _MAX_OPTION_CHARS:
        raise InvalidOption(f"{key} is not a valid value ({len(value)} characters)")


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array"}.get(
        type(value), "object"
    )
