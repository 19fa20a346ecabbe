"""Triton backend: the models run in a Triton Inference Server, reached over gRPC (`tritonclient.grpc.aio`).

    backend = TritonBackend(TritonSettings(url="127.0.0.1:8001"))            # CPU models (tests, CPU hosts)
    backend = TritonBackend(TritonSettings(url="triton:8001", model_suffix="_trt"))  # TensorRT plans
    await backend.start()
    regressors, logits = await backend.infer("short", batch)   # batch: uint8 (B, 128, 128, 3)
    await backend.close()

Errors. Every tritonclient, gRPC and shared-memory exception is translated here, by `translate_error`
alone, always `raise ... from exc`:

    gRPC DEADLINE_EXCEEDED, TimeoutError        → DeadlineExceeded   (the per-call timeout passed)
    any other status or library error           → BackendUnavailable (server down or restarting,
                                                  connection refused, model not loaded, …)

Reconnecting. The gRPC channel reconnects by itself; its backoff is capped at `_MAX_RECONNECT_BACKOFF_MS`
so a restarted Triton is found again within about a second (gRPC's default cap is 120 s). While the
channel is down, calls fail at once with UNAVAILABLE instead of waiting.

Shared memory (`use_shared_memory=True`). The input batch and both outputs travel through POSIX shared
memory registered with Triton, so only small messages cross the socket — useful only when Triton runs
on the same host (it must see our /dev/shm). Each in-flight call holds one region (input, regressors and
logits at fixed offsets) from a per-model pool; the pool grows to `shm_max_regions` and calls beyond
that go over the socket instead of waiting. Triton forgets registrations when it restarts: a NOT_FOUND
or UNAVAILABLE answer marks every region for re-registration, and a NOT_FOUND call is retried once.
After a deadline or a cancellation Triton may still run the request and write into its region later, so
that region is unlinked at once and never reused (Triton's registration of it is dropped a little later).
`close()` unregisters and unlinks every region.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import grpc.aio
import numpy as np
import tritonclient.grpc.aio as triton
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException
from tritonclient.utils.shared_memory import SharedMemoryException

from service.backends.base import Backend
from service.errors import BackendUnavailable, DeadlineExceeded, ServiceError
from service.settings import Settings
from service.specs import MODELS, ModelSpec, get_spec

INPUT = "image"
OUTPUTS = ("regressors", "logits")
_MAX_MESSAGE_BYTES = 2**31 - 1  # a batch of 64 full-range images is ~7 MB, over gRPC's 4 MB default
_MAX_RECONNECT_BACKOFF_MS = 1000

# Everything the libraries below raise; `translate_error` maps each of them.
LIBRARY_ERRORS: tuple[type[Exception], ...] = (
    InferenceServerException,  # tritonclient: every failed RPC, with the gRPC status as text
    SharedMemoryException,
    grpc.RpcError,  # grpc.aio.AioRpcError, should one escape tritonclient
    grpc.aio.BaseError,  # UsageError (closed channel), AbortError, InternalError
    OSError,  # shared-memory files, sockets
    TimeoutError,  # asyncio.timeout
)


def status_code(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status behind a library error, if it has one."""
    if isinstance(exc, grpc.RpcError) and callable(getattr(exc, "code", None)):
        code = exc.code()
        return code if isinstance(code, grpc.StatusCode) else None
    if isinstance(exc, InferenceServerException):
        # tritonclient keeps only str(code), e.g. "StatusCode.UNAVAILABLE".
        name = (exc.status() or "").removeprefix("StatusCode.")
        return grpc.StatusCode.__members__.get(name)
    return None


def translate_error(exc: Exception, context: str) -> ServiceError:
    """The service error for a library error (see the module docstring for the table)."""
    code = status_code(exc)
    if code is grpc.StatusCode.DEADLINE_EXCEEDED or isinstance(exc, TimeoutError):
        return DeadlineExceeded(f"{context}: no answer from Triton in time")
    reason = code.name if code is not None else type(exc).__name__
    message = exc.message() if isinstance(exc, InferenceServerException) else str(exc)
    return BackendUnavailable(f"{context}: {reason}: {message}" if message else f"{context}: {reason}")


