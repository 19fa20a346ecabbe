"""GPU check: what JPEG decoding and batch copies cost on this machine's GPU, in a few minutes, pip only.

    pip install torch torchvision     # CUDA wheels from PyPI; no Docker, no Triton
    python -m loadtest.gpu_check [--seconds 3] [--decode-batch 16] [--batch 64] [--out PATH]

1. nvJPEG: `torchvision.io.decode_jpeg(device="cuda")` on the benchmark photo mix
   (blazeface_tools/testkit/photos.py: 640×480, 1280×720, 1920×1080, 12 MP), one image per call and
   --decode-batch images per call (a list: nvJPEG's batched decode), images/s per size; beside it, a
   full CPU decode (`cv2.imdecode`, one thread: what one API decode thread does in `exact` mode).
2. Host↔device copies of one model batch (uint8 images in; the graph's outputs, `ModelOutputs`, out) for
   each model at --batch images, from pageable and from pinned host memory: ms per batch and GB/s each way.

Prints a table and writes loadtest/results/gpu_check.json. Takes well under 5 minutes (each measurement
runs --seconds, or --repeats copies). Exit status: 0 measured; 3 nothing measured, because torch or
torchvision is not installed or no CUDA device is visible (the message says which; the JSON records it).
A measurement, not a test: nothing here asserts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np

from blazeface_tools import CHECKOUT as REPO_ROOT
from blazeface_tools.testkit import photos
from service.backends.base import output_shapes
from service.specs import MODELS

RESULTS = REPO_ROOT / "loadtest" / "results" / "gpu_check.json"
NOT_MEASURED = 3  # exit status when there is no torch or no GPU


@dataclass(frozen=True)
class DecodeRow:
    photo: str  # photos.SIZES key
    kilobytes: int
    cpu_images_per_s: float  # cv2.imdecode, one thread
    gpu_images_per_s: float  # decode_jpeg(device="cuda"), one image per call
    gpu_batched_images_per_s: float  # decode_jpeg(list, device="cuda")


@dataclass(frozen=True)
class CopyRow:
    model: str
    batch: int
    memory: str  # "pageable" or "pinned"
    h2d_ms: float  # the input batch to the GPU
    d2h_ms: float  # both outputs back
    h2d_gb_s: float
    d2h_gb_s: float


@dataclass
class Report:
    measured: bool
    reason: str = ""  # why nothing was measured
    machine: dict[str, str] = field(default_factory=dict)
    decode: list[DecodeRow] = field(default_factory=list)
    copies: list[CopyRow] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per decode measurement")
    parser.add_argument("--decode-batch", type=int, default=16, help="images per batched decode call")
    parser.add_argument("--batch", type=int, default=64, help="images per copied model batch")
    parser.add_argument("--repeats", type=int, default=50, help="copies timed per row (median)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for name in ("seconds", "decode_batch", "batch", "repeats"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    return args


def load_torch(
    import_module: Callable[[str], ModuleType] = importlib.import_module,
) -> tuple[ModuleType, ModuleType] | str:
    """(torch, torchvision), imported only now, or why the check cannot run."""
    try:
        torch, torchvision = import_module("torch"), import_module("torchvision")
    except ImportError as exc:
        return f"{exc.name or 'torch'} is not installed: pip install torch torchvision (CUDA wheels)"
    if not torch.cuda.is_available():
        return f"no CUDA device visible to torch {torch.__version__} (CUDA build: {torch.version.cuda})"
    return torch, torchvision


def rate(work: Callable[[], int], seconds: float, sync: Callable[[], None] = lambda: None) -> float:
    """Items per second of `work` (which returns the items it did), after one warm-up call."""
    work()
    sync()
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        done += work()
    sync()
    return done / (time.perf_counter() - began)


def measure_decode(torch: Any, torchvision: Any, args: argparse.Namespace) -> list[DecodeRow]:
    cv2.setNumThreads(1)
    return [
        decode_row(torch, torchvision, name, path.read_bytes(), args) for name, path in photos.build().items()
    ]


def decode_row(torch: Any, torchvision: Any, name: str, data: bytes, args: argparse.Namespace) -> DecodeRow:
    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    batch = [encoded] * args.decode_batch

    def cpu() -> int:
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        return 1

    def gpu() -> int:
        torchvision.io.decode_jpeg(encoded, device="cuda")
        return 1

    def gpu_batched() -> int:
        return len(torchvision.io.decode_jpeg(batch, device="cuda"))

    sync = torch.cuda.synchronize
    return DecodeRow(
        photo=name,
        kilobytes=len(data) // 1024,
        cpu_images_per_s=round(rate(cpu, args.seconds), 1),
        gpu_images_per_s=round(rate(gpu, args.seconds, sync), 1),
        gpu_batched_images_per_s=round(rate(gpu_batched, args.seconds, sync), 1),
    )


def median_ms(copy: Callable[[], None], torch: Any, repeats: int) -> float:
    copy()  # warm-up: allocations, the copy engine
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        copy()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - began) * 1e3)
    return statistics.median(times)


def measure_copies(torch: Any, args: argparse.Namespace) -> list[CopyRow]:
    return [copy_row(torch, model, memory, args) for model in MODELS for memory in ("pageable", "pinned")]


def copy_row(torch: Any, model: str, memory: str, args: argparse.Namespace) -> CopyRow:
    """One model batch in (uint8 images) and out (the graph's outputs), between preallocated GPU buffers
    and host memory of the given kind."""
    spec = MODELS[model]
    size = spec.input_size
    images = (args.batch, size, size, 3)
    outputs = [
        (getattr(torch, dtype.name), (args.batch, *shape)) for dtype, shape in output_shapes(spec).values()
    ]
    pinned = memory == "pinned"
    gpu_in = torch.empty(images, dtype=torch.uint8, device="cuda")
    gpu_out = [torch.empty(shape, dtype=dtype, device="cuda") for dtype, shape in outputs]
    host_in = torch.zeros(images, dtype=torch.uint8, pin_memory=pinned)
    host_out = [torch.empty(shape, dtype=dtype, pin_memory=pinned) for dtype, shape in outputs]

    def h2d() -> None:
        gpu_in.copy_(host_in, non_blocking=pinned)

    def d2h() -> None:
        for target, source in zip(host_out, gpu_out, strict=True):
            target.copy_(source, non_blocking=pinned)

    h2d_ms, d2h_ms = median_ms(h2d, torch, args.repeats), median_ms(d2h, torch, args.repeats)
    in_bytes, out_bytes = host_in.numel(), sum(t.numel() * t.element_size() for t in host_out)
    return CopyRow(
        model=model,
        batch=args.batch,
        memory=memory,
        h2d_ms=round(h2d_ms, 3),
        d2h_ms=round(d2h_ms, 3),
        h2d_gb_s=round(in_bytes / h2d_ms / 1e6, 2),
        d2h_gb_s=round(out_bytes / d2h_ms / 1e6, 2),
    )


def render_table(report: Report) -> str:
    if not report.measured:
        return f"GPU check not run: {report.reason}"
    lines = [
        f"GPU: {report.machine.get('gpu', '?')}",
        "",
        "| photo | KiB | CPU img/s (1 thread) | nvJPEG img/s | nvJPEG batched img/s |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.photo} | {r.kilobytes} | {r.cpu_images_per_s:.1f} | {r.gpu_images_per_s:.1f} | "
        f"{r.gpu_batched_images_per_s:.1f} |"
        for r in report.decode
    ]
    lines += [
        "",
        "| model | batch | host memory | H2D ms | D2H ms | H2D GB/s | D2H GB/s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.model} | {r.batch} | {r.memory} | {r.h2d_ms:.3f} | {r.d2h_ms:.3f} | {r.h2d_gb_s:.2f} | "
        f"{r.d2h_gb_s:.2f} |"
        for r in report.copies
    ]
    return "\n".join(lines)


def write_report(report: Report, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(report), indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loaded = load_torch()
    if isinstance(loaded, str):
        report = Report(measured=False, reason=loaded)
    else:
        torch, torchvision = loaded
        report = Report(
            measured=True,
            machine={
                "gpu": torch.cuda.get_device_name(0),
                "compute_capability": "{}.{}".format(*torch.cuda.get_device_capability(0)),
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "cuda": str(torch.version.cuda),
                "platform": platform.platform(),
            },
        )
        report.decode = measure_decode(torch, torchvision, args)
        report.copies = measure_copies(torch, args)
    print(render_table(report), file=sys.stdout if report.measured else sys.stderr)
    write_report(report, args.out)
    print(f"wrote {args.out}")
    return 0 if report.measured else NOT_MEASURED


if __name__ == "__main__":
    raise SystemExit(main())
