"""Prometheus metrics, defined once, with low-cardinality labels.

Works with several uvicorn workers: when `PROMETHEUS_MULTIPROC_DIR` is set (the launcher in
`service/__main__.py` sets it for workers > 1) prometheus-client writes per-process files and `/metrics`
merges them with a `MultiProcessCollector`, first dropping the live gauges of workers that died.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

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
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        _forget_dead_workers(Path(directory))
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


def mark_worker_dead(pid: int) -> None:
    """Drop a stopped worker's live gauges from the merged view."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)


def _forget_dead_workers(directory: Path) -> None:
    """Drop the live gauges of workers that died without shutting down (SIGKILL, OOM kill): their
    lifespan never ran `mark_worker_dead`, so their last queue depth would stay in the merged sum for
    good. Counters are kept, as prometheus-client intends (the merged totals must not go down)."""
    for path in directory.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        if not _is_live_worker(pid):
            # Two workers rendering at once may both remove it; the collector skips missing live files.
            with contextlib.suppress(FileNotFoundError):
                multiprocess.mark_process_dead(pid, str(directory))


def _is_live_worker(pid: int) -> bool:
    """`pid` is this process or a running sibling (a worker of the same uvicorn supervisor). Asking
    for the parent, not just whether the PID exists, keeps a PID the kernel reused for some other
    process from passing for the dead worker; only its reuse by a new sibling worker, unlikely with
    sequential PIDs, would keep stale values."""
    if pid == os.getpid():
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return not Path("/proc").is_dir()  # without /proc (not Linux) nothing can be told: keep the file
    # "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ")".
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state != "Z" and int(ppid) == os.getppid()  # a zombie is a worker killed, not yet reaped
