"""Raw tensors -> scored boxes and keypoints, as MediaPipe's `TensorsToDetectionsCalculator`
(`mediapipe/calculators/tensor/tensors_to_detections_calculator.cc`, CPU path: `ProcessCPU`,
`DecodeBoxes`, `ConvertToDetections`).

BlazeFace's graphs set `reverse_output_order: true`, so each regressor row is
`[x, y, w, h, kp0x, kp0y, ...]` (XYWH), in input pixels relative to the anchor centre. With fixed 1x1
anchors: `centre = reg / scale + anchor`, `size = reg / scale`, `box = centre -/+ size / 2`.

Same results as MediaPipe, with the work reordered: the score filter runs first (in logit space, then
exactly on the few candidates) and only the survivors are decoded (MediaPipe decodes all A rows, then
drops low scores). Like MediaPipe, a box whose decoded width or height is negative or NaN is dropped.
One deliberate difference: a NaN score (only a broken model makes one) is dropped here; MediaPipe's
`score < min_score_thresh` test lets it through.
"""

from __future__ import annotations

import math

import numpy as np

from service.decoding.detections import Detections
from service.specs import DecoderOptions


def scores_from_logits(logits: np.ndarray, clip: float) -> np.ndarray:
    """Sigmoid of the logits clipped to +/-`clip`, float32, by MediaPipe's formula `1 / (1 + exp(-x))`."""
    x = np.clip(np.asarray(logits, np.float32), np.float32(-clip), np.float32(clip))
    # exp(100) overflows float32 to inf and the score comes out 0.0, as in MediaPipe; no warning wanted.
    with np.errstate(over="ignore"):
        return np.float32(1) / (np.float32(1) + np.exp(-x))


def decode_boxes(
    regressors: np.ndarray,
    logits: np.ndarray,
    anchors: np.ndarray,
    opts: DecoderOptions,
    min_score: float,
) -> Detections:
    """Detections with score >= `min_score`, in anchor order, coordinates normalised to the input.

    `regressors` (A, num_coords), `logits` (A,) or (A, 1), `anchors` (A, 2) from `generate_anchors`.
    """
    num_anchors = anchors.shape[0]
    if regressors.shape != (num_anchors, opts.num_coords):
        raise ValueError(f"regressors must be ({num_anchors}, {opts.num_coords}), got {regressors.shape}")
    if logits.shape not in ((num_anchors,), (num_anchors, 1)):
        raise ValueError(f"logits must be ({num_anchors},) or ({num_anchors}, 1), got {logits.shape}")

    flat = logits.reshape(num_anchors)
    # The sigmoid is monotonic, so a cheap comparison in logit space finds the few candidates first and
    # the exact float32 test below runs on those only. The bound errs low: by ~16 float32 ulps of the
    # score carried into logit space (dlogit = dscore / (s (1 - s))), and never above 15 because
    # float32's sigmoid already rounds to 1.0 from a logit of ~16.6.
    threshold = float(np.float32(min_score))
    if threshold <= 0.0:
        candidates = np.arange(num_anchors)
    else:
        if threshold >= 1.0:
            bound = 15.0
        else:
            margin = 1e-3 + 1e-6 / (threshold * (1.0 - threshold))
            # Below -clip every score is sigmoid(-clip) = 0 in float32, under any positive threshold.
            bound = min(
                15.0, max(-opts.score_clipping_thresh, math.log(threshold / (1.0 - threshold)) - margin)
            )
        candidates = np.flatnonzero(flat >= np.float32(bound))
    scores = scores_from_logits(flat[candidates], opts.score_clipping_thresh)
    # MediaPipe compares two floats: cast the threshold so 0.6 means 0.6f, not the double 0.6.
    passed = scores >= np.float32(min_score)
    keep, scores = candidates[passed], scores[passed]
    if keep.size == 0:
        return Detections.empty(opts.num_keypoints)

    raw = np.asarray(regressors[keep], np.float32)
    anchor_xy = anchors[keep][:, None, :]
    scale = np.float32(opts.scale)
    b, k = opts.box_coord_offset, opts.keypoint_coord_offset
    # (centre, size) as two points; keypoints as num_keypoints points (x, y first in each value group)
    box = raw[:, b : b + 4].reshape(-1, 2, 2) / scale
    kp = raw[:, k : k + opts.num_keypoints * opts.num_values_per_keypoint]
    kp = kp.reshape(-1, opts.num_keypoints, opts.num_values_per_keypoint)[:, :, :2]
    keypoints = kp / scale + anchor_xy
    centre = box[:, :1] + anchor_xy
    half = box[:, 1:] / np.float32(2)
    boxes = np.concatenate([centre - half, centre + half], axis=1).reshape(-1, 4)

    # MediaPipe drops boxes of negative or NaN size (b/171391719); `>= 0` is False for NaN.
    valid = np.all(boxes[:, 2:] - boxes[:, :2] >= 0, axis=1)
    if not valid.all():
        scores, boxes, keypoints = scores[valid], boxes[valid], keypoints[valid]
    return Detections(
        scores=scores,
        boxes=np.ascontiguousarray(boxes, np.float32),
        keypoints=np.ascontiguousarray(keypoints, np.float32),
    )
