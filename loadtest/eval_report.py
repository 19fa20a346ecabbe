"""The paper's measurements on our pipeline: jitter (blend vs NMS) and AP (exact vs fast preprocessing).

    python -m loadtest.eval_report [--threads 1] [--shifts 1..8] [--low-score 0.1]

- Jitter (`blazeface_tools/evaluation/jitter.py` has the definition): every model, blending vs NMS, on the
  reference photos (`tests/data/photos/`) and on the labelled set's original photos
  (`tests/data/eval/images/dlib/`), preprocess `exact`.
- Video mode (`blazeface_tools/evaluation/video.py`):
  still clips with per-frame noise, raw vs smoothed tracks.
- AP (`blazeface_tools/evaluation/ap.py`): every model × `exact`/`fast` on the labelled set
  (`tests/data/eval/labels.txt`), overall and per subset (original photos, 40 % low-resolution copies,
  2×2 grids), once at the service's own score thresholds (what clients get) and once at `--low-score`
  (a longer precision/recall curve: closer to the model's AP).

Writes `loadtest/results/eval.json` and prints markdown tables. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from blazeface_tools import CHECKOUT as REPO_ROOT
from blazeface_tools.evaluation.ap import EvalConfig
from blazeface_tools.evaluation.cli import (
    ap_markdown,
    expand_photos,
    jitter_markdown,
    parse_shifts,
    run_ap,
    run_jitter,
    run_video,
    video_markdown,
)
from blazeface_tools.evaluation.jitter import JitterConfig
from service.pipeline import Detector
from service.specs import MODELS as SPECS

RESULTS = REPO_ROOT / "loadtest" / "results" / "eval.json"
EVAL = REPO_ROOT / "tests" / "data" / "eval"
JITTER_SETS = {
    "reference photos (tests/data/photos)": [REPO_ROOT / "tests" / "data" / "photos"],
    "labelled originals (tests/data/eval/images/dlib)": [EVAL / "images" / "dlib"],
}
SUBSETS = {"original photos": "dlib/", "low-resolution copies (40 %)": "lowres/", "2×2 grids": "grid/"}
MODELS = tuple(SPECS)
VIDEO_PHOTOS = [
    REPO_ROOT / "tests" / "data" / "photos" / name
    for name in (
        "astronaut.jpg",
        "grace_hopper.jpg",
        "voc_2008_002506_three_faces.jpg",
        "grid_2x2_head_crops_1024.jpg",
    )
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--shifts", nargs="+", default=["1..8"], help="jitter shift magnitudes, input px")
    parser.add_argument("--low-score", type=float, default=0.1, help="score threshold of the second AP run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    detector = Detector(threads=args.threads)
    started = time.perf_counter()
    jitter: dict[str, Any] = {}
    ap: dict[str, Any] = {}
    jitter_config = JitterConfig(shifts=parse_shifts(args.shifts))
    for name, paths in JITTER_SETS.items():
        result = run_jitter(detector, expand_photos(paths), MODELS, jitter_config)
        jitter[name] = result
        print(f"### Jitter — {name}, preprocess exact, shifts {list(jitter_config.shifts)} input px\n")
        print(jitter_markdown(result))
        medians = ", ".join(f"{m} {result['models'][m]['median_photo_reduction']}" for m in MODELS)
        print(f"\nmedian per-photo reduction: {medians}\n")

    labels, images = EVAL / "labels.txt", EVAL / "images"
    for key, min_score in (("service thresholds", None), (f"min_score {args.low_score:g}", args.low_score)):
        result = run_ap(detector, labels, images, MODELS, ("exact", "fast"), EvalConfig(), min_score, SUBSETS)
        ap[key] = result
        print(f"### AP at IoU 0.5 — {key}\n")
        print(ap_markdown(result) + "\n")

    video = run_video(detector, VIDEO_PHOTOS, MODELS, frames=60, noise=4.0)
    print("### Video mode — tracked faces, raw vs One-Euro smoothing\n")
    print(video_markdown(video) + "\n")

    seconds = round(time.perf_counter() - started, 1)
    report = {
        "machine": {
            "python": platform.python_version(),
            "processor": platform.machine(),
            "cpus": os.cpu_count(),
        },
        "onnxruntime_threads": args.threads,
        "seconds": seconds,
        "jitter": jitter,
        "ap": ap,
        "video": video,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} ({seconds} s)")


if __name__ == "__main__":
    main()
