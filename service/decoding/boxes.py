"""The model's candidates -> scored boxes and keypoints, as MediaPipe's `TensorsToDetectionsCalculator`
(`mediapipe/calculators/tensor/tensors_to_detections_calculator.cc`, CPU path: `ProcessCPU`,
`DecodeBoxes`, `ConvertToDetections`).

BlazeFace's graphs set `reverse_output_order: true`, so each regressor row is
`[x, y, w, h, kp0x, kp0y, ...]` (XYWH), in input pixels relative to the anchor centre. With fixed 1x1
anchors: `centre = reg / scale + anchor`, `size = reg / scale`, `box = centre -/+ size / 2`.

Same results as MediaPipe, with the work reordered: the graph already scored every anchor (the sigmoid
of its logit clipped to +/-score_clipping_thresh) and returns the K best (`ModelSpec.top_k`), so only
those are thresholded and decoded here (MediaPipe decodes all A rows, then drops low scores). While
fewer than K are over the threshold, the set is MediaPipe's exactly; `is_truncated` says when it may
not be. Like MediaPipe, a box whose decoded width or height is negative or NaN is dropped. One
deliberate difference: a NaN score (only a broken model makes one) is dropped here; MediaPipe's
`score < min_score_thresh` test lets it through.
"""

from __future__ import annotations

import numpy as np

from service.decoding.detections import Detections
from service.specs import DecoderOptions


def over_threshold(scores: np.ndarray, min_score: float) -> np.ndarray:
    """MediaPipe's test, inclusive and between floats: 0.6 means 0.6f, not the double 0.6; NaN fails."""
    return np.asarray(scores) >= np.float32(min_score)


def is_truncated(scores: np.ndarray, min_score: float) -> bool:
    """Whether all of the graph's K candidates are over the threshold: others past them may be too."""
    return bool(over_threshold(scores, min_score).all())


def decode_boxes(
    scores: np.ndarray,
    anchor_indices: np.ndarray,
    regressors: np.ndarray,
    anchors: np.ndarray,
    opts: DecoderOptions,
    min_score: float,
) -> Detections:
    """Detections with score >= `min_score`, in anchor order, coordinates normalised to the input.

    `scores` (K,), `anchor_indices` (K,) and `regressors` (K, num_coords) are one image's candidates
    (a row of `ModelOutputs`); `anchors` (A, 2) from `generate_anchors`.
    """
    count = scores.shape[0] if scores.ndim == 1 else -1
    if count < 0 or anchor_indices.shape != (count,) or regressors.shape != (count, opts.num_coords):
        raise ValueError(
            f"candidates must be (K,), (K,) and (K, {opts.num_coords}); got scores {scores.shape}, "
            f"anchor indices {anchor_indices.shape}, regressors {regressors.shape}"
        )
    keep = np.flatnonzero(over_threshold(scores, min_score))
    if keep.size == 0:
        return Detections.empty(opts.num_keypoints)
    # Anchor order, as MediaPipe leaves them: its score sort breaks ties by that order (`score_order`).
    keep = keep[np.argsort(anchor_indices[keep], kind="stable")]
    index = anchor_indices[keep]
    if index[0] < 0 or index[-1] >= anchors.shape[0]:
        raise ValueError(f"anchor indices must be in [0, {anchors.shape[0]}), got {index[[0, -1]]}")

    raw = np.asarray(regressors[keep], np.float32)
    scores = np.asarray(scores[keep], np.float32)
    anchor_xy = anchors[index][:, None, :]
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
