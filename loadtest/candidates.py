"""How many candidates are over the score threshold per image: the measurement behind `ModelSpec.top_k`.

    python -m loadtest.candidates [--thresholds 0.3 0.1] [--modes exact fast]

For every model and every image of tests/data/photos and tests/data/eval/images (the crowded ones: the
head-crop grids and the VOC group photos), preprocessed as the service does, count the anchors whose
score is at or over the model's default threshold and each `--thresholds` value (min_score values people
use). The scores are the graph's own: each model is converted once more with top_k = every anchor, so
nothing here re-implements MediaPipe's score. Also the faces the service finds at the default threshold
(candidates per face) and how many images the shipped top_k truncates (all K over the threshold).
Prints markdown tables and writes loadtest/results/candidates.json. A measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from blazeface_tools import CHECKOUT as REPO_ROOT
from blazeface_tools.weights import tflite_to_onnx
from blazeface_tools.weights.fetch import ensure_tflite
from service.backends.base import output_shapes
from service.imaging import preprocess
from service.options import Preprocess
from service.pipeline import Detector
from service.specs import MODELS, ModelSpec

RESULTS = REPO_ROOT / "loadtest" / "results" / "candidates.json"
PHOTO_DIRS = (REPO_ROOT / "tests" / "data" / "photos", REPO_ROOT / "tests" / "data" / "eval" / "images")
MAX_PIXELS = 50_000_000  # the 12 MP photo fits


def photos() -> list[Path]:
    return sorted(p for d in PHOTO_DIRS for p in d.rglob("*") if p.suffix.lower() in {".jpg", ".png"})


def every_anchor_session(spec: ModelSpec) -> ort.InferenceSession:
    """The model converted with top_k = all its anchors: every anchor's score, as the graph computes it."""
    tflite, _ = ensure_tflite(spec)
    model = tflite_to_onnx.convert(
        tflite.read_bytes(), top_k=spec.decoder.num_boxes, score_clip=spec.decoder.score_clipping_thresh
    )
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def bytes_per_image(spec: ModelSpec) -> dict[str, int]:
    before = spec.decoder.num_boxes * (spec.decoder.num_coords + 1) * 4  # every anchor's float32 outputs
    after = sum(dtype.itemsize * int(np.prod(shape)) for dtype, shape in output_shapes(spec).values())
    return {"input": spec.input_size**2 * 3, "every_anchor": before, "top_k": after}


def measure(
    spec: ModelSpec, mode: Preprocess, thresholds: list[float], files: list[Path], detector: Detector
) -> dict[str, Any]:
    session = every_anchor_session(spec)
    rows = []
    for path in files:
        data = path.read_bytes()
        tensor, _ = preprocess(data, spec.input_size, mode, max_pixels=MAX_PIXELS)
        scores = session.run(["scores"], {"image": tensor[None]})[0][0]
        counts = {str(t): int((scores >= np.float32(t)).sum()) for t in thresholds}
        faces = len(detector.detect(data, model=spec.name, preprocess=mode))
        rows.append({"image": path.relative_to(REPO_ROOT).as_posix(), "faces": faces, "over": counts})
    summary = {}
    for t in thresholds:
        counts = np.array([row["over"][str(t)] for row in rows])
        summary[str(t)] = {
            "max": int(counts.max()),
            "p90": float(np.percentile(counts, 90)),
            "median": float(np.median(counts)),
            "truncated": int((counts >= spec.top_k).sum()),
        }
    faces = sum(row["faces"] for row in rows)
    default = str(thresholds[0])
    per_face = sum(row["over"][default] for row in rows) / max(faces, 1)
    rows.sort(key=lambda row: -row["over"][str(thresholds[-1])])
    return {"summary": summary, "faces": faces, "per_face": round(per_face, 2), "images": rows}


def render(results: dict[str, Any]) -> str:
    lines = [
        "| model | mode | threshold | max | p90 | median | images with ≥ K over it |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, result in results["runs"].items():
        model, mode = key.split("/")
        for threshold, s in result["summary"].items():
            lines.append(
                f"| {model} | {mode} | {threshold} | {s['max']} | {s['p90']:.0f} | {s['median']:.0f} | "
                f"{s['truncated']} of {len(result['images'])} |"
            )
    lines += [
        "",
        "| model | K | bytes per image: input | every anchor's outputs | top-K outputs |",
        "|---|---|---|---|---|",
    ]
    for name, b in results["bytes"].items():
        k = MODELS[name].top_k
        lines.append(f"| {name} | {k} | {b['input']} | {b['every_anchor']} | {b['top_k']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.1])
    parser.add_argument(
        "--modes", nargs="+", choices=[m.value for m in Preprocess], default=["exact", "fast"]
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS))
    args = parser.parse_args()
    files, detector = photos(), Detector()
    results: dict[str, Any] = {"photos": len(files), "runs": {}, "bytes": {}}
    for name in args.models:
        spec = MODELS[name]
        thresholds = [spec.decoder.min_score_thresh, *args.thresholds]
        results["bytes"][name] = bytes_per_image(spec)
        for mode in args.modes:
            results["runs"][f"{name}/{mode}"] = measure(spec, Preprocess(mode), thresholds, files, detector)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    print(render(results))
    for key, result in results["runs"].items():
        top = ", ".join(f"{row['image'].rsplit('/', 1)[-1]} {row['over']}" for row in result["images"][:3])
        print(f"{key}: {result['faces']} faces, {result['per_face']} candidates per face; most: {top}")


if __name__ == "__main__":
    main()
