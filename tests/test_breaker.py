"""CircuitBreaker against a scripted backend and a hand-driven clock: state transitions, no backend calls
while open, the half-open probe, one probe at a time, stale outcomes, and the wiring in make_backend."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from prometheus_client import REGISTRY

from service.backends.base import Backend, ModelOutputs
from service.backends.breaker import CircuitBreaker, CircuitOpen, CircuitState
from service.backends.factory import make_backend
from service.errors import BackendUnavailable, DeadlineExceeded
from service.metrics import PrometheusObserver
from service.settings import Settings
from service.specs import MODELS
from tests.api.conftest import no_faces

RESET_S = 2.0
_names = itertools.count()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Scripted(Backend):
    """Fails with `error` while it is set; a call waits on `gate` while that is set."""

    def __init__(self) -> None:
        self.name = f"scripted-{next(_names)}"  # own gauge series per test
        self.error: Exception | None = None
        self.gate: asyncio.Event | None = None
        self.calls: list[str] = []
        self.ready_calls = 0
        self.is_ready = True

    async def infer(self, model: str, batch: np.ndarray) -> ModelOutputs:
        self.calls.append(model)
        error, gate = self.error, self.gate  # as they were when the call arrived
        if gate is not None:
            await gate.wait()
        if error is not None:
            raise error
        return no_faces(model, len(batch))

    async def ready(self) -> bool:
        self.ready_calls += 1
        return self.is_ready


BATCH = np.zeros((1, 128, 128, 3), np.uint8)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def inner() -> Scripted:
    return Scripted()


@pytest.fixture
def breaker(inner: Scripted, clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(
        inner, failure_threshold=3, reset_timeout_s=RESET_S, clock=clock, observer=PrometheusObserver()
    )


def gauge(breaker: CircuitBreaker, model: str = "short") -> float | None:
    return REGISTRY.get_sample_value("blazeface_circuit_state", {"backend": breaker.name, "model": model})


async def fail_times(breaker: CircuitBreaker, n: int, error: type[Exception] = BackendUnavailable) -> None:
    for _ in range(n):
        with pytest.raises(error):
            await breaker.infer("short", BATCH)


async def open_circuit(breaker: CircuitBreaker, inner: Scripted) -> None:
    inner.error = BackendUnavailable("down")
    await fail_times(breaker, breaker.failure_threshold)
    assert breaker.state("short") is CircuitState.OPEN


def test_arguments_are_checked(inner: Scripted) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(inner, failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(inner, reset_timeout_s=0)


async def test_closed_passes_calls_and_names_the_inner_backend(
    breaker: CircuitBreaker, inner: Scripted
) -> None:
    assert breaker.name == inner.name
    assert {model: gauge(breaker, model) for model in MODELS} == {model: 0.0 for model in MODELS}
    outputs = await breaker.infer("full", np.zeros((2, 192, 192, 3), np.uint8))
    assert all(len(output) == 2 for output in outputs)
    assert inner.calls == ["full"]


async def test_only_consecutive_failures_open(breaker: CircuitBreaker, inner: Scripted) -> None:
    inner.error = BackendUnavailable("down")
    await fail_times(breaker, 2)
    inner.error = None
    await breaker.infer("short", BATCH)  # a success resets the count
    inner.error = DeadlineExceeded("hung")  # deadlines count as failures too
    await fail_times(breaker, 2, DeadlineExceeded)
    assert breaker.state("short") is CircuitState.CLOSED
    inner.error = ValueError("caller bug")  # not the backend's failure: no verdict
    await fail_times(breaker, 5, ValueError)
    assert breaker.state("short") is CircuitState.CLOSED
    inner.error = BackendUnavailable("down")
    await fail_times(breaker, 1)
    assert breaker.state("short") is CircuitState.OPEN
    assert gauge(breaker) == 2.0


async def test_open_fails_fast_without_calling_the_backend(
    breaker: CircuitBreaker, inner: Scripted, clock: Clock
) -> None:
    await open_circuit(breaker, inner)
    calls = len(inner.calls)
    for _ in range(50):
        with pytest.raises(CircuitOpen) as info:
            await breaker.infer("short", BATCH)
        clock.advance(RESET_S / 100)  # 50 × 0.02 s: still inside the reset timeout
    assert isinstance(info.value, BackendUnavailable) and info.value.status == 503
    assert str(info.value).startswith("circuit open") and "down" in str(info.value)
    assert len(inner.calls) == calls
    assert breaker.state("short") is CircuitState.OPEN


async def test_probe_success_closes(breaker: CircuitBreaker, inner: Scripted, clock: Clock) -> None:
    await open_circuit(breaker, inner)
    calls = len(inner.calls)
    clock.advance(RESET_S)
    inner.error = None
    await breaker.infer("short", BATCH)  # the probe
    assert len(inner.calls) == calls + 1
    assert breaker.state("short") is CircuitState.CLOSED and gauge(breaker) == 0.0
    for _ in range(3):
        await breaker.infer("short", BATCH)
    assert len(inner.calls) == calls + 4
    # Closed again with a fresh count: it takes the full threshold to re-open.
    inner.error = BackendUnavailable("down")
    await fail_times(breaker, breaker.failure_threshold - 1)
    assert breaker.state("short") is CircuitState.CLOSED


async def test_probe_failure_reopens_for_a_full_timeout(
    breaker: CircuitBreaker, inner: Scripted, clock: Clock
) -> None:
    await open_circuit(breaker, inner)
    clock.advance(RESET_S + 5)
    inner.error = BackendUnavailable("still down")
    calls = len(inner.calls)
    await fail_times(breaker, 1)  # the probe reached the backend and failed
    assert len(inner.calls) == calls + 1
    assert breaker.state("short") is CircuitState.OPEN and gauge(breaker) == 2.0
    clock.advance(RESET_S - 0.01)  # the timer restarted at the probe's failure
    with pytest.raises(CircuitOpen, match="still down"):
        await breaker.infer("short", BATCH)
    assert len(inner.calls) == calls + 1
    clock.advance(0.01)
    inner.error = None
    await breaker.infer("short", BATCH)
    assert breaker.state("short") is CircuitState.CLOSED


async def test_one_probe_at_a_time(breaker: CircuitBreaker, inner: Scripted, clock: Clock) -> None:
    await open_circuit(breaker, inner)
    clock.advance(RESET_S)
    inner.error = None
    inner.gate = asyncio.Event()
    calls = len(inner.calls)
    probe = asyncio.create_task(breaker.infer("short", BATCH))
    await asyncio.sleep(0)  # the probe is admitted and waits in the backend
    assert breaker.state("short") is CircuitState.HALF_OPEN and gauge(breaker) == 1.0

    # Concurrent calls while the probe runs: refused at once, none reaches the backend.
    others = await asyncio.gather(*(breaker.infer("short", BATCH) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(result, CircuitOpen) for result in others)
    assert "probe" in str(others[0])
    assert len(inner.calls) == calls + 1
    assert not probe.done()

    inner.gate.set()
    await probe
    assert breaker.state("short") is CircuitState.CLOSED
    results = await asyncio.gather(*(breaker.infer("short", BATCH) for _ in range(5)))
    assert len(results) == 5 and len(inner.calls) == calls + 6


async def test_cancelled_probe_lets_the_next_call_probe(
    breaker: CircuitBreaker, inner: Scripted, clock: Clock
) -> None:
    await open_circuit(breaker, inner)
    clock.advance(RESET_S)
    inner.error = None
    inner.gate = asyncio.Event()
    probe = asyncio.create_task(breaker.infer("short", BATCH))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.state("short") is CircuitState.HALF_OPEN
    inner.gate = None
    await breaker.infer("short", BATCH)  # not refused: it became the probe
    assert breaker.state("short") is CircuitState.CLOSED


async def test_calls_admitted_before_a_change_do_not_count(
    breaker: CircuitBreaker, inner: Scripted, clock: Clock
) -> None:
    # Calls in flight while the circuit is closed: three fail and open it; two more end after that.
    inner.error = BackendUnavailable("down")
    late_failure_gate = inner.gate = asyncio.Event()
    late_failure = asyncio.create_task(breaker.infer("short", BATCH))
    await asyncio.sleep(0)  # the call starts and takes the error and gate set now
    inner.error = None
    late_success_gate = inner.gate = asyncio.Event()
    late_success = asyncio.create_task(breaker.infer("short", BATCH))
    await asyncio.sleep(0)
    inner.gate = None
    await open_circuit(breaker, inner)

    late_success_gate.set()
    await late_success
    # That success described the backend before the circuit opened: the circuit stays open.
    assert breaker.state("short") is CircuitState.OPEN
    with pytest.raises(CircuitOpen):
        await breaker.infer("short", BATCH)

    clock.advance(RESET_S)
    inner.error = None
    await breaker.infer("short", BATCH)  # the probe closes it
    assert breaker.state("short") is CircuitState.CLOSED
    late_failure_gate.set()
    with pytest.raises(BackendUnavailable):
        await late_failure
    # Nor does the old failure count against the new closed circuit: a full threshold is still needed.
    inner.error = BackendUnavailable("down")
    await fail_times(breaker, breaker.failure_threshold - 1)
    assert breaker.state("short") is CircuitState.CLOSED


async def test_circuits_are_per_model(breaker: CircuitBreaker, inner: Scripted) -> None:
    await open_circuit(breaker, inner)
    inner.error = None
    await breaker.infer("full", np.zeros((1, 192, 192, 3), np.uint8))
    assert breaker.state("full") is CircuitState.CLOSED and gauge(breaker, "full") == 0.0
    with pytest.raises(CircuitOpen):
        await breaker.infer("short", BATCH)


async def test_unknown_model_is_the_backends_business(breaker: CircuitBreaker, inner: Scripted) -> None:
    with pytest.raises(KeyError):  # Scripted's own error for an unknown model
        await breaker.infer("tiny", BATCH)


async def test_ready(breaker: CircuitBreaker, inner: Scripted, clock: Clock) -> None:
    assert await breaker.ready() and inner.ready_calls == 1
    inner.is_ready = False
    assert not await breaker.ready() and inner.ready_calls == 2
    inner.is_ready = True
    await open_circuit(breaker, inner)
    # Open: not ready, and the failing backend is not asked.
    assert not await breaker.ready() and inner.ready_calls == 2
    clock.advance(RESET_S)
    # Timer done: the backend answers for itself, even before any traffic probes the circuit.
    assert await breaker.ready() and inner.ready_calls == 3
    assert breaker.state("short") is CircuitState.OPEN


async def test_start_and_close_delegate() -> None:
    events: list[str] = []

    class Lifecycle(Scripted):
        async def start(self) -> None:
            events.append("start")

        async def close(self) -> None:
            events.append("close")

    breaker = CircuitBreaker(Lifecycle())
    await breaker.start()
    await breaker.close()
    assert events == ["start", "close"]


def test_make_backend_wraps_triton_only() -> None:
    from service.backends.onnx import OnnxBackend
    from service.backends.triton import TritonBackend

    backend = make_backend(Settings(backend="triton", breaker_failures=7, breaker_reset_s=0.5))
    assert isinstance(backend, CircuitBreaker) and isinstance(backend.inner, TritonBackend)
    assert (backend.failure_threshold, backend.reset_timeout_s, backend.name) == (7, 0.5, "triton")
    assert isinstance(make_backend(Settings(backend="triton", breaker_failures=0)), TritonBackend)
    assert isinstance(make_backend(Settings(backend="onnx")), OnnxBackend)
