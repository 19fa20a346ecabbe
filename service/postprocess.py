"""Raw tensors of one image → faces in original-image pixels (decode → cap → suppress → project →
geometry), in two steps: `candidates_from_tensors` (vectorised, a fraction of a millisecond whatever
the options) and `faces_from_candidates` (Python loops over the candidates: its cost grows with their
number, which the cap bounds)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.decoding import Detections, candidates, suppress
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

    detections: Detections  # at most the cap, the best scores, in anchor order
    dropped: int  # over the threshold but past the cap (the lowest scores); 0: none


def candidates_from_tensors(
    regressors: np.ndarray, logits: np.ndarray, options: DetectOptions, max_candidates: int | None = None
) -> Candidates:
    """Every detection over the options' threshold, or the `max_candidates` best of them (None: all)."""
    found = candidates(regressors, logits, options.spec, min_score=options.score_threshold)
    kept = found if max_candidates is None else found.strongest(max_candidates)
    return Candidates(kept, len(found) - len(kept))


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


def faces_from_tensors(
    regressors: np.ndarray,
    logits: np.ndarray,
    letterbox: Letterbox,
    options: DetectOptions,
    max_candidates: int | None = None,
) -> list[Face]:
    """Both steps at once: faces sorted by score, highest first, at most `options.max_faces`."""
    found = candidates_from_tensors(regressors, logits, options, max_candidates)
    return faces_from_candidates(found, letterbox, options)
