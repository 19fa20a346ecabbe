"""Compare our detections with MediaPipe's references, photo by photo (pure Python, any venv).

    python tests/reference/compare.py OURS.json [--reference tests/data/reference_detections.json]

OURS.json has the reference file's shape, at least
``{"photos": {"<photo>": {"detections": {"short": [face, ...], "full": [...]}}}}`` with each face
``{"score": s, "box": [x1, y1, x2, y2], "keypoints": {"right_eye": [x, y], ...}}`` (a list of six [x, y]
in MediaPipe's order works too), in pixels of the upright image. Faces are paired greedily by IoU,
highest first; for each pair it prints the IoU, the score difference and the largest keypoint distance
as a fraction of the reference box width. Exit status 0 always: this is a looking glass, not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference_detections.json"

Box = tuple[float, float, float, float]
Face = dict[str, Any]


def iou(a: Box, b: Box) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def keypoint_list(face: Face, names: list[str]) -> list[tuple[float, float]]:
    kps = face["keypoints"]
    points = [kps[n] for n in names] if isinstance(kps, dict) else kps
    return [(float(x), float(y)) for x, y in points]


def match(ref: list[Face], ours: list[Face]) -> tuple[list[tuple[int, int, float]], list[int], list[int]]:
    """Greedy one-to-one pairing by IoU (> 0), best pair first: (pairs, unmatched ref, unmatched ours)."""
    candidates = sorted(
        (
            (iou(tuple(r["box"]), tuple(o["box"])), i, j)
            for i, r in enumerate(ref)
            for j, o in enumerate(ours)
        ),
        reverse=True,
    )
    used_r: set[int] = set()
    used_o: set[int] = set()
    pairs = []
    for overlap, i, j in candidates:
        if overlap <= 0 or i in used_r or j in used_o:
            continue
        pairs.append((i, j, overlap))
        used_r.add(i)
        used_o.add(j)
    return (
        sorted(pairs),
        [i for i in range(len(ref)) if i not in used_r],
        [j for j in range(len(ours)) if j not in used_o],
    )


def compare_faces(ref: Face, ours: Face, names: list[str]) -> tuple[float, float, float]:
    """(IoU, |score difference|, max keypoint distance / reference box width)."""
    width = ref["box"][2] - ref["box"][0]
    dist = max(
        ((rx - ox) ** 2 + (ry - oy) ** 2) ** 0.5
        for (rx, ry), (ox, oy) in zip(keypoint_list(ref, names), keypoint_list(ours, names), strict=True)
    )
    return iou(tuple(ref["box"]), tuple(ours["box"])), abs(ref["score"] - ours["score"]), dist / width


def report(reference: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    names: list[str] = reference["keypoint_names"]
    lines = []
    worst = {"iou": 1.0, "score": 0.0, "kp": 0.0}
    for photo, ref_photo in reference["photos"].items():
        our_photo = ours.get("photos", {}).get(photo)
        if our_photo is None:
            lines.append(f"{photo}: not in our detections")
            continue
        for model, ref_faces in ref_photo["detections"].items():
            our_faces = our_photo["detections"].get(model, [])
            pairs, lost, extra = match(ref_faces, our_faces)
            lines.append(f"{photo} [{model}] ref {len(ref_faces)} ours {len(our_faces)}")
            for i, j, _ in pairs:
                overlap, dscore, dkp = compare_faces(ref_faces[i], our_faces[j], names)
                worst["iou"] = min(worst["iou"], overlap)
                worst["score"] = max(worst["score"], dscore)
                worst["kp"] = max(worst["kp"], dkp)
                lines.append(
                    f"    ref#{i} ~ ours#{j}: IoU {overlap:.4f}  |dscore| {dscore:.2e}  "
                    f"keypoints {dkp:.2%} of width"
                )
            lines += [f"    ref#{i} (score {ref_faces[i]['score']:.3f}) MISSING" for i in lost]
            lines += [f"    ours#{j} (score {our_faces[j]['score']:.3f}) EXTRA" for j in extra]
    lines.append(
        f"worst matched: IoU {worst['iou']:.4f}, |dscore| {worst['score']:.2e}, "
        f"keypoints {worst['kp']:.2%} of width"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ours", type=Path, help="our detections, in the reference file's shape")
    parser.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    args = parser.parse_args()
    reference = json.loads(args.reference.read_text(encoding="utf-8"))
    ours = json.loads(args.ours.read_text(encoding="utf-8"))
    print("\n".join(report(reference, ours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
