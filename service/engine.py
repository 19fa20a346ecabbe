"""The serving engine: prepare off the event loop → micro-batch → faces, with per-stage timings.

It knows nothing of HTTP; the API turns its results and errors into responses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from service import metrics
from service.backends.base import Backend
from service.batching import BatchingOptions, MicroBatcher
from service.errors import DeadlineExceeded, ServiceError
from service.model.specs import MODELS
from service.options import DetectOptions
from service.pipeline import prepare
from service.postprocess import Face, faces_from_tensors
from service.settings import Settings


@dataclass(frozen=True)
class Timing:
    """Milliseconds per stage of one image."""

    decode: float
    queue: float
    inference: float
    postprocess: float
    total: float

    def server_timing(self) -> str:
        """The standard `Server-Timing` header value."""
        return ", ".join(f"{name};dur={value:.3f}" for name, value in self.__dict__.items())


@dataclass(frozen=True)
class DetectResult:
    model: str
    width: int
    height: int
    faces: list[Face]
    timing: Timing


def make_backend(settings: Settings) -> Backend:
    if settings.backend == "triton":
        from service.backends.triton import TritonBackend  # tritonclient only when asked for

        return TritonBackend.from_settings(settings)
    from service.backends.onnx import OnnxBackend

    return OnnxBackend(threads=settings.ort_threads)


class Engine:
    def __init__(self, settings: Settings, backend: Backend) -> None:
        self.settings = settings
        self.backend = backend
        options = BatchingOptions(
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_us / 1e6,
            max_queue=settings.max_queue,
            max_inflight=settings.max_inflight_batches,
        )
        observer = metrics.MetricsObserver()
        self._batchers = {name: MicroBatcher(name, self._infer, options, observer) for name in MODELS}

    async def _infer(self, model: str, batch):  # type: ignore[no-untyped-def]
        try:
            return await self.backend.infer(model, batch)
        except ServiceError as exc:
            metrics.BACKEND_ERRORS.labels(type(exc).__name__).inc()
            raise

    async def start(self) -> None:
        await self.backend.start()
        for batcher in self._batchers.values():
            batcher.start()

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        await self.backend.close()

    async def ready(self) -> bool:
        return await self.backend.ready()

    async def detect(
        self, data: bytes, options: DetectOptions, deadline: float | None = None
    ) -> DetectResult:
        """One image; `deadline` is a `time.perf_counter()` instant (default: now + request timeout)."""
        started = time.perf_counter()
        if deadline is None:
            deadline = started + self.settings.request_timeout_s
        tensor, letterbox = await run_in_threadpool(prepare, data, options, self.settings.max_pixels)
        decoded = time.perf_counter()
        remaining = deadline - decoded
        if remaining <= 0:
            raise DeadlineExceeded("deadline passed while decoding")
        batch = await self._batchers[options.model].submit(tensor, remaining)
        inferred = time.perf_counter()
        faces = await run_in_threadpool(
            faces_from_tensors, batch.regressors, batch.logits, letterbox, options
        )
        finished = time.perf_counter()
        timing = Timing(
            decode=(decoded - started) * 1e3,
            queue=batch.queue_s * 1e3,
            inference=batch.inference_s * 1e3,
            postprocess=(finished - inferred) * 1e3,
            total=(finished - started) * 1e3,
        )
        for stage in ("decode", "queue", "inference", "postprocess"):
            metrics.STAGE_SECONDS.labels(stage).observe(getattr(timing, stage) / 1e3)
        metrics.FACES.labels(options.model).observe(len(faces))
        return DetectResult(options.model, letterbox.image_width, letterbox.image_height, faces, timing)
