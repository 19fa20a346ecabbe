"""System shared memory for the Triton backend: the pool of regions a call's tensors travel through.

    regions = RegionPool(client, prefix, settings, LIBRARY_ERRORS)  # one per TritonBackend
    region = regions.acquire(spec, rows)      # None: no region for this call; it goes over the socket
    await regions.register(region, deadline)  # a no-op while Triton still holds the registration
    region.write_input(batch)                 # then infer, tensors at `region.slots(rows)`
    regressors, logits = region.read_outputs(rows)
    regions.release(region)                   # or regions.retire(region): never to be reused
    await regions.close()

The input batch and both outputs travel through POSIX shared memory registered with Triton, so only
small messages cross the socket — useful only when Triton runs on the same host (it must see our
/dev/shm). Each in-flight call holds one region (input, regressors and logits at fixed offsets) from a
per-model pool; the pool grows to `shm_max_regions` and calls beyond that go over the socket instead of
waiting. Triton forgets registrations when it restarts: the backend calls `forget_registrations()` on a
NOT_FOUND or UNAVAILABLE answer, which marks every region for re-registration (and retries a NOT_FOUND
call once). After a deadline or a cancellation Triton may still run the request and write into its
region later, so that region is retired: unlinked at once and never reused (Triton's registration of it
is dropped a little later). `close()` unregisters and unlinks every region.

Errors. `acquire`, `register` and the region's reads and writes raise the libraries' own errors;
`TritonBackend` translates them (`translate_error`). So "no region" (`acquire` returns None) stays apart
from "no region could be made" (`acquire` raises) and "Triton could not register it" (`register` raises).
Cleanup is best effort and ignores `cleanup_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import tritonclient.utils.shared_memory as shm

from service.specs import MODELS, ModelSpec

if TYPE_CHECKING:
    import tritonclient.grpc.aio as triton

    from service.backends.triton import TritonSettings  # only a type: triton.py imports this module


def _tensor_bytes(spec: ModelSpec, rows: int) -> tuple[int, int, int]:
    """Bytes of a `rows`-image call's input (uint8), regressors and logits (float32)."""
    anchors = spec.decoder.num_boxes
    return (
        rows * spec.input_size * spec.input_size * 3,
        rows * anchors * spec.decoder.num_coords * 4,
        rows * anchors * 4,
    )


