"""Settings → the backend that serves them (the only place that branches on `BACKEND`)."""

from __future__ import annotations

from service.backends.base import Backend
from service.observer import Observer
from service.settings import Settings


def make_backend(settings: Settings, observer: Observer | None = None) -> Backend:
    if settings.backend == "triton":
        from service.backends.triton import TritonBackend  # tritonclient only when asked for

        backend: Backend = TritonBackend.from_settings(settings)
        if settings.breaker_failures > 0:
            # Only the remote backend: a down or hung Triton is what the breaker fails fast on; the
            # in-process ONNX Runtime has no such failure to wait out.
            from service.backends.breaker import CircuitBreaker

            backend = CircuitBreaker(
                backend, settings.breaker_failures, settings.breaker_reset_s, observer=observer
            )
        return backend
    from service.backends.onnx import OnnxBackend

    return OnnxBackend(settings.model_repository, threads=settings.ort_threads)
