"""`python -m blazeface_tools.triton_cpu`: run the CPU Triton server until SIGTERM (deploy/triton-cpu.sh)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from blazeface_tools import TRITON_REPO
from blazeface_tools.triton_cpu.server import DEFAULT_MODELS, Ports, TritonServer, TritonServerError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the CPU Triton server (nvidia-pytriton's binary).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=Ports.http)
    parser.add_argument("--grpc-port", type=int, default=Ports.grpc)
    parser.add_argument("--metrics-port", type=int, default=Ports.metrics)
    parser.add_argument("--model-repository", type=Path, default=TRITON_REPO)
    parser.add_argument("--model", action="append", dest="models", help="repeatable; default: the CPU models")
    parser.add_argument("--model-env", type=Path, help="venv for the Python-backend models")
    parser.add_argument("--log", type=Path, help="append Triton's log here instead of stdout")
    parser.add_argument("--start-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)

    server = TritonServer(
        model_repository=args.model_repository,
        models=args.models or DEFAULT_MODELS,
        host=args.host,
        ports=Ports(http=args.http_port, grpc=args.grpc_port, metrics=args.metrics_port),
        model_env=args.model_env,
        log_path=args.log,
    )
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        took = server.start(timeout_s=args.start_timeout)
        print(
            f"tritonserver ready in {took:.1f} s: gRPC {server.grpc_url}, HTTP {server.http_url}", flush=True
        )
        while not stopping.wait(0.5):
            if not server.running():
                print("tritonserver exited", file=sys.stderr)
                return 1
        return 0
    except TritonServerError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
