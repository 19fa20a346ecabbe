"""The three ways to send an image (multipart, raw bytes, base64 JSON) → bytes plus the body's options.

Body options are returned as `RequestOptions.given()` gives them: only those the body set, validated.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import jiter
from pydantic import ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.api.schemas import DetectJsonRequest
from service.errors import ImageDecodeError, InputError, InvalidOption, UnsupportedMediaType
from service.options import RequestOptions, refuse_repeated

# The form's text fields: every option once is 5; more is no detection request (and each is parsed).
_MAX_FORM_FIELDS = 16
# Commas and colons a JSON request has at most: one each per member (six at most) plus a data URL's;
# base64 has neither. Counted before parsing, which costs seconds for a body of a million members.
_MAX_JSON_SEPARATORS = 32
# jiter's words for a key given twice (tests/api/test_options.py pins them).
_REPEATED_KEY = re.compile(r'Detected duplicate key "(.*)" at line \d+ column \d+', re.DOTALL)


def media_type(request: Request) -> str:
    """The body's media type. A body under a content coding (gzip, br, …) is refused: it would be read as
    an unknown image, or, worse, as a known one (RFC 9110 §15.5.16: 415)."""
    # Every Content-Encoding line counts (a second one would otherwise go unread), each a list.
    codings = ",".join(request.headers.getlist("content-encoding") or ["identity"]).lower().split(",")
    if any(coding.strip() != "identity" for coding in codings):
        raise UnsupportedMediaType("send the body without a content coding (Content-Encoding)")
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_image(request: Request) -> tuple[bytes, dict[str, Any]]:
    """The image bytes of a `/detect` request and the options its body gives (JSON or multipart)."""
    kind = media_type(request)
    if kind == "multipart/form-data":
        files, options = await read_form(request, "image", max_files=1)
        return files[0], options
    if kind == "application/json":
        return _from_json(await request.body())
    if kind == "application/octet-stream" or (kind.startswith("image/") and len(kind) > len("image/")):
        return await request.body(), {}
    raise UnsupportedMediaType(
        "send multipart/form-data, image/*, application/octet-stream or application/json, "
        f"not {kind or 'no type'}"
    )


async def read_form(request: Request, field: str, max_files: int) -> tuple[list[bytes], dict[str, Any]]:
    """The bytes of every file named `field`, in order (at least one), and the options in the other
    fields: any other field must be an option, as any other key of a JSON body must."""
    if media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType(f"send multipart/form-data with file fields named {field!r}")
    parser = _CompleteMultiPartParser(
        request.headers, request.stream(), max_files=max_files, max_fields=_MAX_FORM_FIELDS
    )
    async with aclosing(parser.stream):  # closed even when the parser stops early
        try:
            form = await parser.parse()
        except MultiPartException as exc:  # its messages name the limit or the syntax, never the input
            if exc.message.startswith("Too many files"):  # Starlette's words (the corpus pins them)
                raise InvalidOption(
                    "/detect takes one file; /detect/batch takes several"
                    if max_files == 1
                    else f"a batch holds at most {max_files} images (MAX_BATCH_IMAGES)"
                ) from exc
            if exc.message.startswith("Too many fields"):
                raise InvalidOption(
                    f"a form holds at most {_MAX_FORM_FIELDS} text fields (the options)"
                ) from exc
            raise InputError(f"malformed multipart body: {exc.message}") from exc
    try:
        uploads = [item for item in form.getlist(field) if isinstance(item, UploadFile)]
        if not uploads:
            raise InvalidOption(f"multipart body has no file field named {field!r}")
        fields = [(key, value) for key, value in form.multi_items() if key != field]
        refuse_repeated(fields, "multipart body")
        options = RequestOptions.model_validate(dict(fields))
        return [await upload.read() for upload in uploads], options.given()
    finally:
        await form.close()


class _CompleteMultiPartParser(MultiPartParser):
    """Starlette's parser, refusing a body that ends before its closing boundary: python-multipart does
    not check it (`finalize()` is a no-op), so a batch cut short came back with its last image missing."""

    def __init__(self, headers: Headers, stream: AsyncGenerator[bytes, None], **limits: int) -> None:
        super().__init__(headers, self._checked(stream), **limits)
        self.closed = False

    def on_end(self) -> None:  # python-multipart's "end": the closing boundary was parsed
        self.closed = True

    async def _checked(self, stream: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        # Raised as the body ends, inside the parser's loop, so that it closes the files it opened.
        async with aclosing(stream):
            async for chunk in stream:
                yield chunk
        if not self.closed:
            raise MultiPartException("the body ends before the closing boundary")


def _from_json(body: bytes) -> tuple[bytes, dict[str, Any]]:
    if max(body.count(b","), body.count(b":")) > _MAX_JSON_SEPARATORS:
        raise InvalidOption("the JSON body has more members or items than a detection request")
    _refuse_repeated_keys(body)
    try:
        # Strict: JSON has types, so a string or a boolean where a number belongs is refused (the
        # query string and form fields, all text, are parsed); every error but bad syntax is an
        # InvalidOption already (see RequestOptions).
        document = DetectJsonRequest.model_validate_json(body, strict=True)
    except ValidationError:
        raise InvalidOption("body is not valid JSON") from None
    encoded = document.image
    if encoded.startswith("data:"):  # tolerate a data URL, as browsers produce
        encoded = encoded.partition(",")[2]
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ImageDecodeError('"image" is not valid base64') from None
    return data, document.given()


def _refuse_repeated_keys(body: bytes) -> None:
    """A key given twice in the JSON body is refused, as in a query string or form: pydantic would take
    the last, and a proxy in front may have read the first. Bad syntax is left to pydantic to report."""
    try:
        jiter.from_json(body, catch_duplicate_keys=True, cache_mode=False)
    except ValueError as exc:
        repeated = _REPEATED_KEY.fullmatch(str(exc))
        if repeated:
            refuse_repeated([(repeated[1], None)] * 2, "JSON body", DetectJsonRequest)
            raise InvalidOption("a key is given more than once in the JSON body") from None
