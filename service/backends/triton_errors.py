"""Error translation for the Triton backend: every tritonclient, gRPC and shared-memory exception
becomes a service error here, by `translate_error` alone, always `raise ... from exc`:

    gRPC DEADLINE_EXCEEDED, TimeoutError        → DeadlineExceeded   (the per-call timeout passed)
    UNAVAILABLE "Exceeds maximum queue size" or → Overloaded (429, Retry-After): the model's queue policy
      "Request timeout expired"                   shed the request. Not a fault of the server, so the
                                                  circuit breaker does not count it.
    any other status or library error           → BackendUnavailable (server down or restarting,
                                                  connection refused, model not loaded, …)

    with translated(f"Triton model {name}"):  # a library error raised inside leaves as a service error
        result = await client.infer(...)
    error = translate_error(exc, context)     # where the caller looks at `status_code(exc)` first
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import grpc.aio
from tritonclient.utils import InferenceServerException
from tritonclient.utils.shared_memory import SharedMemoryException

from service.errors import BackendUnavailable, DeadlineExceeded, Overloaded, ServiceError

# Triton's messages when a model's queue policy sheds a request, with status UNAVAILABLE as for a server
# that is down: over max_queue_size, or queued past default_timeout_microseconds (timeout_action REJECT).
SHED_MESSAGES = ("Exceeds maximum queue size", "Request timeout expired")
# Statuses of a call that did not get an answer; any other status is Triton's answer to what was asked.
NO_ANSWER = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)

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
    message = (exc.message() if isinstance(exc, InferenceServerException) else str(exc)) or ""
    if code is grpc.StatusCode.UNAVAILABLE and any(shed in message for shed in SHED_MESSAGES):
        return Overloaded(f"{context}: Triton's queue is full: {message}", retry_after_s=1)
    reason = code.name if code is not None else type(exc).__name__
    return BackendUnavailable(f"{context}: {reason}: {message}" if message else f"{context}: {reason}")


@contextlib.contextmanager
def translated(context: str) -> Iterator[None]:
    """Library errors raised in the block leave it as `translate_error(exc, context)`."""
    try:
        yield
    except LIBRARY_ERRORS as exc:
        raise translate_error(exc, context) from exc
