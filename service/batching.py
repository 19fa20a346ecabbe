"""Micro-batching: concurrent single-image requests for one model become one backend call.

Shape (after Ray Serve's `serve/batching.py`): a bounded deque of (tensor, future); a worker that waits
for the first item, then for the batch to fill or `max_wait` to pass since that item arrived; one backend
call per batch; its result (or its error) set on every waiting future. A request that times out or is
cancelled while queued is skipped, never computed.

Admission is per request, before its images are decoded: `reserve(n)` holds n places in the queue for
all of a request's images at once, or refuses at once (429 while the queue is too full now, 413 for more
images than it ever holds), so no image of a refused request is decoded or computed.

    with batcher.reserve(len(tensors)) as places:   # Overloaded / BatchTooLarge here, or not at all
        result = await places.submit(tensor, timeout_s)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from service.backends.base import ModelOutputs
from service.errors import BackendUnavailable, BatchTooLarge, DeadlineExceeded, Overloaded, ServiceError
from service.observer import Observer

log = logging.getLogger(__name__)

InferFn = Callable[[str, np.ndarray], Awaitable[ModelOutputs]]


@dataclass(frozen=True)
class BatchingOptions:
    """Example: ``BatchingOptions(max_batch=16, max_wait_s=0.001, max_queue=128)``."""

    max_batch: int = 16  # images per backend call
    max_wait_s: float = 0.001  # how long the first image of a batch waits for company
    max_queue: int = 128  # queued images before submit() raises Overloaded (→ 429)
    max_inflight: int = 1  # backend calls running at once for this model

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_inflight < 1:
            raise ValueError("max_batch, max_queue and max_inflight must be >= 1")
        if not math.isfinite(self.max_wait_s) or self.max_wait_s < 0:
            raise ValueError("max_wait_s must be a finite number >= 0")


@dataclass(frozen=True)
class BatchResult:
    """One image's slice of a batch's output, with where its time went."""

    outputs: ModelOutputs  # this image's row: (K,) scores, (K,) anchor indices, (K, 16) regressors
    queue_s: float  # enqueue → its batch's backend call starts
    inference_s: float  # the backend call
    batch_size: int


@dataclass
class _Pending:
    tensor: np.ndarray
    future: asyncio.Future[BatchResult]
    enqueued: float


class Reservation:
    """Places held in a batcher's queue for one request's images; leaving the `with` frees those unused."""

    def __init__(self, batcher: MicroBatcher, places: int) -> None:
        self._batcher = batcher
        self._left = places

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *_: object) -> None:
        self._batcher._reserved -= self._left
        self._left = 0

    async def submit(self, tensor: np.ndarray, timeout_s: float) -> BatchResult:
        """`MicroBatcher.submit` in one of the held places."""
        assert self._left > 0, "every reserved place is used"
        self._left -= 1
        self._batcher._reserved -= 1
        return await self._batcher._enqueue(tensor, timeout_s)


class MicroBatcher:
    def __init__(
        self,
        model: str,
        infer: InferFn,
        options: BatchingOptions,
        observer: Observer | None = None,
    ) -> None:
        self.model = model
        self._infer = infer
        self._options = options
        self._observer = observer or Observer()
        self._queue: deque[_Pending] = deque()
        self._reserved = 0  # places held for images still being decoded
        self._nonempty = asyncio.Event()
        self._full = asyncio.Event()
        self._slots = asyncio.Semaphore(options.max_inflight)
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def _taken(self) -> int:
        """Queue places in use: images queued and places reserved for images still decoding."""
        return len(self._queue) + self._reserved

    def start(self) -> None:
        if self._closed:
            raise RuntimeError("a closed batcher cannot be restarted")
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.model}")

    async def close(self) -> None:
        """Stop taking work; let running batches finish; fail whatever is still queued."""
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._queue:
            pending = self._queue.popleft()
            if not pending.future.done():
                pending.future.set_exception(BackendUnavailable("service is shutting down"))
        self._report_depth()

    def has_room(self) -> bool:
        """Whether one more image would be admitted now: a cheap check before a request's body is read."""
        return not self._closed and self._taken < self._options.max_queue

    def reserve(self, places: int) -> Reservation:
        """Hold `places` in the queue for one request's images, all or none."""
        if self._closed or self._worker is None:
            raise BackendUnavailable("service is shutting down")
        limit = self._options.max_queue
        if places > limit:
            raise BatchTooLarge(
                f"{places} images can never fit the {self.model} queue of {limit} (MAX_QUEUE)"
            )
        taken = self._taken
        if taken + places > limit:
            raise Overloaded(
                f"{self.model} queue holds or expects {taken} of {limit} images", retry_after_s=1
            )
        self._reserved += places
        return Reservation(self, places)

    async def submit(self, tensor: np.ndarray, timeout_s: float) -> BatchResult:
        """Queue one (S, S, 3) image and wait for its slice of a batch, at most `timeout_s`."""
        with self.reserve(1) as place:
            return await place.submit(tensor, timeout_s)

    async def _enqueue(self, tensor: np.ndarray, timeout_s: float) -> BatchResult:
        if self._closed:  # closed while the image was being decoded
            raise BackendUnavailable("service is shutting down")
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(tensor, future, time.perf_counter()))
        self._nonempty.set()
        if len(self._queue) >= self._options.max_batch:
            self._full.set()
        self._report_depth()
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            # wait_for cancelled the future, so the worker skips it if it is still queued.
            raise DeadlineExceeded(f"no result within {timeout_s:g} s") from None

    async def _loop(self) -> None:
        while True:
            await self._nonempty.wait()
            await self._slots.acquire()
            try:
                await self._wait_for_batch()
                batch = self._take_batch()
            except BaseException:
                self._slots.release()
                raise
            if not batch:
                self._slots.release()
                continue
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _wait_for_batch(self) -> None:
        deadline = self._queue[0].enqueued + self._options.max_wait_s
        while len(self._queue) < self._options.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._full.clear()
            try:
                await asyncio.wait_for(self._full.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        while self._queue and len(batch) < self._options.max_batch:
            pending = self._queue.popleft()
            if not pending.future.done():  # done = timed out or cancelled while queued
                batch.append(pending)
        if not self._queue:
            self._nonempty.clear()
        if len(self._queue) < self._options.max_batch:
            self._full.clear()
        self._report_depth()
        return batch

    async def _run(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            tensors = np.stack([pending.tensor for pending in batch])
            outputs = await self._infer(self.model, tensors)
        except ServiceError as exc:
            self._fail(batch, exc)
            return
        except Exception as exc:  # a backend bug must fail its requests, not kill the worker
            log.exception("backend call failed for model %s", self.model)
            self._fail(batch, BackendUnavailable(f"backend failed: {type(exc).__name__}"))
            return
        finally:
            self._slots.release()
        inference_s = time.perf_counter() - started
        self._observer.on_batch(self.model, len(batch), inference_s)
        for index, pending in enumerate(batch):
            if not pending.future.done():
                pending.future.set_result(
                    BatchResult(
                        outputs=outputs.row(index),
                        queue_s=started - pending.enqueued,
                        inference_s=inference_s,
                        batch_size=len(batch),
                    )
                )

    @staticmethod
    def _fail(batch: list[_Pending], exc: ServiceError) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)

    def _report_depth(self) -> None:
        self._observer.on_queue_depth(self.model, len(self._queue))
