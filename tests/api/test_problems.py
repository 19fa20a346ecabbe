"""Server errors are logged once with their causes; a client that went away is no server error; HEAD on
the probes. Scripted backend or no backend at all, in process."""

from __future__ import annotations

import logging

import httpx
import numpy as np
import pytest
from starlette.types import Message

from blazeface_tools.testkit.servers import app_in_thread
from service.api.app import create_app
from service.backends.base import ModelOutputs
from service.errors import BackendUnavailable
from service.observer import Observer
from service.settings import Settings
from tests.api.conftest import ScriptedBackend, jpeg


class FailingBackend(ScriptedBackend):
    """Fails as the Triton backend does: a library error translated with `raise … from`."""

    async def infer(self, model: str, batch: np.ndarray) -> ModelOutputs:
        try:
            raise ConnectionRefusedError("triton:8001 refused the connection")
        except ConnectionRefusedError as exc:
            raise BackendUnavailable("Triton unreachable") from exc


class StatusObserver(Observer):
    def __init__(self) -> None:
        self.statuses: list[tuple[str, int]] = []
        self.images: list[tuple[str, str]] = []

    def on_request(self, route: str, status: int, seconds: float) -> None:
        self.statuses.append((route, status))

    def on_image(self, model: str, outcome: str) -> None:
        self.images.append((model, outcome))


def test_an_image_refused_for_itself_is_counted_rejected_alone_as_in_a_batch() -> None:
    observer = StatusObserver()
    good, bad = jpeg(), jpeg()[:100]  # a truncated JPEG: 400
    with app_in_thread(create_app(Settings(), backend=ScriptedBackend(), observer=observer)) as url:
        for image in (good, bad):
            httpx.post(f"{url}/detect", content=image, headers={"content-type": "image/jpeg"})
        files = [("images", ("good.jpg", good, "image/jpeg")), ("images", ("bad.jpg", bad, "image/jpeg"))]
        httpx.post(f"{url}/detect/batch", files=files)
    assert [outcome for _, outcome in observer.images] == ["ok", "rejected", "ok", "rejected"]


def test_a_backend_failure_is_logged_once_with_its_cause(caplog: pytest.LogCaptureFixture) -> None:
    with app_in_thread(create_app(Settings(), backend=FailingBackend())) as url:
        caplog.clear()
        response = httpx.post(f"{url}/detect", content=jpeg(), headers={"content-type": "image/jpeg"})
    assert response.status_code == 503
    logged = [r for r in caplog.records if r.levelno >= logging.WARNING and "503" in r.getMessage()]
    assert len(logged) == 1, [r.getMessage() for r in caplog.records]
    message = logged[0].getMessage()
    assert "POST /detect" in message
    assert "BackendUnavailable: Triton unreachable" in message
    assert "ConnectionRefusedError: triton:8001 refused the connection" in message


async def test_an_unexpected_error_is_one_500_and_one_traceback(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(Settings(), backend=ScriptedBackend())

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    # Nothing escapes the app: Starlette's own handler re-raised, and uvicorn logged a second traceback.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "a bug" not in response.text
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and "GET /boom" in logged[0].getMessage()


async def test_a_client_gone_mid_upload_is_recorded_as_499() -> None:
    observer = StatusObserver()
    app = create_app(Settings(), backend=ScriptedBackend(), observer=observer)
    sent: list[Message] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/detect",
        "raw_path": b"/detect",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"image/jpeg"), (b"content-length", b"100000")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    messages = iter([{"type": "http.request", "body": b"\xff" * 1000, "more_body": True}])

    async def receive() -> Message:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)  # no exception escapes
    assert observer.statuses == [("/detect", 499)]


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_answer_head(path: str) -> None:
    with app_in_thread(create_app(Settings(), backend=ScriptedBackend())) as url:
        response = httpx.head(url + path)
        schema = httpx.get(url + "/openapi.json").json()
    assert response.status_code == 200
    assert response.content == b""
    assert list(schema["paths"][path]) == ["get"]  # HEAD stays out of the documented API
