"""The serving engine: prepare off the event loop → micro-batch → faces, with per-stage timings.

It knows nothing of HTTP; the API turns its results and errors into responses.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.backends.base import Backend
from service.batching import BatchingOptions, MicroBatcher
from service.errors import BackendUnavailable, DeadlineExceeded, ServiceError
from service.imaging import preprocess
from service.observer import Observer
from service.options import DetectOptions
from service.postprocess import Face, faces_from_tensors
from service.settings import Settings
from service.specs import MODELS


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


class Engine:
    def __init__(self, settings: Settings, backend: Backend, observer: Observer | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.observer = observer or Observer()
        options = BatchingOptions(
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_us / 1e6,
            max_queue=settings.max_queue,
            max_inflight=settings.max_inflight_batches,
        )
        self._batchers = {name: MicroBatcher(name, self._infer, options, self.observer) for name in MODELS}
        # Decoding is CPU-bound and releases the GIL. Two threads per core this process may use keep the
        # core busy while the other waits on Python work, yet keep decodes close to first-come first-served
        # instead of time-slicing dozens of them: same throughput as a 40-thread pool, lower p99
        # (loadtest/RESULTS.md).
        cores_here = max(1, (os.cpu_count() or 1) // settings.workers)
        self._decode_threads = settings.decode_threads or 2 * cores_here
        self._decoder: ThreadPoolExecutor | None = None

    async def _infer(self, model: str, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        try:
            return await self.backend.infer(model, batch)
        except ServiceError as exc:
            self.observer.on_backend_error(type(exc).__name__)
            raise

    async def start(self) -> None:
        self._decoder = ThreadPoolExecutor(self._decode_threads, thread_name_prefix="decode")
        await self.backend.start()
        for batcher in self._batchers.values():
            batcher.start()

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        await self.backend.close()
        if self._decoder is not None:
            self._decoder.shutdown(wait=True)
            self._decoder = None

    async def ready(self) -> bool:
        return await self.backend.ready()

    async def detect(
        self, data: bytes, options: DetectOptions, deadline: float | None = None
    ) -> DetectResult:
        """One image; `deadline` is a `time.perf_counter()` instant (default: now + request timeout)."""
        started = time.perf_counter()
        if deadline is None:
            deadline = started + self.settings.request_timeout_s
        if self._decoder is None:
            raise BackendUnavailable("service is not started")
        loop = asyncio.get_running_loop()
        # run_in_executor passes no keyword arguments, hence the partial.
        tensor, letterbox = await loop.run_in_executor(
            self._decoder,
            functools.partial(
                preprocess,
                data,
                options.spec.input_size,
                options.preprocess,
                max_pixels=self.settings.max_pixels,
            ),
        )
        decoded = time.perf_counter()
        remaining = deadline - decoded
        if remaining <= 0:
            raise DeadlineExceeded("deadline passed while decoding")
        batch = await self._batchers[options.model].submit(tensor, remaining)
        inferred = time.perf_counter()
        # Decoding only the candidates over the threshold keeps this a little numpy: cheaper inline than
        # a hop to a thread (loadtest/RESULTS.md #6), and it must not queue behind decodes.
        faces = faces_from_tensors(batch.regressors, batch.logits, letterbox, options)
        finished = time.perf_counter()
        timing = Timing(
            decode=(decoded - started) * 1e3,
            queue=batch.queue_s * 1e3,
            inference=batch.inference_s * 1e3,
            postprocess=(finished - inferred) * 1e3,
            total=(finished - started) * 1e3,
        )
        for stage in ("decode", "queue", "inference", "postprocess"):
            self.observer.on_stage(stage, getattr(timing, stage) / 1e3)
        self.observer.on_faces(options.model, len(faces))
        return DetectResult(options.model, letterbox.image_width, letterbox.image_height, faces, timing)
