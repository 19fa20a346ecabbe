"""The one interface through which the service reports what it did; `service/metrics.py` implements it
for Prometheus. Engine, batcher, breaker and HTTP layer are handed an observer and never import a
metrics library, so they run (and are tested) the same with the base class, which reports nowhere."""

from __future__ import annotations


class Observer:
    """Every hook is a no-op here: `Observer()` is the observer of the in-process `Detector` and of
    unit tests; subclasses override what they record."""

    def on_request(self, route: str, status: int, seconds: float) -> None:
        """An HTTP response was sent (any status); `route` is a fixed label, never a raw path."""

    def on_image(self, model: str, outcome: str) -> None:
        """One image of a request was answered: outcome "ok" or "rejected" (its own 4xx)."""

    def on_stage(self, stage: str, seconds: float) -> None:
        """Time one image spent in a pipeline stage: decode, queue, inference, postprocess."""

    def on_faces(self, model: str, count: int) -> None:
        """Faces found in one image."""

    def on_batch(self, model: str, size: int, inference_s: float) -> None:
        """One backend call of `size` images finished."""

    def on_queue_depth(self, model: str, depth: int) -> None:
        """Images now waiting in a model's batch queue."""

    def on_backend_error(self, kind: str) -> None:
        """A backend call failed; `kind` is the ServiceError class name."""

    def on_circuit_state(self, backend: str, model: str, state: int) -> None:
        """A circuit breaker moved: 0 closed, 1 half-open, 2 open."""
