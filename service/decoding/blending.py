"""Weighted suppression ("blending"), as `WeightedNonMaxSuppression` in MediaPipe's
`mediapipe/calculators/util/non_max_suppression_calculator.cc` (`algorithm: WEIGHTED`,
`overlap_type: INTERSECTION_OVER_UNION`, the face-detection graphs' threshold 0.3).

Take the best remaining detection (the head); its group is every remaining detection, the head
included, whose IoU with the head is strictly above the threshold; emit the group's score-weighted mean
box and keypoints with the head's own score (not an average); drop the group; repeat. No cap on the count.

Details kept from MediaPipe:
- float32 sums, accumulated in score order, left to right, as its loop does;
- a head whose IoU with itself is not above the threshold (a zero-area or NaN box) forms no group: it is
  emitted unchanged and the loop stops there, dropping the rest (its "no progress" guard);
- ties in score are ordered as its (unstable) `std::sort` orders them: see `detections.score_order`.
"""

from __future__ import annotations

import numpy as np

from service.decoding.detections import Detections, Overlaps, score_order


def blend(dets: Detections, iou_threshold: float = 0.3) -> Detections:
    """MediaPipe's WEIGHTED suppression; output sorted by score, highest first."""
    n = len(dets)
    if n == 0:
        return dets
    threshold = np.float32(iou_threshold)  # MediaPipe compares floats: 0.3 means 0.3f
    scores = dets.scores.astype(np.float32, copy=False)
    # boxes and keypoints side by side: one weighted mean per group instead of two
    coords = np.concatenate([dets.boxes, dets.keypoints.reshape(n, -1)], axis=1).astype(np.float32)
    overlaps = Overlaps(coords[:, :4])

    heads: list[int] = []
    blended: list[np.ndarray] = []
    remaining = score_order(scores)
    while remaining.size:
        head = remaining[0]
        in_group = overlaps.row(head, remaining) > threshold
        heads.append(head)
        if not in_group.any():
            blended.append(coords[head])
            break
        group = remaining[in_group]
        weights = scores[group]
        # MediaPipe adds one candidate at a time in float32 (np.sum would add pairwise): accumulate, take
        # the last row. Groups of one go through it too, as there: x * w / w can move x by an ulp.
        total = np.add.accumulate(weights)[-1]
        if total > 0:
            blended.append(np.add.accumulate(coords[group] * weights[:, None], axis=0)[-1] / total)
        else:  # every score is exactly 0 (min_score=0 keeps them): MediaPipe would divide 0 by 0
            blended.append(coords[head])
        remaining = remaining[~in_group]

    out = np.stack(blended)
    return Detections(
        scores=scores[heads],
        boxes=np.ascontiguousarray(out[:, :4]),
        keypoints=out[:, 4:].reshape(len(heads), *dets.keypoints.shape[1:]),
    )
