"""Matching our faces to MediaPipe's reference faces, with the issue's pass mark."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_IOU = 0.9
MAX_SCORE_DIFF = 0.05
MAX_KEYPOINT_ERROR = 0.03  # of the reference box size


@dataclass
class Match:
    iou: float
    score_diff: float
    keypoint_error: float  # worst keypoint distance / reference box size


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_faces(ours: list[dict[str, Any]], reference: list[dict[str, Any]]) -> tuple[list[Match], int, int]:
    """Greedy best-IoU pairing; returns matches, unmatched reference faces and extra faces of ours.

    Faces are dicts like the reference JSON: score, box [x1, y1, x2, y2], keypoints name → [x, y].
    """
    pairs = sorted(
        ((iou(o["box"], r["box"]), i, j) for i, o in enumerate(ours) for j, r in enumerate(reference)),
        reverse=True,
    )
    used_ours: set[int] = set()
    used_ref: set[int] = set()
    matches: list[Match] = []
    for overlap, i, j in pairs:
        if overlap < 0.5 or i in used_ours or j in used_ref:
            continue
        used_ours.add(i)
        used_ref.add(j)
        ref = reference[j]
        size = max(ref["box"][2] - ref["box"][0], ref["box"][3] - ref["box"][1])
        error = max(
            float(np.hypot(*(np.subtract(ours[i]["keypoints"][name], point)))) / size
            for name, point in ref["keypoints"].items()
        )
        matches.append(Match(overlap, abs(ours[i]["score"] - ref["score"]), error))
    return matches, len(reference) - len(used_ref), len(ours) - len(used_ours)


def passes(matches: list[Match], missing: int, extra: int) -> bool:
    return (
        missing == 0
        and extra == 0
        and all(
            m.iou >= MIN_IOU and m.score_diff <= MAX_SCORE_DIFF and m.keypoint_error <= MAX_KEYPOINT_ERROR
            for m in matches
        )
    )
