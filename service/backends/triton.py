"""Triton backend: the models run in a Triton Inference Server, reached over gRPC (`tritonclient.grpc.aio`).

    backend = TritonBackend(TritonSettings(url="127.0.0.1:8001"))            # CPU models (tests, CPU hosts)
    backend = TritonBackend(TritonSettings(url="triton:8001", model_suffix="_trt"))  # TensorRT plans
    await backend.start()
    outputs = await backend.infer("short", batch)   # batch: uint8 (B, 128, 128, 3); a ModelOutputs
    await backend.close()

Errors. Every tritonclient, gRPC and shared-memory exception becomes `DeadlineExceeded`, `Overloaded`
(429, when Triton sheds load) or `BackendUnavailable` by `translate_error` (`triton_errors.py` has the
table), always `raise ... from exc`.

Models. `start()` checks each model's config on Triton against the settings and service/specs.py
(`triton_config.py`, where `TritonSettings` is defined too) and refuses to start (`ModelMismatch`, naming
the setting) when it does not fit. When Triton does not answer at start (it may start after the API),
each model is checked when Triton first answers for it: its first call, or `ready()`.

Reconnecting. The gRPC channel reconnects by itself; its backoff is capped at `_MAX_RECONNECT_BACKOFF_MS`
so a restarted Triton is found again within about a second (gRPC's default cap is 120 s). While the
channel is down, calls fail at once with UNAVAILABLE instead of waiting.

Shared memory (`use_shared_memory=True`, Triton on this host). Tensors travel through a `RegionPool`
of POSIX shared-memory regions registered with Triton (`triton_shm.py` describes it); a call that gets
no region from it goes over the socket. A NOT_FOUND call is retried once, after re-registering. When
Triton answers that it cannot open a region (it does not see our /dev/shm: another container or pod),
shared memory is off for good, logged once at WARNING: that call and every later one go over the socket.
`start()` removes the registrations that dead processes of this host left on Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time

import grpc
import numpy as np
import tritonclient.grpc.aio as triton

from service.backends.base import Backend, ModelOutputs, output_shapes
from service.backends.triton_config import INPUT, OUTPUTS, ModelMismatch, TritonSettings, check_model
from service.backends.triton_errors import LIBRARY_ERRORS, NO_ANSWER, status_code, translate_error, translated
from service.backends.triton_shm import Region, RegionPool, region_prefix, time_left
from service.errors import BackendUnavailable, Overloaded, ServiceError
from service.settings import Settings
from service.specs import MODELS, ModelSpec, get_spec

log = logging.getLogger(__name__)

_MAX_MESSAGE_BYTES = 2**31 - 1  # a batch of 64 full-range images is ~7 MB, over gRPC's 4 MB default
_MAX_RECONNECT_BACKOFF_MS = 1000


class _RegionRefused(Exception):
    """Triton answered that it cannot register a region: it does not see our shared memory."""


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
        self._regions: RegionPool | None = None  # with use_shared_memory, from start(); None once refused
        self._prefix = region_prefix()  # unique across API workers and backends
        self._unchecked = set(MODELS)  # models whose Triton config has not been compared with the specs yet

    @classmethod
    def from_settings(cls, settings: Settings) -> TritonBackend:
        """From the service settings (TRITON_URL, TRITON_MODEL_SUFFIX, TRITON_TIMEOUT_S,
        TRITON_SHARED_MEMORY, and the batcher's MAX_BATCH)."""
        return cls(
            TritonSettings(
                url=settings.triton_url,
                model_suffix=settings.triton_model_suffix,
                timeout_s=settings.triton_timeout_s,
                use_shared_memory=settings.triton_shared_memory,
                max_batch=settings.max_batch,
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
        try:
            await self._check_models(self._client, list(MODELS), self.settings.timeout_s)
        except ModelMismatch:
            await self.close()
            raise
        except LIBRARY_ERRORS as exc:
            log.warning(
                "Triton at %s did not answer at start (%s); each model's config is checked when it answers",
                self.settings.url,
                translate_error(exc, "model config"),
            )
        if self.settings.use_shared_memory:
            self._regions = RegionPool(self._client, self._prefix, self.settings, LIBRARY_ERRORS)
            with contextlib.suppress(*LIBRARY_ERRORS):  # best effort; Triton may not answer yet
                stale = await self._regions.remove_stale()
                if stale:
                    log.info(
                        "removed %d shared-memory registrations of dead processes: %s", len(stale), stale
                    )

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
                if all(answers):
                    await self._check_models(client, sorted(self._unchecked), timeout)
        except (ModelMismatch, *LIBRARY_ERRORS):
            return False
        return all(answers)

    async def infer(self, model: str, batch: np.ndarray) -> ModelOutputs:
        spec = get_spec(model)
        _check_batch(spec, batch)
        client = self._open_client()
        name = self.settings.model_name(model)
        if model in self._unchecked:
            with translated(f"Triton model {name}"):
                await self._check_models(client, [model], self.settings.timeout_s)
        regions = self._regions
        region = regions.acquire(spec, len(batch)) if regions is not None else None
        if regions is not None and region is not None:
            try:
                result = await self._infer_shm(client, name, regions, region, batch)
            except _RegionRefused as refused:
                regions.release(region)
                await self._stop_shared_memory(regions, refused)
            except (BackendUnavailable, Overloaded):
                regions.release(region)  # the request never ran (refused, shed, down, not found)
                raise
            except BaseException:
                # After a deadline or a cancellation Triton may still run the request and write its
                # outputs later: such a region must never serve another call.
                regions.retire(region)
                raise
            else:
                regions.release(region)
                return result
        return await self._infer_socket(client, name, spec, batch)

    async def _check_models(
        self, client: triton.InferenceServerClient, models: list[str], timeout: float
    ) -> None:
        """Compare each model's config on Triton with the settings and specs (library errors pass)."""
        for model in models:
            await check_model(client, self.settings, model, timeout)
            self._unchecked.discard(model)

    async def _stop_shared_memory(self, regions: RegionPool, refused: _RegionRefused) -> None:
        """Every later call goes over the socket; the first call to be refused says so, once."""
        if self._regions is not regions:
            return
        self._regions = None
        log.warning(
            "shared memory off: %s. Triton at %s does not see this host's /dev/shm (another container or "
            "pod?); tensors go over the socket from now on. Unset TRITON_SHARED_MEMORY, or share the IPC "
            "namespace and /dev/shm with Triton",
            refused,
            self.settings.url,
        )
        await regions.close()

    def _open_client(self) -> triton.InferenceServerClient:
        if self._state is not _State.OPEN or self._client is None:
            raise RuntimeError(f"TritonBackend is {self._state.value}; call start() first, once")
        return self._client

    async def _infer_socket(
        self, client: triton.InferenceServerClient, name: str, spec: ModelSpec, batch: np.ndarray
    ) -> ModelOutputs:
        image = triton.InferInput(INPUT, list(batch.shape), "UINT8")
        image.set_data_from_numpy(batch)
        outputs = [triton.InferRequestedOutput(output) for output in OUTPUTS]
        with translated(f"Triton model {name}"):
            result = await client.infer(
                name, [image], outputs=outputs, client_timeout=self.settings.timeout_s
            )
        arrays = [result.as_numpy(output) for output in OUTPUTS]
        if any(array is None for array in arrays):
            raise BackendUnavailable(f"Triton model {name} answered without {OUTPUTS}")
        answer = ModelOutputs(*arrays)
        _check_outputs(name, spec, len(batch), answer)
        return answer

    async def _infer_shm(
        self,
        client: triton.InferenceServerClient,
        name: str,
        regions: RegionPool,
        region: Region,
        batch: np.ndarray,
    ) -> ModelOutputs:
        rows = len(batch)
        image = triton.InferInput(INPUT, list(batch.shape), "UINT8")
        outputs = [triton.InferRequestedOutput(output) for output in OUTPUTS]
        for tensor, (size, offset) in zip([image, *outputs], region.slots(rows), strict=True):
            tensor.set_shared_memory(region.name, size, offset)

        context = f"Triton model {name} (shared memory)"
        deadline = time.monotonic() + self.settings.timeout_s
        with translated(context):
            region.write_input(batch)
        for attempt in range(2):
            try:
                await regions.register(region, deadline)
            except LIBRARY_ERRORS as exc:
                if status_code(exc) not in (None, *NO_ANSWER):  # Triton answered: it cannot map the region
                    raise _RegionRefused(translate_error(exc, f"registering region {region.name}")) from exc
                raise _shm_failure(regions, exc, context) from exc
            try:
                await client.infer(name, [image], outputs=outputs, client_timeout=time_left(deadline))
                break
            except LIBRARY_ERRORS as exc:
                if status_code(exc) is grpc.StatusCode.NOT_FOUND and attempt == 0:
                    regions.forget_registrations()  # Triton restarted and forgot our regions: once more
                    continue
                raise _shm_failure(regions, exc, context) from exc
        with translated(context):
            return region.read_outputs(rows)


def _shm_failure(regions: RegionPool, exc: Exception, context: str) -> ServiceError:
    """The service error for a failed shared-memory call; re-register every region if Triton restarted."""
    error = translate_error(exc, context)
    if isinstance(error, BackendUnavailable) and status_code(exc) in (
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.UNAVAILABLE,
    ):
        regions.forget_registrations()  # Triton restarted (or is down)
    return error


def _check_batch(spec: ModelSpec, batch: np.ndarray) -> None:
    """Caller errors are ValueError, not backend errors: Triton would only say INVALID_ARGUMENT."""
    size = spec.input_size
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[1:] != (size, size, 3) or len(batch) == 0:
        raise ValueError(
            f"model {spec.name!r} takes uint8 (B>0, {size}, {size}, 3), got {batch.dtype} {batch.shape}"
        )


def _check_outputs(name: str, spec: ModelSpec, rows: int, answer: ModelOutputs) -> None:
    got = [(array.dtype, array.shape) for array in answer]
    expected = [(dtype, (rows, *shape)) for dtype, shape in output_shapes(spec).values()]
    if got != expected:
        # The wrong model behind the name: not servable, so the service reports the backend unavailable.
        raise BackendUnavailable(f"Triton model {name} returned {got}, expected {expected}")
