"""Prometheus metrics, defined once, with low-cardinality labels.

Works with several uvicorn workers: when `PROMETHEUS_MULTIPROC_DIR` is set (the launcher in
`service/__main__.py` sets it for workers > 1) prometheus-client writes per-process files and `/metrics`
merges them with a `MultiProcessCollector`.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from service.observer import Observer

# Sub-millisecond to seconds: BlazeFace stages are ~0.1–20 ms; whole requests up to the deadline.
_STAGE_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.5, 5.0, 10.0)

REQUESTS = Counter("blazeface_requests_total", "HTTP requests by route and status", ["route", "status"])
REQUEST_SECONDS = Histogram(
    "blazeface_request_duration_seconds", "HTTP request latency", ["route"], buckets=_REQUEST_BUCKETS
)
STAGE_SECONDS = Histogram(
    "blazeface_stage_duration_seconds",
    "Per-image latency by pipeline stage (decode, queue, inference, postprocess)",
    ["stage"],
    buckets=_STAGE_BUCKETS,
)
BATCH_SIZE = Histogram(
    "blazeface_batch_size", "Images per backend call", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
QUEUE_DEPTH = Gauge(
    "blazeface_queue_depth", "Images waiting for a batch", ["model"], multiprocess_mode="livesum"
)
FACES = Histogram(
    "blazeface_faces_per_image", "Faces found per image", ["model"], buckets=(0, 1, 2, 4, 8, 16, 32, 64)
)
BACKEND_ERRORS = Counter("blazeface_backend_errors_total", "Failed backend calls by error", ["kind"])
IMAGES = Counter("blazeface_images_total", "Images processed by model and outcome", ["model", "outcome"])
# livemax: with several workers the merged view shows the worst worker's circuit.
CIRCUIT_STATE = Gauge(
    "blazeface_circuit_state",
    "Backend circuit breaker per model: 0 closed, 1 half-open, 2 open",
    ["backend", "model"],
    multiprocess_mode="livemax",
)


class PrometheusObserver(Observer):
    """Records every event of `service.observer.Observer` in the metrics above."""

    def on_request(self, route: str, status: int, seconds: float) -> None:
        REQUESTS.labels(route, str(status)).inc()
        REQUEST_SECONDS.labels(route).observe(seconds)

    def on_image(self, model: str, outcome: str) -> None:
        IMAGES.labels(model, outcome).inc()

    def on_stage(self, stage: str, seconds: float) -> None:
        STAGE_SECONDS.labels(stage).observe(seconds)

    def on_faces(self, model: str, count: int) -> None:
        FACES.labels(model).observe(count)

    def on_batch(self, model: str, size: int, inference_s: float) -> None:
        BATCH_SIZE.labels(model).observe(size)

    def on_queue_depth(self, model: str, depth: int) -> None:
        QUEUE_DEPTH.labels(model).set(depth)

    def on_backend_error(self, kind: str) -> None:
        BACKEND_ERRORS.labels(kind).inc()

    def on_circuit_state(self, backend: str, model: str, state: int) -> None:
        CIRCUIT_STATE.labels(backend, model).set(state)


def render() -> tuple[bytes, str]:
    """The exposition text for `/metrics`, merged across worker processes when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges from the merged view."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
