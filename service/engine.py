"""The serving engine: admit → decode off the event loop → micro-batch → faces, with per-stage timings.

It knows nothing of HTTP; the API turns its results and errors into responses.

A request is priced before any of its pixels is decoded: its headers are read on the event loop
(`inspect`: microseconds, and ~0.3 ms per MB to count a JPEG's scans), then it takes places in its
model's batch queue and its pixels from the decode budget, all of them or none: a refusal comes at once
(429, or 413 for what could never fit), so nothing is decoded or computed for a refused request. An
image still waiting for a decode thread at its deadline is dropped undecoded (504 at the deadline), and
when one image of a request fails, its siblings are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.backends.base import Backend, ModelOutputs
from service.batching import BatchingOptions, MicroBatcher, Reservation
from service.errors import (
    BackendUnavailable,
    DeadlineExceeded,
    InputError,
    Overloaded,
    ServiceError,
)
from service.imaging import preprocess
from service.imaging.decode import inspect
from service.imaging.letterbox import Letterbox
from service.imaging.probe import ImageInfo
from service.observer import Observer
from service.options import DetectOptions
from service.postprocess import Face, candidates_from_tensors, faces_from_candidates
from service.settings import Settings
from service.specs import MODELS

# Up to this many candidates, post-processing is a little numpy (the test photos have at most 27 over the
# default thresholds: 4-5 per face): cheaper inline than a hop to a thread (loadtest/RESULTS.md #6).
# Past it, up to the graph's top_k (100), its Python loops grow with the count (a low min_score), so it
# leaves the event loop.
INLINE_CANDIDATES = 32
# Below the event loop's priority, not starved: on an idle core a niced thread runs at full speed.
DECODE_NICENESS = 19


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
    candidates_truncated: bool = False  # all the graph's top_k candidates were over the threshold


class PixelBudget:
    """Pixels (as the headers declare them) of the images decoding or waiting for a decode thread.

    A decode's time grows with its pixels, so this bounds the work waiting: a request takes its images'
    pixels together, or is refused at once rather than answered after its deadline. A request larger than
    the whole budget (a legitimate batch of many large photos) is admitted only while nothing else is
    held: it then waits for no one, and its own deadline bounds its work (decodes still queued at the
    deadline are dropped). Memory is not at stake here: only the decode threads hold decoded pixels.

    Once a request has been refused for room, the budget counts as `full` (new requests are refused
    before their body is read, `Engine.check_room`) until the decoders have worked it down to its
    low-water mark: under overload most refusals then cost no upload, and the decoders still have
    LOW_WATER of the budget queued when admission reopens.
    """

    LOW_WATER = 0.75  # of the capacity

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._refusing = False

    def take(self, pixels: int) -> None:
        if self.used and self.used + pixels > self.capacity:
            # (Not when the room is there and only this request is too big: nothing would reopen it soon.)
            self._refusing = self.used > self.LOW_WATER * self.capacity
            raise Overloaded(
                f"decoders hold or expect {self.used} of {self.capacity} pixels", retry_after_s=1
            )
        self.used += pixels

    def release(self, pixels: int) -> None:
        self.used -= pixels
        if self.used <= self.LOW_WATER * self.capacity:
            self._refusing = False

    @property
    def full(self) -> bool:
        return self._refusing or self.used >= self.capacity


def _decode_thread_started() -> None:
    """Decode threads yield the CPU to the event loop: under overload the loop must still read requests
    and refuse them at once, and decodes take what CPU is left (a niced thread, Linux: per thread)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)


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
        # Room for two full-size images per decode thread: one decoding, one waiting its turn.
        budget = settings.decode_pixel_budget or 2 * settings.max_pixels * self._decode_threads
        if budget < settings.max_pixels:
            raise ValueError("DECODE_PIXEL_BUDGET below MAX_PIXELS: some images within the limit never fit")
        self._budget = PixelBudget(budget)
        # One thread: long post-processing is Python loops under the GIL, so more threads would add no
        # throughput, only take the GIL from the event loop more often.
        self._postprocessor: ThreadPoolExecutor | None = None

    async def _infer(self, model: str, batch: np.ndarray) -> ModelOutputs:
        try:
            return await self.backend.infer(model, batch)
        except ServiceError as exc:
            self.observer.on_backend_error(type(exc).__name__)
            raise

    async def start(self) -> None:
        self._decoder = ThreadPoolExecutor(
            self._decode_threads, thread_name_prefix="decode", initializer=_decode_thread_started
        )
        self._postprocessor = ThreadPoolExecutor(1, thread_name_prefix="postprocess")
        await self.backend.start()
        for batcher in self._batchers.values():
            batcher.start()

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        await self.backend.close()
        for pool in (self._decoder, self._postprocessor):
            if pool is not None:
                pool.shutdown(wait=True)
        self._decoder = self._postprocessor = None

    async def ready(self) -> bool:
        return await self.backend.ready()

    def check_room(self, model: str) -> None:
        """Refuse at once (429), before the request's body is even read, when it could not be admitted
        anyway: the model's queue or the decode budget is full. Admission proper, priced by the image
        headers, follows once the body is in."""
        if self._budget.full or not self._batchers[model].has_room():
            raise Overloaded(f"no room for another {model} image now", retry_after_s=1)

    async def detect(
        self, data: bytes, options: DetectOptions, deadline: float | None = None
    ) -> DetectResult:
        """One image; `deadline` is a `time.perf_counter()` instant (default: now + request timeout)."""
        (result,) = await self.detect_many([data], options, deadline)
        if isinstance(result, InputError):
            raise result
        return result

    async def detect_many(
        self, images: Sequence[bytes], options: DetectOptions, deadline: float | None = None
    ) -> list[DetectResult | InputError]:
        """The images of one request, admitted together, in order: each a result or its own InputError
        (that image is bad); any other error fails the request, and nothing more is computed for it."""
        started = time.perf_counter()
        if deadline is None:
            deadline = started + self.settings.request_timeout_s
        if self._decoder is None:
            raise BackendUnavailable("service is not started")
        outcomes: dict[int, DetectResult | InputError] = {}
        admitted: dict[int, ImageInfo] = {}
        for index, data in enumerate(images):
            try:
                admitted[index] = inspect(
                    data, max_pixels=self.settings.max_pixels, max_jpeg_scans=self.settings.max_jpeg_scans
                )
            except InputError as exc:
                outcomes[index] = exc
        if admitted:
            with self._batchers[options.model].reserve(len(admitted)) as places:
                self._budget.take(sum(info.pixels for info in admitted.values()))
                decodes = {
                    index: self._decode(images[index], info, options) for index, info in admitted.items()
                }
                try:
                    async with asyncio.TaskGroup() as group:
                        tasks = {
                            index: group.create_task(
                                self._finish(decoding, places, options, started, deadline)
                            )
                            for index, decoding in decodes.items()
                        }
                except* ServiceError as failed:
                    first = failed.exceptions[0]
                    raise first from first.__cause__  # its own cause stays in the logged chain
                finally:
                    for decoding in decodes.values():
                        decoding.cancel()  # a decode still queued is dropped (a running one finishes)
            outcomes.update((index, task.result()) for index, task in tasks.items())
        return [outcomes[index] for index in range(len(images))]

    def _decode(
        self, data: bytes, info: ImageInfo, options: DetectOptions
    ) -> Future[tuple[np.ndarray, Letterbox]]:
        """Queue one image's decode; its pixels go back to the budget when it ends or is dropped unstarted."""
        assert self._decoder is not None
        loop = asyncio.get_running_loop()
        decoding = self._decoder.submit(
            preprocess,
            data,
            options.spec.input_size,
            options.preprocess,
            max_pixels=self.settings.max_pixels,
            info=info,
        )
        decoding.add_done_callback(lambda _: loop.call_soon_threadsafe(self._budget.release, info.pixels))
        return decoding

    async def _finish(
        self,
        decoding: Future[tuple[np.ndarray, Letterbox]],
        places: Reservation,
        options: DetectOptions,
        started: float,
        deadline: float,
    ) -> DetectResult | InputError:
        """One admitted image: its decode, its batch, its faces."""
        try:
            # On timeout, wait_for cancels the wrapper, and with it the decode if it has not started.
            tensor, letterbox = await asyncio.wait_for(
                asyncio.wrap_future(decoding), deadline - time.perf_counter()
            )
        except TimeoutError:
            raise DeadlineExceeded("deadline passed waiting for a decoder or decoding") from None
        except InputError as exc:
            return exc
        decoded = time.perf_counter()
        remaining = deadline - decoded
        if remaining <= 0:
            raise DeadlineExceeded("deadline passed while decoding")
        batch = await places.submit(tensor, remaining)
        inferred = time.perf_counter()
        found = candidates_from_tensors(batch.outputs, options)
        if len(found.detections) <= INLINE_CANDIDATES:
            faces = faces_from_candidates(found, letterbox, options)
        else:
            faces = await asyncio.get_running_loop().run_in_executor(
                self._postprocessor, faces_from_candidates, found, letterbox, options
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
            self.observer.on_stage(stage, getattr(timing, stage) / 1e3)
        self.observer.on_faces(options.model, len(faces))
        width, height = letterbox.image_width, letterbox.image_height
        return DetectResult(options.model, width, height, faces, timing, found.truncated)
