"""Raw tensors of one image → faces in original-image pixels (decode → suppress → project → geometry)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.decoding import decode
from service.geometry import CropRoi, crop_rois
from service.imaging.letterbox import Letterbox, to_image_pixels
from service.options import DetectOptions
from service.specs import KEYPOINT_NAMES


@dataclass(frozen=True)
class Face:
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels
    keypoints: dict[str, tuple[float, float]]  # KEYPOINT_NAMES → (x, y) pixels
    roll_degrees: float
    roi: CropRoi


def faces_from_tensors(
    regressors: np.ndarray, logits: np.ndarray, letterbox: Letterbox, options: DetectOptions
) -> list[Face]:
    """Faces sorted by score, highest first, at most `options.max_faces`."""
    detections = decode(
        regressors, logits, options.spec, min_score=options.score_threshold, suppression=options.suppression
    )
    if options.max_faces is not None:
        detections = detections.take(np.arange(min(len(detections), options.max_faces)))
    pixels = to_image_pixels(detections, letterbox)
    rois = crop_rois(pixels)
    return [
        Face(
            score=float(pixels.scores[i]),
            box=tuple(float(v) for v in pixels.boxes[i]),  # type: ignore[arg-type]
            keypoints={
                name: (float(pixels.keypoints[i, k, 0]), float(pixels.keypoints[i, k, 1]))
                for k, name in enumerate(KEYPOINT_NAMES)
            },
            # The crop ROI is rotated by the eye-line roll (target angle 0), so they are one number.
            roll_degrees=float(rois[i].angle_degrees),
            roi=rois[i],
        )
        for i in range(len(pixels))
    ]
