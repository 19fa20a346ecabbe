"""Bodies that never end: a multipart body without its closing boundary, an upload that stalls. In process,
at the ASGI level (no server, no backend)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import Message

from service.api.app import create_app
from service.api.uploads import read_form
from service.errors import InputError
from service.settings import Settings
from tests.api.conftest import ScriptedBackend, jpeg

BOUNDARY = "unitboundary"


def http_scope(path: str, content_type: str, length: int) -> dict[str, object]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(length).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


def batch_body(count: int) -> tuple[bytes, bytes]:
    """The parts of a `/detect/batch` body, and the same body with its closing boundary."""
    parts = b"".join(
        f'--{BOUNDARY}\r\ncontent-disposition: form-data; name="images"; filename="{i}.jpg"\r\n\r\n'.encode()
        + jpeg(32 + i, 32)
        + b"\r\n"
        for i in range(count)
    )
    return parts, parts + f"--{BOUNDARY}--\r\n".encode()


async def form_of(body: bytes) -> list[bytes]:
    chunks = iter([{"type": "http.request", "body": body, "more_body": False}])

    async def receive() -> Message:
        return next(chunks)

    scope = http_scope("/detect/batch", f"multipart/form-data; boundary={BOUNDARY}", len(body))
    images, _ = await read_form(Request(scope, receive), "images", max_files=8)
    return images


@pytest.mark.parametrize("cut", ["no closing boundary", "inside the last part"])
async def test_a_multipart_body_cut_short_is_malformed(cut: str) -> None:
    parts, complete = batch_body(3)
    assert len(await form_of(complete)) == 3
    body = parts if cut == "no closing boundary" else parts[:-20]
    with pytest.raises(InputError, match="closing boundary") as raised:
        await form_of(body)
    assert raised.value.status == 400


async def test_a_stalled_upload_is_answered_408() -> None:
    app = create_app(Settings(upload_timeout_s=0.2), backend=ScriptedBackend())
    first = iter([{"type": "http.request", "body": b"\xff" * 10, "more_body": True}])
    stalled = asyncio.Event()  # never set: the client sends nothing more, and stays connected

    async def receive() -> Message:
        message = next(first, None)
        if message is None:
            await stalled.wait()
        return message  # type: ignore[return-value]

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    # Bounded here: before the timeout existed this call never returned.
    await asyncio.wait_for(app(http_scope("/detect", "image/jpeg", 1000), receive, send), 5)
    start = sent[0]
    assert start["status"] == 408
    assert (b"connection", b"close") in start["headers"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert orjson.loads(body)["status"] == 408


def test_the_upload_buffer_defaults_to_sixteen_largest_bodies_and_holds_at_least_one() -> None:
    assert Settings(max_body_bytes=4096).upload_buffer_bytes == 16 * 4096
    assert Settings(max_body_bytes=4096, upload_buffer_bytes=4096).upload_buffer_bytes == 4096
    with pytest.raises(ValidationError, match=r"UPLOAD_BUFFER_BYTES \(4095\) must be 0 or at least"):
        Settings(max_body_bytes=4096, upload_buffer_bytes=4095)
