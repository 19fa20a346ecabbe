"""The CPU floor under the HTTP figure: each stage of one image timed alone, on one core.

    python -m loadtest.decode_floor [--repeats 40] [--peer-seconds 20]

Per photo of the benchmark mix (blazeface_tools/testkit/photos.py): the service's `fast` preprocessing
(JPEG decoded at the DCT scale, then the letterbox warp), the same decode to grey (no chroma work at all:
what is left is entropy decoding), and the peer's full-size decode (`cv2.imdecode` + RGB, as
loadtest/mediapipe_peer.py does); then the short model's ONNX Runtime call at batch 1. Everything,
the peer (bench.py's peer row, one process; needs `.venv-mediapipe`) included, runs pinned to one
core, so the two sides' core time per image compare like for like: their ratio is the most that
HTTP / MediaPipe could reach with HTTP, batching and post-processing free. Prints a table and writes
loadtest/results/decode_floor.json. A benchmark, not a test: nothing asserts.
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
    parser.add_argument("--peer-seconds", type=float, default=20.0)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # inherited by the peer's processes
    cv2.setNumThreads(1)
    size = MODELS["short"].input_size
    paths = list(photos.build().values())
    rows = {path.name: stage_times(path.read_bytes(), size, args.repeats) for path in paths}
    [model] = bench_model.run(["short"], [1], [1], repeats=200, rounds=2, budget_s=4.0, spin=False)
    mean = {key: statistics.fmean(row[key] for row in rows.values()) for key in next(iter(rows.values()))}
    ours_ms = mean["service_fast_ms"] + model.ms_per_image
    peer = bench.peer([str(p) for p in paths], "short", args.peer_seconds, processes=1)
    peer_ms = 1e3 / peer["images_per_s"] if peer else None
    report = {
        "photos": rows,
        "mix_mean": mean,
        "model_ms_per_image": model.ms_per_image,
        "ours_core_ms_per_image": ours_ms,
        "peer_core_ms_per_image": peer_ms,
        "ceiling_http_over_peer": peer_ms / ours_ms if peer_ms else None,
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
    print(f"ours: decode, letterbox and model {ours_ms:.2f} ms of one core per image")
    if peer_ms:
        print(f"MediaPipe peer, one process on the same core: {peer_ms:.2f} ms per image")
        print(f"ceiling on HTTP / MediaPipe: {peer_ms / ours_ms:.2f}×")
    print(f"(written to {Path(RESULTS).relative_to(REPO_ROOT)})")


if __name__ == "__main__":
    main()
