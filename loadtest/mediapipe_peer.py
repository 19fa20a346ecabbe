"""The peer: MediaPipe 0.10.21's FaceDetection in-process, bytes → cv2 decode → process.

Runs in `.venv-mediapipe` (MediaPipe pins numpy<2), one process per core, on the same photos:

    .venv-mediapipe/bin/python loadtest/mediapipe_peer.py --model short --processes 2 --seconds 20 PHOTO...

Prints one JSON object: images, seconds, images_per_s, per-image latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from pathlib import Path


def worker(args: tuple[list[str], int, float, multiprocessing.Barrier]) -> list[float]:  # type: ignore[type-arg]
    import cv2
    import mediapipe as mp
    import numpy as np

    paths, selection, seconds, barrier = args
    cv2.setNumThreads(1)
    photos = [Path(p).read_bytes() for p in paths]
    detector = mp.solutions.face_detection.FaceDetection(model_selection=selection)

    def once(data: bytes) -> None:
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        detector.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))

    for data in photos:  # warm-up: graph start, first allocations
        once(data)
    barrier.wait()
    latencies = []
    stop_at = time.perf_counter() + seconds
    index = 0
    while time.perf_counter() < stop_at:
        started = time.perf_counter()
        once(photos[index % len(photos)])
        latencies.append((time.perf_counter() - started) * 1e3)
        index += 1
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("photos", nargs="+")
    parser.add_argument("--model", choices=["short", "full"], default="short")
    parser.add_argument("--processes", type=int, default=multiprocessing.cpu_count())
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(args.processes)
    selection = 0 if args.model == "short" else 1
    with context.Pool(args.processes) as pool:
        started = time.perf_counter()
        results = pool.map(worker, [(args.photos, selection, args.seconds, barrier)] * args.processes)
        elapsed = time.perf_counter() - started
    latencies = sorted(v for r in results for v in r)
    seconds = args.seconds
    print(
        json.dumps(
            {
                "images": len(latencies),
                "seconds": seconds,
                "wall_seconds": elapsed,
                "images_per_s": len(latencies) / seconds,
                "p50_ms": latencies[len(latencies) // 2],
                "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            }
        )
    )


if __name__ == "__main__":
    main()
