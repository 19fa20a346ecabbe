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

Shared memory (`use_shared_memory=True`, Triton on this host). Tensors travel through a `RegionPool`
of POSIX shared-memory regions registered with Triton (`triton_shm.py` describes it); a call that gets
no region from it goes over the socket. A NOT_FOUND call is retried once, after re-registering.
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
from tritonclient.utils import InferenceServerException
from tritonclient.utils.shared_memory import SharedMemoryException

from service.backends.base import Backend
from service.backends.triton_shm import Region, RegionPool, time_left
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


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, settings: TritonSettings | None = None) -> None:
        self.settings = settings or TritonSettings()
        self._client: triton.InferenceServerClient | None = None
        self._state = _State.NEW
        self._regions: RegionPool | None = None  # with use_shared_memory, from start()
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
        if self.settings.use_shared_memory:
            self._regions = RegionPool(self._client, self._prefix, self.settings, LIBRARY_ERRORS)
        self._state = _State.OPEN

    async def close(self) -> None:
        if self._state is not _State.OPEN:
            self._state = _State.CLOSED
            return
        client = self._open_client()
        self._state = _State.CLOSED
        if self._regions is not None:
            await self._regions.close()
        with contextlib.suppress(*LIBRARY_ERRORS):
            await client.close()

    async def ready(self) -> bool:
        if self._state is not _State.OPEN:
            return False
        client = self._open_client()
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
        regions = self._regions
        if regions is not None:
            with _translated(f"shared memory for {spec.name}"):
                region = regions.acquire(spec, len(batch))
            if region is not None:
                try:
                    result = await self._infer_shm(client, name, regions, region, batch)
                except BackendUnavailable:
                    regions.release(region)  # the request never ran (refused, down, not found)
                    raise
                except BaseException:
                    # After a deadline or a cancellation Triton may still run the request and write its
                    # outputs later: such a region must never serve another call.
                    regions.retire(region)
                    raise
                regions.release(region)
                return result
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
        regions: RegionPool,
        region: Region,
        batch: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = len(batch)
        image = triton.InferInput(INPUT, list(batch.shape), "UINT8")
        outputs = [triton.InferRequestedOutput(output) for output in OUTPUTS]
        for tensor, (size, offset) in zip([image, *outputs], region.slots(rows), strict=True):
            tensor.set_shared_memory(region.name, size, offset)

        context = f"Triton model {name} (shared memory)"
        deadline = time.monotonic() + self.settings.timeout_s
        with _translated(context):
            region.write_input(batch)
        for attempt in range(2):
            try:
                await regions.register(region, deadline)
                await client.infer(name, [image], outputs=outputs, client_timeout=time_left(deadline))
                break
            except LIBRARY_ERRORS as exc:
                code = status_code(exc)
                if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE):
                    regions.forget_registrations()  # Triton restarted (or is down)
                if code is grpc.StatusCode.NOT_FOUND and attempt == 0:
                    continue
                raise translate_error(exc, context) from exc
        with _translated(context):
            return region.read_outputs(rows)


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
