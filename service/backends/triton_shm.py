"""System shared memory for the Triton backend: the pool of regions a call's tensors travel through.

    regions = RegionPool(client, region_prefix(), settings, LIBRARY_ERRORS)  # one per TritonBackend
    await regions.remove_stale()              # at start: registrations left by dead processes of this host
    region = regions.acquire(spec, rows)      # None: no region for this call; it goes over the socket
    await regions.register(region, deadline)  # a no-op while Triton still holds the registration
    region.write_input(batch)                 # then infer, tensors at `region.slots(rows)`
    outputs = region.read_outputs(rows)       # a ModelOutputs
    regions.release(region)                   # or regions.retire(region): never to be reused
    await regions.close()

The input batch and the outputs travel through POSIX shared memory registered with Triton, so only
small messages cross the socket — useful only when Triton runs on the same host (it must see our
/dev/shm). Each in-flight call holds one region (the input, then each output, at fixed offsets) from a
per-model pool; the pool grows to `shm_max_regions` and calls beyond that go over the socket instead of
waiting. A region's pages are reserved when it is made (`posix_fallocate`): a full /dev/shm is then an
error at creation, which stops that model's pool growing (logged once), instead of a SIGBUS at the first
write. Triton forgets registrations when it restarts: the backend calls `forget_registrations()` on a
NOT_FOUND or UNAVAILABLE answer, which marks every region for re-registration (and retries a NOT_FOUND
call once). After a deadline or a cancellation Triton may still run the request and write into its
region later, so that region is retired: unlinked at once and never reused (Triton's registration of it
is dropped a little later). `close()` unregisters and unlinks every region.

Names. `region_prefix()` is `blazeface-<host hash>-<pid>-<process start>-<token>`: unique across API workers
and backends, and enough for `remove_stale()` to tell that a registration on Triton belongs to a process
of this host that is gone (a SIGKILLed worker never unregisters; Triton keeps its mapping, and the
memory, until told). Registrations of other hosts or containers are left alone: whether their owner
lives cannot be told from here.

Errors. `register` and the region's reads and writes raise the libraries' own errors; `TritonBackend`
translates them (`translate_error`, triton_errors.py). So "no region" (`acquire` returns None, also
when none could be made) stays apart from "Triton could not register it" (`register` raises). Cleanup
is best effort and ignores `cleanup_errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tritonclient.utils.shared_memory as shm

from service.backends.base import ModelOutputs, output_shapes
from service.specs import MODELS, ModelSpec

if TYPE_CHECKING:
    import tritonclient.grpc.aio as triton

    from service.backends.triton_config import TritonSettings

log = logging.getLogger(__name__)

PREFIX = "blazeface-"
SHM_DIR = Path("/dev/shm")  # where Linux keeps POSIX shared-memory objects


def _process_start(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22); None if it is gone. With the
    PID it names one process: a PID reused after a restart has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _host() -> str:
    """This host (container, pod) as 8 hex digits: fixed length, no separator in it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def region_prefix() -> str:
    """The prefix of every region name of one backend (see "Names" above)."""
    pid = os.getpid()
    return f"{PREFIX}{_host()}-{pid}-{_process_start(pid)}-{secrets.token_hex(4)}"


def _owner_gone(name: str) -> bool:
    """Whether `name` is a region of a process of this host that no longer runs."""
    host, pid, start, *_ = [*name.removeprefix(PREFIX).split("-"), "", "", ""]
    if not name.startswith(PREFIX) or host != _host() or not pid.isdigit():
        return False
    return _process_start(int(pid)) != start


def _tensor_bytes(spec: ModelSpec, rows: int) -> list[int]:
    """Bytes of a `rows`-image call's input (uint8), then of each output in `ModelOutputs` order."""
    outputs = [rows * dtype.itemsize * int(np.prod(shape)) for dtype, shape in output_shapes(spec).values()]
    return [rows * spec.input_size * spec.input_size * 3, *outputs]


