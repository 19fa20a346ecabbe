"""BlazeFace raw tensors -> detections, pure numpy, matching MediaPipe's face-detection graph
(`mediapipe/modules/face_detection/face_detection.pbtxt`: SsdAnchorsCalculator ->
TensorsToDetectionsCalculator -> NonMaxSuppressionCalculator WEIGHTED).

    anchors.py    SSD anchor centres per model (cached)
    boxes.py      regressors + logits -> scored boxes and 6 keypoints (normalised to the model input)
    blending.py   MediaPipe's weighted suppression (the default)
    nms.py        MediaPipe's plain suppression
    detections.py the `Detections` struct of arrays and the shared IoU
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from service.decoding.anchors import generate_anchors
from service.decoding.blending import blend
from service.decoding.boxes import decode_boxes
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
    "nms",
    "suppress",
]


class Suppression(StrEnum):
    """How overlapping detections of one face become one (MediaPipe's `NmsAlgorithm`)."""

    BLEND = "blend"  # WEIGHTED: score-weighted mean of the group, MediaPipe's face graphs
    NMS = "nms"  # DEFAULT: keep the best of the group as it is


def decode(
    regressors: np.ndarray,
    logits: np.ndarray,
    spec: ModelSpec,
    min_score: float | None = None,
    suppression: Suppression = Suppression.BLEND,
) -> Detections:
    """One image's raw outputs -> its faces, sorted by score (highest first), normalised to the input.

    `regressors` (A, 16) and `logits` (A, 1) or (A,) are one row of the backend's batch. `min_score`
    defaults to the model's graph threshold (`spec.decoder.min_score_thresh`).

    >>> from service.specs import SHORT
    >>> A = SHORT.decoder.num_boxes
    >>> len(decode(np.zeros((A, 16), np.float32), np.full((A, 1), -5, np.float32), SHORT))
    0
    """
    return suppress(candidates(regressors, logits, spec, min_score), spec, suppression)


def candidates(
    regressors: np.ndarray, logits: np.ndarray, spec: ModelSpec, min_score: float | None = None
) -> Detections:
    """`decode`'s first step: every detection over the threshold, in anchor order, not yet suppressed."""
    threshold = spec.decoder.min_score_thresh if min_score is None else min_score
    return decode_boxes(regressors, logits, generate_anchors(spec.anchors), spec.decoder, threshold)


def suppress(dets: Detections, spec: ModelSpec, suppression: Suppression = Suppression.BLEND) -> Detections:
    """`decode`'s second step: one detection per face, sorted by score, highest first."""
    if Suppression(suppression) is Suppression.NMS:  # also accepts the plain string; ValueError else
        return nms(dets, spec.min_suppression_iou)
    return blend(dets, spec.min_suppression_iou)