@dataclass
class Region:
    """One shared-memory object holding a call's input and both outputs, registered with Triton."""

    name: str  # Triton's name for it; also the POSIX key without its leading "/"
    spec: ModelSpec
    capacity: int  # images it holds
    handle: shm.SharedMemoryRegion
    registered: int = -1  # the pool's registration generation it was last registered in

    @property
    def size(self) -> int:
        return sum(_tensor_bytes(self.spec, self.capacity))

    def slots(self, rows: int) -> list[tuple[int, int]]:
        """(bytes, offset) of a `rows`-image call's input, regressors and logits; offsets are fixed."""
        full = _tensor_bytes(self.spec, self.capacity)
        offsets = (0, full[0], full[0] + full[1])
        return list(zip(_tensor_bytes(self.spec, rows), offsets, strict=True))

    def write_input(self, batch: np.ndarray) -> None:
        shm.set_shared_memory_region(self.handle, [batch])

    def read_outputs(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies: the region is reused by the next call as soon as this one returns."""
        anchors, coords = self.spec.decoder.num_boxes, self.spec.decoder.num_coords
        _, (_, regressors_at), (_, logits_at) = self.slots(rows)
        regressors = shm.get_contents_as_numpy(
            self.handle, np.float32, (rows, anchors, coords), regressors_at
        )
        logits = shm.get_contents_as_numpy(self.handle, np.float32, (rows, anchors, 1), logits_at)
        return regressors.copy(), logits.copy()


class RegionPool:
    """The shared-memory regions of one backend, per model, and their registrations with Triton."""

    def __init__(
        self,
        client: triton.InferenceServerClient,
        prefix: str,
        settings: TritonSettings,
        cleanup_errors: tuple[type[Exception], ...],
    ) -> None:
        self._client = client
        self._prefix = prefix  # unique per backend: region names must not clash across API workers
        self._settings = settings  # shm_max_batch, shm_max_regions and the timeouts
        # Passed in rather than imported: they are the backend's LIBRARY_ERRORS, and triton.py imports us.
        self._cleanup_errors = cleanup_errors
        self._idle: dict[str, list[Region]] = {model: [] for model in MODELS}
        self._live: dict[str, list[Region]] = {model: [] for model in MODELS}
        self._created = 0  # names are never reused: Triton may still hold a retired one
        # Regions given up after a deadline or cancellation, by name: still registered with Triton.
        self._retired: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Bumped whenever Triton may have lost our registrations (restart); regions re-register lazily.
        self._generation = 0
        self._closed = False

    def acquire(self, spec: ModelSpec, rows: int) -> Region | None:
        """An idle region, or a new one; None when the batch is too big or every region is in use."""
        capacity = self._settings.shm_max_batch
        if rows > capacity:
            return None
        idle = self._idle[spec.name]
        if idle:
            return idle.pop()
        live = self._live[spec.name]
        if len(live) >= self._settings.shm_max_regions:
            return None
        name = f"{self._prefix}-{spec.name}-{self._created}"
        self._created += 1
        size = sum(_tensor_bytes(spec, capacity))
        handle = shm.create_shared_memory_region(name, "/" + name, size, create_only=True)
        region = Region(name, spec, capacity, handle)
        live.append(region)
        return region

    async def register(self, region: Region, deadline: float) -> None:
        """Register the region with Triton unless it still is; `deadline` is on `time.monotonic()`."""
        if region.registered == self._generation:
            return
        generation = self._generation
        # Drop a registration Triton may still hold under this name (we could not tell it restarted).
        await self._client.unregister_system_shared_memory(region.name, client_timeout=time_left(deadline))
        await self._client.register_system_shared_memory(
            region.name, "/" + region.name, region.size, client_timeout=time_left(deadline)
        )
        region.registered = generation

    def forget_registrations(self) -> None:
        """Triton restarted (or is down): every region registers again before its next use."""
        self._generation += 1

    def release(self, region: Region) -> None:
        """Back to the pool for the next call (or destroyed, if the pool closed meanwhile)."""
        if self._closed:
            self._destroy(region)
        else:
            self._idle[region.spec.name].append(region)

    def retire(self, region: Region) -> None:
        """Unmap and unlink the region now (late writes then reach no one), unregister it later."""
        self._destroy(region)
        if self._closed:
            return  # `close()` already unregistered it
        self._live[region.spec.name].remove(region)
        self._retired.add(region.name)
        task = asyncio.get_running_loop().create_task(self._unregister_later(region.name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Unregister and unlink every region; those still in use are unlinked when released or retired."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        names = set(self._retired)
        for model, live in self._live.items():
            names.update(region.name for region in live)
            for region in self._idle[model]:
                self._destroy(region)
            self._idle[model].clear()
            live.clear()
        for name in sorted(names):
            # Best effort: Triton may be gone, and its registrations with it.
            with contextlib.suppress(*self._cleanup_errors):
                await self._client.unregister_system_shared_memory(
                    name, client_timeout=self._settings.ready_timeout_s
                )
        self._retired.clear()

    async def _unregister_later(self, name: str) -> None:
        # Long enough for a request that overran our deadline to leave Triton's queue.
        await asyncio.sleep(10 * self._settings.timeout_s)
        with contextlib.suppress(*self._cleanup_errors):
            await self._client.unregister_system_shared_memory(
                name, client_timeout=self._settings.ready_timeout_s
            )
            self._retired.discard(name)

    def _destroy(self, region: Region) -> None:
        """Unmap and unlink our side of a region (Triton keeps its mapping until unregistered)."""
        # BufferError: a view of the buffer is still alive; the OS reclaims it at exit then.
        with contextlib.suppress(*self._cleanup_errors, BufferError):
            shm.destroy_shared_memory_region(region.handle)


def time_left(deadline: float) -> float:
    """The time to `deadline` (on `time.monotonic()`), as a gRPC timeout: it must be positive."""
    return max(deadline - time.monotonic(), 1e-3)
