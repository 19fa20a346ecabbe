"""Plain non-maximum suppression, as `NonMaxSuppression` in MediaPipe's
`mediapipe/calculators/util/non_max_suppression_calculator.cc` (`algorithm: DEFAULT`, IoU overlap).

Walk the detections by score, highest first; keep one unless a detection already kept overlaps it with
IoU strictly above the threshold; stop after `max_detections` kept. Kept detections are returned as they
came in (no averaging). The detections kept are exactly blending's group heads (same order, same
threshold), so the two modes differ only in the coordinates, and in blending's zero-area stop.
Ties are ordered as MediaPipe's `std::sort` orders them (`detections.score_order`).
"""

from __future__ import annotations

import numpy as np

from service.decoding.detections import Detections, Overlaps, score_order


def nms(dets: Detections, iou_threshold: float = 0.3, max_detections: int | None = None) -> Detections:
    """MediaPipe's DEFAULT suppression; output sorted by score, highest first."""
    if max_detections is not None and max_detections < 1:
        # MediaPipe rejects 0 at graph start; "no limit" is None here (-1 there).
        raise ValueError(f"max_detections must be >= 1 or None, got {max_detections}")
    limit = len(dets) if max_detections is None else max_detections
    threshold = np.float32(iou_threshold)  # MediaPipe compares floats: 0.3 means 0.3f
    overlaps = Overlaps(dets.boxes)

    # Each detection kept marks every one it overlaps, which is the same test (IoU is symmetric, exactly:
    # see `pairwise_iou`) at one vector operation per face kept instead of one per candidate.
    everyone = np.arange(len(dets))
    overlapped = np.zeros(len(dets), bool)
    kept: list[int] = []
    for i in score_order(dets.scores):
        if len(kept) >= limit:
            break
        if overlapped[i]:
            continue
        kept.append(int(i))
        overlapped |= overlaps.row(i, everyone) > threshold
    return dets.take(kept)