@dataclass
class Region:
    """One shared-memory object holding a call's input and its outputs, registered with Triton."""

    name: str  # Triton's name for it; also the POSIX key without its leading "/"
    spec: ModelSpec
    capacity: int  # images it holds
    handle: shm.SharedMemoryRegion
    registered: int = -1  # the pool's registration generation it was last registered in

    @property
    def size(self) -> int:
        return sum(_tensor_bytes(self.spec, self.capacity))

    def slots(self, rows: int) -> list[tuple[int, int]]:
        """(bytes, offset) of a `rows`-image call's input, then each output; offsets are fixed."""
        full = _tensor_bytes(self.spec, self.capacity)
        offsets = [0, *itertools.accumulate(full[:-1])]
        return list(zip(_tensor_bytes(self.spec, rows), offsets, strict=True))

    def write_input(self, batch: np.ndarray) -> None:
        shm.set_shared_memory_region(self.handle, [batch])

    def read_outputs(self, rows: int) -> ModelOutputs:
        """Copies: the region is reused by the next call as soon as this one returns."""
        _, *slots = self.slots(rows)
        return ModelOutputs(
            *(
                shm.get_contents_as_numpy(self.handle, dtype, (rows, *shape), offset).copy()
                for (dtype, shape), (_, offset) in zip(output_shapes(self.spec).values(), slots, strict=True)
            )
        )


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
        self._settings = settings  # max_batch, shm_max_regions and the timeouts
        # What cleanup ignores: the backend passes its LIBRARY_ERRORS (triton_errors.py).
        self._cleanup_errors = cleanup_errors
        self._idle: dict[str, list[Region]] = {model: [] for model in MODELS}
        self._live: dict[str, list[Region]] = {model: [] for model in MODELS}
        self._created = 0  # names are never reused: Triton may still hold a retired one
        # Regions given up after a deadline or cancellation, by name: still registered with Triton.
        self._retired: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Regions each model's pool may grow to; lowered when /dev/shm has no room for another.
        self._limit = dict.fromkeys(MODELS, settings.shm_max_regions)
        # Bumped whenever Triton may have lost our registrations (restart); regions re-register lazily.
        self._generation = 0
        self._closed = False

    def acquire(self, spec: ModelSpec, rows: int) -> Region | None:
        """An idle region, or a new one; None when the batch is too big, every region is in use or no
        other can be made."""
        capacity = self._settings.max_batch
        if rows > capacity:
            return None
        idle = self._idle[spec.name]
        if idle:
            return idle.pop()
        live = self._live[spec.name]
        if len(live) >= self._limit[spec.name]:
            return None
        name = f"{self._prefix}-{spec.name}-{self._created}"
        self._created += 1
        size = sum(_tensor_bytes(spec, capacity))
        try:
            handle = shm.create_shared_memory_region(name, "/" + name, size, create_only=True)
        except shm.SharedMemoryException as exc:
            self._stop_growing(spec, name, size, exc)
            return None
        region = Region(name, spec, capacity, handle)
        try:
            _reserve(name, size)
        except OSError as exc:  # ENOSPC: /dev/shm is full
            self._destroy(region)
            self._stop_growing(spec, name, size, exc)
            return None
        live.append(region)
        return region

    def _stop_growing(self, spec: ModelSpec, name: str, size: int, exc: Exception) -> None:
        self._limit[spec.name] = len(self._live[spec.name])
        log.warning(
            "shared memory: could not make region %s (%d bytes): %s; model %s keeps its %d region(s), "
            "further calls go over the socket (size /dev/shm for WORKERS x MAX_INFLIGHT_BATCHES regions)",
            name,
            size,
            exc.__cause__ or exc,
            spec.name,
            self._limit[spec.name],
        )

    async def remove_stale(self) -> list[str]:
        """Unregister (and unlink) the regions Triton holds for processes of this host that are gone."""
        status = await self._client.get_system_shared_memory_status(
            client_timeout=self._settings.ready_timeout_s
        )
        stale = sorted(name for name in status.regions if _owner_gone(name))
        for name in stale:
            await self._client.unregister_system_shared_memory(
                name, client_timeout=self._settings.ready_timeout_s
            )
            (SHM_DIR / name).unlink(missing_ok=True)
        return stale

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


def _reserve(name: str, size: int) -> None:
    """Allocate the region's pages now: on a full tmpfs this raises ENOSPC, where a write into the
    mapping would kill the process with SIGBUS."""
    fd = os.open(SHM_DIR / name, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


def time_left(deadline: float) -> float:
    """The time to `deadline` (on `time.monotonic()`), as a gRPC timeout: it must be positive."""
    return max(deadline - time.monotonic(), 1e-3)
