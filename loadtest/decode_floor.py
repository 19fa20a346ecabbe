"""The CPU floor under the HTTP figure: each stage of one image timed alone, on one core.

    python -m loadtest.decode_floor [--repeats 40] [--cores 2]

Per photo of the benchmark mix (blazeface_tools/testkit/photos.py): the service's `fast` preprocessing
(JPEG decoded at the DCT scale, then the letterbox warp), the same decode to grey (no chroma work at all:
what is left is entropy decoding), and the peer's full-size decode (`cv2.imdecode` + RGB, as
loadtest/mediapipe_peer.py does); then the short model's ONNX Runtime call at batch 1. Their sum over
the mix bounds what `cores` cores can serve before any HTTP, also given as a multiple of the MediaPipe
peer's rate (bench.py's peer row, run here for `--peer-seconds`; needs `.venv-mediapipe`). Prints a
table and writes loadtest/results/decode_floor.json. A benchmark, not a test: nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from blazeface_tools import CHECKOUT as REPO_ROOT
from blazeface_tools.testkit import photos
from loadtest import bench, bench_model
from service.imaging import Preprocess, preprocess
from service.imaging.decode import decode
from service.specs import MODELS

RESULTS = REPO_ROOT / "loadtest" / "results" / "decode_floor.json"
TRUSTED = 1 << 30  # the mix's own photos: no pixel limit to speak of
GREY_AT_SCALE = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def median_ms(work: Callable[[], object], repeats: int) -> float:
    work()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def stage_times(data: bytes, size: int, repeats: int) -> dict[str, float]:
    buffer = np.frombuffer(data, np.uint8)
    scale = decode(data, max_pixels=TRUSTED, min_long_side=2 * size).scale  # as FAST picks it
    return {
        "dct_scale": scale,
        "service_fast_ms": median_ms(
            lambda: preprocess(data, size, Preprocess.FAST, max_pixels=TRUSTED), repeats
        ),
        "grey_same_scale_ms": median_ms(lambda: cv2.imdecode(buffer, GREY_AT_SCALE[scale]), repeats),
        "peer_full_decode_ms": median_ms(
            lambda: cv2.cvtColor(cv2.imdecode(buffer, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), repeats
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--peer-seconds", type=float, default=20.0)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    size = MODELS["short"].input_size
    paths = list(photos.build().values())
    rows = {path.name: stage_times(path.read_bytes(), size, args.repeats) for path in paths}
    [model] = bench_model.run(["short"], [1], [1], repeats=200, rounds=2, budget_s=4.0, spin=False)
    mean = {key: statistics.fmean(row[key] for row in rows.values()) for key in next(iter(rows.values()))}
    per_image_ms = mean["service_fast_ms"] + model.ms_per_image
    floor = args.cores * 1e3 / per_image_ms
    peer = bench.peer([str(p) for p in paths], "short", args.peer_seconds, args.cores)
    report = {
        "cores": args.cores,
        "photos": rows,
        "mix_mean": mean,
        "model_ms_per_image": model.ms_per_image,
        "floor_images_per_s": floor,
        "peer_images_per_s": peer["images_per_s"] if peer else None,
        "floor_over_peer": floor / peer["images_per_s"] if peer else None,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    print("| photo | DCT scale | fast decode + letterbox ms | grey, same scale ms | peer full decode ms |")
    print("|---|---|---|---|---|")
    for name, row in [*rows.items(), ("mix mean", mean)]:
        print(
            f"| {name} | {row['dct_scale']:.0f} | {row['service_fast_ms']:.2f} | "
            f"{row['grey_same_scale_ms']:.2f} | {row['peer_full_decode_ms']:.2f} |"
        )
    print(f"\nshort model, ORT batch 1, one thread: {model.ms_per_image:.2f} ms per image")
    versus = f" = {floor / peer['images_per_s']:.2f}× the peer's {peer['images_per_s']:.1f}" if peer else ""
    print(f"floor on {args.cores} cores, before HTTP: {floor:.0f} images/s{versus}")
    print(f"(written to {Path(RESULTS).relative_to(REPO_ROOT)})")


if __name__ == "__main__":
    main()
