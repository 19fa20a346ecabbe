"""One image's model outputs → faces in original-image pixels (decode → suppress → project → geometry),
in two steps: `candidates_from_tensors` (vectorised, a fraction of a millisecond whatever the options)
and `faces_from_candidates` (Python loops over the candidates: its cost grows with their number, which
the graph's top-K bounds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.backends.base import ModelOutputs
from service.decoding import Detections, candidates, is_truncated, suppress
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


@dataclass(frozen=True)
class Candidates:
    """One image's detections over the score threshold, before suppression."""

    detections: Detections  # of the graph's top-K candidates, those over the threshold, in anchor order
    truncated: bool  # all K were over it: others, weaker, may have been left out; False: none were


def candidates_from_tensors(outputs: ModelOutputs, options: DetectOptions) -> Candidates:
    """The detections over the options' threshold among one image's outputs (`ModelOutputs.row`)."""
    threshold = options.score_threshold
    scores, anchor_indices, regressors = outputs
    found = candidates(scores, anchor_indices, regressors, options.spec, min_score=threshold)
    return Candidates(found, is_truncated(scores, threshold))


def faces_from_candidates(found: Candidates, letterbox: Letterbox, options: DetectOptions) -> list[Face]:
    """Faces sorted by score, highest first, at most `options.max_faces`."""
    detections = suppress(found.detections, options.spec, options.suppression)
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


def faces_from_tensors(outputs: ModelOutputs, letterbox: Letterbox, options: DetectOptions) -> list[Face]:
    """Both steps at once: faces sorted by score, highest first, at most `options.max_faces`."""
    return faces_from_candidates(candidates_from_tensors(outputs, options), letterbox, options)