@contextlib.contextmanager
def _translated(context: str) -> Iterator[None]:
    try:
        yield
    except LIBRARY_ERRORS as exc:
        raise translate_error(exc, context) from exc


_SETTING_DEFAULTS = Settings.model_fields


@dataclass(frozen=True)
class TritonSettings:
    """Where Triton is and how to talk to it.

    TritonSettings()                                         # localhost, the CPU models
    TritonSettings(url="triton:8001", model_suffix="_trt")   # production TensorRT models
    TritonSettings(timeout_s=0.25, use_shared_memory=True)   # Triton on this host
    """

    # Defaults are the service settings' own (one source: TRITON_URL, TRITON_MODEL_SUFFIX, ...).
    url: str = _SETTING_DEFAULTS["triton_url"].default  # gRPC host:port
    # Triton model name = f"blazeface_{model}{model_suffix}"
    model_suffix: str = _SETTING_DEFAULTS["triton_model_suffix"].default
    timeout_s: float = _SETTING_DEFAULTS["triton_timeout_s"].default  # per call; past it → DeadlineExceeded
    ready_timeout_s: float = 0.5  # per readiness probe
    use_shared_memory: bool = _SETTING_DEFAULTS["triton_shared_memory"].default  # only on Triton's host
    shm_max_batch: int = 64  # images one region holds (the configs' max_batch_size); bigger: socket
    shm_max_regions: int = 16  # regions per model (= shared-memory calls in flight); more: socket

    def __post_init__(self) -> None:
        if not self.url:
            raise ValueError("url must not be empty")
        for field in ("timeout_s", "ready_timeout_s"):
            if not getattr(self, field) > 0:
                raise ValueError(f"{field} must be > 0")
        for field in ("shm_max_batch", "shm_max_regions"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1")

    def model_name(self, model: str) -> str:
        return f"blazeface_{get_spec(model).name}{self.model_suffix}"


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class _Region:
    """One shared-memory object holding a call's input and both outputs, registered with Triton."""

    name: str  # Triton's name for it; also the POSIX key without its leading "/"
    handle: shm.SharedMemoryRegion
    input_bytes: int
    regressors_bytes: int
    logits_bytes: int
    registered: int = -1  # the `_registrations` generation it was last registered in

    @property
    def size(self) -> int:
        return self.input_bytes + self.regressors_bytes + self.logits_bytes


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, settings: TritonSettings | None = None) -> None:
        self.settings = settings or TritonSettings()
        self._client: triton.InferenceServerClient | None = None
        self._state = _State.NEW
        self._idle: dict[str, list[_Region]] = {model: [] for model in MODELS}
        self._live: dict[str, list[_Region]] = {model: [] for model in MODELS}
        self._created = 0  # names are never reused: Triton may still hold a retired one
        # Regions given up after a deadline or cancellation, by name: still registered with Triton.
        self._retired: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Bumped whenever Triton may have lost our registrations (restart); regions re-register lazily.
        self._registrations = 0
        self._prefix = f"blazeface-{os.getpid()}-{secrets.token_hex(4)}"  # unique across API workers

    @classmethod
    def from_settings(cls, settings: Settings) -> TritonBackend:
        """From the service settings (TRITON_URL, TRITON_MODEL_SUFFIX, TRITON_TIMEOUT_S,
        TRITON_SHARED_MEMORY); shared-memory regions are sized for the batcher's MAX_BATCH."""
        return cls(
            TritonSettings(
                url=settings.triton_url,
                model_suffix=settings.triton_model_suffix,
                timeout_s=settings.triton_timeout_s,
                use_shared_memory=settings.triton_shared_memory,
                shm_max_batch=settings.max_batch,
            )
        )

    async def start(self) -> None:
        if self._state is not _State.NEW:
            raise RuntimeError(f"TritonBackend cannot start: it is {self._state.value}")
        # Must run inside the event loop that will use it: grpc.aio channels bind to their loop.
        self._client = triton.InferenceServerClient(
            self.settings.url,
            channel_args=[
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", _MAX_RECONNECT_BACKOFF_MS),
            ],
        )
        self._state = _State.OPEN

    async def close(self) -> None:
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED
            return
        self._state = _State.CLOSED
        client = self._client
        assert client is not None
        for task in self._tasks:
            task.cancel()
        names = set(self._retired)
        for model, live in self._live.items():
            names.update(region.name for region in live)
            # Regions still in use are destroyed by their own call when it ends (see `infer`).
            for region in self._idle[model]:
                _destroy(region)
            self._idle[model].clear()
            live.clear()
        for name in sorted(names):
            # Best effort: Triton may be gone, and its registrations with it.
            with contextlib.suppress(*LIBRARY_ERRORS):
                await client.unregister_system_shared_memory(
                    name, client_timeout=self.settings.ready_timeout_s
                )
        self._retired.clear()
        with contextlib.suppress(*LIBRARY_ERRORS):
            await client.close()

    async def ready(self) -> bool:
        if self._state is not _State.OPEN:
            return False
        client = self._client
        assert client is not None
        timeout = self.settings.ready_timeout_s
        try:
            # asyncio.timeout as well: a probe must not outlive its timeout even if gRPC's deadline slips.
            async with asyncio.timeout(timeout * 1.5):
                answers = await asyncio.gather(
                    *(
                        client.is_model_ready(self.settings.model_name(model), client_timeout=timeout)
                        for model in MODELS
                    )
                )
        except LIBRARY_ERRORS:
            return False
        return all(answers)

    async def infer(self, model: str, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spec = get_spec(model)
        _check_batch(spec, batch)
        client = self._open_client()
        name = self.settings.model_name(model)
        if self.settings.use_shared_memory and len(batch) <= self.settings.shm_max_batch:
            region = self._acquire(spec)
            if region is not None:
                reusable = False
                try:
                    result = await self._infer_shm(client, name, spec, region, batch)
                    reusable = True
                    return result
                except BackendUnavailable:
                    reusable = True  # the request never ran (refused, down, not found)
                    raise
                finally:
                    # After a deadline or a cancellation Triton may still run the request and write its
                    # outputs later: such a region must never serve another call.
                    if self._state is not _State.OPEN:
                        _destroy(region)  # closed meanwhile
                    elif reusable:
                        self._idle[spec.name].append(region)
                    else:
                        self._retire(spec, region)
        return await self._infer_socket(client, name, spec, batch)

    def _open_client(self) -> triton.InferenceServerClient:
        if self._state is not _State.OPEN or self._client is None:
            raise RuntimeError(f"TritonBackend is {self._state.value}; call start() first, once")
        return self._client

    async def _infer_socket(
        self, client: triton.InferenceServerClient, name: str, spec: ModelSpec, batch: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        image = triton.InferInput(INPUT, list(batch.shape), "UINT8")
        image.set_data_from_numpy(batch)
        outputs = [triton.InferRequestedOutput(output) for output in OUTPUTS]
        with _translated(f"Triton model {name}"):
            result = await client.infer(
                name, [image], outputs=outputs, client_timeout=self.settings.timeout_s
            )
        regressors, logits = (result.as_numpy(output) for output in OUTPUTS)
        if regressors is None or logits is None:
            raise BackendUnavailable(f"Triton model {name} answered without {OUTPUTS}")
        _check_outputs(name, spec, len(batch), regressors, logits)
        return regressors, logits

    async def _infer_shm(
        self,
        client: triton.InferenceServerClient,
        name: str,
        spec: ModelSpec,
        region: _Region,
        batch: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = len(batch)
        anchors = spec.decoder.num_boxes
        sizes = (batch.nbytes, rows * anchors * spec.decoder.num_coords * 4, rows * anchors * 4)
        offsets = (0, region.input_bytes, region.input_bytes + region.regressors_bytes)
        image = triton.InferInput(INPUT, list(batch.shape), "UINT8")
        image.set_shared_memory(region.name, sizes[0], offsets[0])
        outputs = []
        for output, size, offset in zip(OUTPUTS, sizes[1:], offsets[1:], strict=True):
            requested = triton.InferRequestedOutput(output)
            requested.set_shared_memory(region.name, size, offset)
            outputs.append(requested)

        context = f"Triton model {name} (shared memory)"
        deadline = time.monotonic() + self.settings.timeout_s
        with _translated(context):
            shm.set_shared_memory_region(region.handle, [batch])
        for attempt in range(2):
            try:
                await self._register(client, region, deadline)
                await client.infer(
                    name, [image], outputs=outputs, client_timeout=max(deadline - time.monotonic(), 1e-3)
                )
                break
            except LIBRARY_ERRORS as exc:
                code = status_code(exc)
                if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    self._registrations += 1  # Triton restarted (or is down): registrations are gone
                if code is grpc.StatusCode.NOT_FOUND and attempt == 0:
                    continue
                raise translate_error(exc, context) from exc
        with _translated(context):
            # Copies: the region is reused by the next call as soon as this one returns.
            shape = (rows, anchors, spec.decoder.num_coords)
            regressors = shm.get_contents_as_numpy(region.handle, np.float32, shape, offsets[1])
            logits = shm.get_contents_as_numpy(region.handle, np.float32, (rows, anchors, 1), offsets[2])
            return regressors.copy(), logits.copy()

    async def _register(self, client: triton.InferenceServerClient, region: _Region, deadline: float) -> None:
        if region.registered == self._registrations:
            return
        generation = self._registrations
        timeout = max(deadline - time.monotonic(), 1e-3)
        # Drop a registration Triton may still hold under this name (we could not tell it restarted).
        await client.unregister_system_shared_memory(region.name, client_timeout=timeout)
        await client.register_system_shared_memory(
            region.name, "/" + region.name, region.size, client_timeout=max(deadline - time.monotonic(), 1e-3)
        )
        region.registered = generation

    def _acquire(self, spec: ModelSpec) -> _Region | None:
        idle = self._idle[spec.name]
        if idle:
            return idle.pop()
        live = self._live[spec.name]
        if len(live) >= self.settings.shm_max_regions:
            return None
        rows, anchors = self.settings.shm_max_batch, spec.decoder.num_boxes
        name = f"{self._prefix}-{spec.name}-{self._created}"
        self._created += 1
        sizes = (
            rows * spec.input_size * spec.input_size * 3,
            rows * anchors * spec.decoder.num_coords * 4,  # float32 regressors
            rows * anchors * 4,  # float32 logits
        )
        with _translated(f"shared memory for {spec.name}"):
            handle = shm.create_shared_memory_region(name, "/" + name, sum(sizes), create_only=True)
        region = _Region(name, handle, *sizes)
        live.append(region)
        return region

    def _retire(self, spec: ModelSpec, region: _Region) -> None:
        """Unmap and unlink the region now (late writes then reach no one), unregister it later."""
        self._live[spec.name].remove(region)
        _destroy(region)
        self._retired.add(region.name)
        task = asyncio.get_running_loop().create_task(self._unregister_later(region.name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unregister_later(self, name: str) -> None:
        # Long enough for a request that overran our deadline to leave Triton's queue.
        await asyncio.sleep(10 * self.settings.timeout_s)
        client = self._client
        if client is None:
            return
        with contextlib.suppress(*LIBRARY_ERRORS):
            await client.unregister_system_shared_memory(name, client_timeout=self.settings.ready_timeout_s)
            self._retired.discard(name)


def _destroy(region: _Region) -> None:
    """Unmap and unlink our side of a region (Triton keeps its mapping until unregistered)."""
    # BufferError: a view of the buffer is still alive; the OS reclaims it at exit then.
    with contextlib.suppress(*LIBRARY_ERRORS, BufferError):
        shm.destroy_shared_memory_region(region.handle)


def _check_batch(spec: ModelSpec, batch: np.ndarray) -> None:
    """Caller errors are ValueError, not backend errors: Triton would only say INVALID_ARGUMENT."""
    size = spec.input_size
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (size, size, 3) or len(batch) == 0:
        raise ValueError(
            f"model {spec.name!r} takes uint8 (B>0, {size}, {size}, 3), got {batch.dtype} {batch.shape}"
        )


def _check_outputs(name: str, spec: ModelSpec, rows: int, regressors: np.ndarray, logits: np.ndarray) -> None:
    expected = ((rows, spec.decoder.num_boxes, spec.decoder.num_coords), (rows, spec.decoder.num_boxes, 1))
    if (regressors.shape, logits.shape) != expected:
        # The wrong model behind the name: not servable, so the service reports the backend unavailable.
        raise BackendUnavailable(
            f"Triton model {name} returned {regressors.shape} and {logits.shape}, expected {expected}"
        )
