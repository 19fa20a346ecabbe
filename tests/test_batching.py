"""MicroBatcher with a scripted backend: grouping, limits, deadlines, errors, shutdown."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.backends.base import ModelOutputs
from service.batching import BatchingOptions, MicroBatcher
from service.errors import BackendUnavailable, BatchTooLarge, DeadlineExceeded, Overloaded

K = 4


class ScriptedBackend:
    """Echoes each image's first pixel into its outputs so results can be matched to requests."""

    def __init__(self, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.delay_s = delay_s
        self.error = error
        self.batch_sizes: list[int] = []
        self.release = asyncio.Event()
        self.release.set()

    async def infer(self, model: str, batch: np.ndarray) -> ModelOutputs:
        self.batch_sizes.append(len(batch))
        await self.release.wait()
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        marker = batch[:, 0, 0, 0]
        return ModelOutputs(
            scores=np.repeat(marker[:, None], K, axis=1).astype(np.float32),
            anchor_indices=np.repeat(marker[:, None], K, axis=1).astype(np.int32),
            regressors=np.repeat(marker[:, None, None], K * 16, axis=1).reshape(len(batch), K, 16),
        )


def image(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, np.uint8)


async def run_batcher(backend: ScriptedBackend, options: BatchingOptions):
    batcher = MicroBatcher("short", backend.infer, options)
    batcher.start()
    return batcher


@pytest.mark.parametrize("max_wait_s", [0.0, 0.02])
async def test_each_request_gets_its_own_slice(max_wait_s: float) -> None:
    backend = ScriptedBackend()
    batcher = await run_batcher(backend, BatchingOptions(max_batch=8, max_wait_s=max_wait_s))
    results = await asyncio.gather(*(batcher.submit(image(i), 5.0) for i in range(20)))
    assert [int(r.outputs.scores[0]) for r in results] == list(range(20))
    for i, result in enumerate(results):  # every output sliced to its own image's row
        scores, anchor_indices, regressors = result.outputs
        assert scores.shape == anchor_indices.shape == (K,) and regressors.shape == (K, 16)
        assert (scores == i).all() and (anchor_indices == i).all() and (regressors == i).all()
    assert sum(backend.batch_sizes) == 20
    assert max(backend.batch_sizes) <= 8
    await batcher.close()


async def test_concurrent_requests_share_a_batch() -> None:
    backend = ScriptedBackend()
    batcher = await run_batcher(backend, BatchingOptions(max_batch=8, max_wait_s=0.05))
    results = await asyncio.gather(*(batcher.submit(image(i), 5.0) for i in range(8)))
    assert backend.batch_sizes == [8]  # full batch dispatched without waiting out max_wait
    assert all(r.batch_size == 8 for r in results)
    await batcher.close()


async def test_batch_size_one_never_groups() -> None:
    backend = ScriptedBackend()
    batcher = await run_batcher(backend, BatchingOptions(max_batch=1, max_wait_s=0.05))
    await asyncio.gather(*(batcher.submit(image(i), 5.0) for i in range(5)))
    assert backend.batch_sizes == [1] * 5
    await batcher.close()


async def test_backend_error_reaches_every_waiter() -> None:
    backend = ScriptedBackend(error=BackendUnavailable("down"))
    batcher = await run_batcher(backend, BatchingOptions(max_batch=4, max_wait_s=0.01))
    results = await asyncio.gather(*(batcher.submit(image(i), 5.0) for i in range(4)), return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results)
    # The worker survives the error: the next request is served.
    backend.error = None
    assert int((await batcher.submit(image(7), 5.0)).outputs.scores[0]) == 7
    await batcher.close()


async def test_unexpected_backend_exception_becomes_unavailable() -> None:
    backend = ScriptedBackend(error=ZeroDivisionError())
    batcher = await run_batcher(backend, BatchingOptions(max_batch=2, max_wait_s=0.0))
    with pytest.raises(BackendUnavailable):
        await batcher.submit(image(1), 5.0)
    await batcher.close()


async def test_full_queue_is_refused_at_once() -> None:
    backend = ScriptedBackend()
    backend.release.clear()  # hold the first batch so the queue fills up
    batcher = await run_batcher(backend, BatchingOptions(max_batch=1, max_wait_s=0.0, max_queue=3))
    first = asyncio.ensure_future(batcher.submit(image(0), 5.0))
    await asyncio.sleep(0.01)  # image 0 is now inside the held backend call
    queued = [asyncio.ensure_future(batcher.submit(image(i), 5.0)) for i in range(1, 4)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded) as refused:
        await batcher.submit(image(9), 5.0)
    assert refused.value.retry_after_s >= 1
    backend.release.set()
    results = await asyncio.gather(first, *queued)
    assert [int(r.outputs.scores[0]) for r in results] == [0, 1, 2, 3]
    assert batcher.depth == 0
    await batcher.close()


async def test_a_reservation_is_all_or_nothing_and_frees_what_it_did_not_use() -> None:
    backend = ScriptedBackend()
    # The first image waits 0.2 s in the queue for company, long enough to look at the queue.
    batcher = await run_batcher(backend, BatchingOptions(max_batch=8, max_wait_s=0.2, max_queue=4))
    with pytest.raises(BatchTooLarge):  # never fits: not worth a retry
        batcher.reserve(5)
    with batcher.reserve(3) as places:
        with pytest.raises(Overloaded):  # 3 + 2 > 4: refused whole, not 1 of the 2 taken
            batcher.reserve(2)
        with batcher.reserve(1):  # 3 + 1 fits
            pass
        first = asyncio.ensure_future(places.submit(image(1), 5.0))
        await asyncio.sleep(0.01)
        assert batcher.depth == 1
    # Leaving the block gave back the two places never used; the queued image still holds its own.
    with pytest.raises(Overloaded):
        batcher.reserve(4)
    with batcher.reserve(3):
        pass
    assert int((await first).outputs.scores[0]) == 1
    with batcher.reserve(4):
        pass
    await batcher.close()


async def test_deadline_raises_and_skips_the_expired_item() -> None:
    backend = ScriptedBackend()
    backend.release.clear()
    batcher = await run_batcher(backend, BatchingOptions(max_batch=1, max_wait_s=0.0))
    held = asyncio.ensure_future(batcher.submit(image(0), 5.0))
    await asyncio.sleep(0.01)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(image(1), 0.05)
    backend.release.set()
    await held
    await asyncio.sleep(0.01)
    assert backend.batch_sizes == [1]  # the expired image was never computed
    await batcher.close()


async def test_close_fails_queued_requests() -> None:
    backend = ScriptedBackend()
    backend.release.clear()
    batcher = await run_batcher(backend, BatchingOptions(max_batch=1, max_wait_s=0.0))
    running = asyncio.ensure_future(batcher.submit(image(0), 5.0))
    await asyncio.sleep(0.01)
    queued = asyncio.ensure_future(batcher.submit(image(1), 5.0))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0.01)
    backend.release.set()  # the running batch still finishes
    await closing
    assert int((await running).outputs.scores[0]) == 0
    with pytest.raises(BackendUnavailable):
        await queued
    with pytest.raises(BackendUnavailable):
        await batcher.submit(image(2), 1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_batch": 0},
        {"max_queue": 0},
        {"max_inflight": 0},
        {"max_wait_s": -1.0},
        {"max_wait_s": float("nan")},
    ],
)
def test_options_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BatchingOptions(**kwargs)  # type: ignore[arg-type]
