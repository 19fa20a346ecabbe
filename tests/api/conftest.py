"""API tests against a real uvicorn server whose backend is scripted (no model needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import cv2
import numpy as np
import pytest

from blazeface_tools.testkit.servers import app_in_thread
from service.api.app import create_app
from service.backends.base import Backend, ModelOutputs
from service.errors import BackendUnavailable
from service.settings import Settings
from service.specs import MODELS


def no_faces(model: str, rows: int) -> ModelOutputs:
    """A batch's outputs with every candidate at score 0: no face over any positive threshold."""
    k = MODELS[model].top_k
    return ModelOutputs(
        scores=np.zeros((rows, k), np.float32),
        anchor_indices=np.tile(np.arange(k, dtype=np.int32), (rows, 1)),
        regressors=np.zeros((rows, k, 16), np.float32),
    )


class ScriptedBackend(Backend):
    """Answers "no face" for every image, after `delay_s`; `down` makes it fail like a dead server."""

    name = "scripted"

    def __init__(self) -> None:
        self.delay_s = 0.0
        self.down = False
        self.calls = 0

    async def infer(self, model: str, batch: np.ndarray) -> ModelOutputs:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.down:
            raise BackendUnavailable("scripted outage")
        return no_faces(model, len(batch))

    async def ready(self) -> bool:
        return not self.down


def jpeg(width: int = 64, height: int = 48) -> bytes:
    rng = np.random.default_rng(width * height)
    ok, buffer = cv2.imencode(".jpg", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    assert ok
    return buffer.tobytes()


def png(width: int = 40, height: int = 30) -> bytes:
    ok, buffer = cv2.imencode(".png", np.full((height, width, 3), 128, np.uint8))
    assert ok
    return buffer.tobytes()


@pytest.fixture
def scripted() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def make_server(scripted: ScriptedBackend) -> Iterator:
    """Factory: `make_server(**settings)` → URL of a running server with the scripted backend."""
    stack: list = []

    def start(**overrides: object) -> str:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        context = app_in_thread(create_app(settings, backend=scripted))
        stack.append(context)
        return context.__enter__()

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def server(make_server) -> str:  # type: ignore[no-untyped-def]
    return make_server(max_body_bytes=256 * 1024, max_pixels=4_000_000)
