"""BlazeFace candidates -> detections, pure numpy, matching MediaPipe's face-detection graph
(`mediapipe/modules/face_detection/face_detection.pbtxt`: SsdAnchorsCalculator ->
TensorsToDetectionsCalculator -> NonMaxSuppressionCalculator WEIGHTED).

    anchors.py    SSD anchor centres per model (cached)
    boxes.py      the graph's top-K candidates -> scored boxes and 6 keypoints (normalised to the input)
    blending.py   MediaPipe's weighted suppression (the default)
    nms.py        MediaPipe's plain suppression
    detections.py the `Detections` struct of arrays and the shared IoU
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from service.decoding.anchors import generate_anchors
from service.decoding.blending import blend
from service.decoding.boxes import decode_boxes, is_truncated
from service.decoding.detections import Detections, iou
from service.decoding.nms import nms
from service.specs import ModelSpec

__all__ = [
    "Detections",
    "Suppression",
    "blend",
    "candidates",
    "decode",
    "decode_boxes",
    "generate_anchors",
    "iou",
    "is_truncated",
    "nms",
    "suppress",
]


class Suppression(StrEnum):
    """How overlapping detections of one face become one (MediaPipe's `NmsAlgorithm`)."""

    BLEND = "blend"  # WEIGHTED: score-weighted mean of the group, MediaPipe's face graphs
    NMS = "nms"  # DEFAULT: keep the best of the group as it is


def decode(
    scores: np.ndarray,
    anchor_indices: np.ndarray,
    regressors: np.ndarray,
    spec: ModelSpec,
    min_score: float | None = None,
    suppression: Suppression = Suppression.BLEND,
) -> Detections:
    """One image's candidates -> its faces, sorted by score (highest first), normalised to the input.

    `scores` (K,), `anchor_indices` (K,) and `regressors` (K, 16) are one row of the backend's outputs
    (`ModelOutputs.row`). `min_score` defaults to the model's graph threshold
    (`spec.decoder.min_score_thresh`).

    >>> from service.specs import SHORT
    >>> K = SHORT.top_k  # scores 0.01: none over the threshold
    >>> scores, indices = np.full(K, 0.01, np.float32), np.arange(K, dtype=np.int32)
    >>> len(decode(scores, indices, np.zeros((K, 16), np.float32), SHORT))
    0
    """
    return suppress(candidates(scores, anchor_indices, regressors, spec, min_score), spec, suppression)


def candidates(
    scores: np.ndarray,
    anchor_indices: np.ndarray,
    regressors: np.ndarray,
    spec: ModelSpec,
    min_score: float | None = None,
) -> Detections:
    """`decode`'s first step: every detection over the threshold, in anchor order, not yet suppressed."""
    threshold = spec.decoder.min_score_thresh if min_score is None else min_score
    anchors = generate_anchors(spec.anchors)
    return decode_boxes(scores, anchor_indices, regressors, anchors, spec.decoder, threshold)


def suppress(dets: Detections, spec: ModelSpec, suppression: Suppression = Suppression.BLEND) -> Detections:
    """`decode`'s second step: one detection per face, sorted by score, highest first."""
    if Suppression(suppression) is Suppression.NMS:  # also accepts the plain string; ValueError else
        return nms(dets, spec.min_suppression_iou)
    return blend(dets, spec.min_suppression_iou)
