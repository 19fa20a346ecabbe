"""Run MediaPipe's own face detection on the photo set; write ``tests/data/reference_detections.json``.

Runs in ``.venv-mediapipe`` (mediapipe==0.10.21 pins numpy<2, so it cannot live in the project's venv).
Per photo: decode with ``cv2.imdecode(buf, cv2.IMREAD_COLOR)`` — Exif orientation applied, alpha dropped
(colour channels kept as stored, not composited), grey expanded to three equal channels — convert BGR to
RGB and run the legacy ``mp.solutions.face_detection.FaceDetection`` with model_selection 0 (short) and
1 (full). That solution keeps its graphs' own score thresholds (0.5 short, 0.6 full) whatever
``min_detection_confidence`` says (ARCHITECTURE.md §5), so the references are the graphs' defaults.

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
from make_photos import CATALOGUE, PHOTOS_DIR, REPO

OUT = REPO / "tests" / "data" / "reference_detections.json"
MODELS = {"short": 0, "full": 1}  # our model name -> MediaPipe's model_selection
MIN_SCORE = {"short": 0.5, "full": 0.6}  # the graphs' thresholds, for the record (not settable here)
INPUT_SIZE = {"short": 128, "full": 192}
# MediaPipe's keypoint order; the subject's right/left.
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")
NEAR_THRESHOLD = 0.05  # scores this close to the threshold are flagged: they may flip on tiny differences


def decode(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit("OpenCV could not decode a photo")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def detect(rgb: np.ndarray, model: str) -> list[dict[str, Any]]:
    h, w = rgb.shape[:2]
    # A fresh graph per photo: no state can carry over from one image to the next.
    with mp.solutions.face_detection.FaceDetection(model_selection=MODELS[model]) as detector:
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
        },
        "models": {
            model: {
                "model_selection": MODELS[model],
                "min_score": MIN_SCORE[model],
                "input_size": INPUT_SIZE[model],
            }
            for model in MODELS
        },
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
    rows = [f"{'photo':42s} {'WxH':>10s}  {'short':<28s} {'full':<40s}", "-" * 124]
    for name, p in ref["photos"].items():
        cells = []
        for model in MODELS:
            scores = [d["score"] for d in p["detections"][model]]
            marks = [f"{s:.2f}{'*' if s - MIN_SCORE[model] < NEAR_THRESHOLD else ''}" for s in scores]
            cells.append(f"{len(scores)} ({' '.join(marks)})" if scores else "0")
        rows.append(f"{name:42s} {p['width']:>5d}x{p['height']:<5d} {cells[0]:<28s} {cells[1]:<40s}")
    thresholds = f"{MIN_SCORE['short']} short, {MIN_SCORE['full']} full"
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
