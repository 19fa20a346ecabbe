"""`python -m service`: run the HTTP service with the settings from the environment."""

from __future__ import annotations

import os
import signal
import tempfile
from types import FrameType

import uvicorn

from service.logs import log_config
from service.settings import get_settings


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    # uvicorn drains in-flight requests on SIGTERM, then restores the previous handler and re-sends the
    # signal; without this the process would die of it (exit -15) after a clean shutdown.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = get_settings()
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Must be set before any worker imports prometheus_client (see service/metrics.py).
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="blazeface-metrics-")
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="service.api.protocol:BoundedHttpToolsProtocol",  # httptools, bounded: see the module
        timeout_graceful_shutdown=settings.shutdown_grace_s,
        ws_max_size=settings.max_body_bytes,
        # Frames are encoded images, which deflate does not shrink; and the library would inflate a
        # read's worth of frames (1 KB each to MAX_BODY_BYTES) before the upload buffer could count them.
        ws_per_message_deflate=False,
        ws="service.api.ws_protocol:BoundedWebSocketProtocol",  # bounded pongs, see the module
        log_config=log_config(settings.log_format),
        log_level="info",
        access_log=False,
    )


if __name__ == "__main__":
    main()
