"""Circuit breaker: stop calling a backend that keeps failing; let one probe call through now and then.

    backend = CircuitBreaker(TritonBackend(settings), failure_threshold=5, reset_timeout_s=2.0)

It wraps any `Backend` and is one itself. One circuit per model, because Triton fails models separately
(an unloaded or broken model must not take the other one down with it); a whole-server outage opens
both circuits, each after its own failures.

    state       calls                                                    leaves when
    closed (0)  go to the backend                                        `failure_threshold` consecutive
                                                                         BackendUnavailable/DeadlineExceeded
                                                                         → open
    open (2)    fail at once with `CircuitOpen` (a BackendUnavailable,   `reset_timeout_s` has passed and a
                503) and never reach the backend                         call arrives → half-open
    half-open   that call is the one probe; others fail at once while    probe succeeds → closed;
    (1)         it runs                                                  probe fails → open, timer restarts

Only the backend's own failures count. Caller errors (ValueError) and cancellations give no verdict: the
counter is unchanged and a cancelled probe lets the next call probe. A call admitted before the last
change of state (one still running when its circuit opened) changes nothing when it ends: its answer
describes the backend before that change.

The open → half-open move happens when the first call after `reset_timeout_s` arrives, so an idle open
circuit stays "open" in `state()` and in the `blazeface_circuit_state{backend,model}` gauge.

`ready()`: False while any circuit is open and its timer runs — requests for that model are refused at
that moment, and a probe of a backend known to be failing would only wait out its timeout if the server
hangs. Otherwise (closed, or open with the timer done) it asks the backend, so an orchestrator sees
recovery even when no traffic comes to probe the circuit.

Everything runs on one event loop (as the engine does), so admission needs no lock: it checks and takes
the probe slot before its first `await`.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.backends.base import Backend, ModelOutputs
from service.errors import BackendUnavailable, DeadlineExceeded
from service.observer import Observer
from service.specs import MODELS

log = logging.getLogger(__name__)

# The failures that say the backend is down, hung or not serving the model.
TRIPPING_ERRORS: tuple[type[Exception], ...] = (BackendUnavailable, DeadlineExceeded)


class CircuitState(enum.IntEnum):
    """Values of the `blazeface_circuit_state` gauge."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(BackendUnavailable):
    """A call refused by the breaker without reaching the backend (503, like any BackendUnavailable).

    Its own class so `blazeface_backend_errors_total{kind="CircuitOpen"}` counts refusals apart from
    calls that really failed."""


@dataclass
class _Circuit:
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0  # consecutive, while closed
    opened_at: float = 0.0
    probing: bool = False  # half-open: the one probe call is running
    generation: int = 0  # bumped on every change of state; outcomes of older calls are ignored
    last_error: str = ""


class CircuitBreaker(Backend):
    def __init__(
        self,
        inner: Backend,
        failure_threshold: int = 5,
        reset_timeout_s: float = 2.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        observer: Observer | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if not reset_timeout_s > 0:
            raise ValueError("reset_timeout_s must be > 0")
        self.inner = inner
        self.name = inner.name  # labels, logs and /readyz name the real backend
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self._clock = clock
        self._observer = observer or Observer()
        self._circuits = {model: _Circuit() for model in MODELS}
        for model in MODELS:
            self._report(model, CircuitState.CLOSED)  # the series exists before the first failure

    def state(self, model: str) -> CircuitState:
        return self._circuits[model].state

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    async def ready(self) -> bool:
        now = self._clock()
        if any(self._refusing(circuit, now) for circuit in self._circuits.values()):
            return False
        return await self.inner.ready()

    async def infer(self, model: str, batch: np.ndarray) -> ModelOutputs:
        circuit = self._circuits.get(model)
        if circuit is None:
            return await self.inner.infer(model, batch)  # unknown model: the backend's ValueError
        generation = self._admit(model, circuit)
        try:
            result = await self.inner.infer(model, batch)
        except TRIPPING_ERRORS as exc:
            self._failed(model, circuit, generation, exc)
            raise
        except BaseException:
            self._no_verdict(circuit, generation)
            raise
        self._succeeded(model, circuit, generation)
        return result

    # --- state machine (synchronous: no await between a check and its update) ---------------------------

    def _refusing(self, circuit: _Circuit, now: float) -> bool:
        return circuit.state is CircuitState.OPEN and now < circuit.opened_at + self.reset_timeout_s

    def _admit(self, model: str, circuit: _Circuit) -> int:
        """The call's generation, or CircuitOpen."""
        if circuit.state is CircuitState.OPEN:
            remaining = circuit.opened_at + self.reset_timeout_s - self._clock()
            if remaining > 0:
                raise CircuitOpen(
                    f"circuit open for model {model} ({self.name}): retrying in {remaining:.2f} s; "
                    f"last failure: {circuit.last_error}"
                )
            self._move(model, circuit, CircuitState.HALF_OPEN)
        if circuit.state is CircuitState.HALF_OPEN:
            if circuit.probing:
                raise CircuitOpen(f"circuit open for model {model} ({self.name}): a probe call is running")
            circuit.probing = True
        return circuit.generation

    def _failed(self, model: str, circuit: _Circuit, generation: int, exc: Exception) -> None:
        if generation != circuit.generation:
            return
        circuit.last_error = str(exc)
        if circuit.state is CircuitState.HALF_OPEN:
            self._open(model, circuit)
            return
        circuit.failures += 1
        if circuit.failures >= self.failure_threshold:
            self._open(model, circuit)

    def _succeeded(self, model: str, circuit: _Circuit, generation: int) -> None:
        if generation != circuit.generation:
            return
        circuit.failures = 0
        if circuit.state is CircuitState.HALF_OPEN:
            self._move(model, circuit, CircuitState.CLOSED)
            log.warning("circuit closed for model %s (%s): the probe call succeeded", model, self.name)

    def _no_verdict(self, circuit: _Circuit, generation: int) -> None:
        if generation == circuit.generation and circuit.state is CircuitState.HALF_OPEN:
            circuit.probing = False  # the next call probes instead

    def _open(self, model: str, circuit: _Circuit) -> None:
        reason = (
            "the probe call failed"
            if circuit.state is CircuitState.HALF_OPEN
            else (f"{circuit.failures} consecutive failures")
        )
        circuit.opened_at = self._clock()
        self._move(model, circuit, CircuitState.OPEN)
        log.warning(
            "circuit open for model %s (%s): %s (%s); calls fail fast for %.2f s",
            model,
            self.name,
            reason,
            circuit.last_error,
            self.reset_timeout_s,
        )

    def _move(self, model: str, circuit: _Circuit, state: CircuitState) -> None:
        circuit.state = state
        circuit.generation += 1
        circuit.probing = False
        if state is not CircuitState.OPEN:
            circuit.failures = 0
        self._report(model, state)

    def _report(self, model: str, state: CircuitState) -> None:
        self._observer.on_circuit_state(self.name, model, int(state))
