"""Geometry of detected faces in image pixels: roll angle and crop ROI (paper §5).

Follows `mediapipe/calculators/util/detections_to_rects_calculator.cc` (rect and rotation from a
detection) and `mediapipe/calculators/util/rect_transformation_calculator.cc` (scale, square), wired as
in `mediapipe/modules/face_landmark/face_detection_front_detection_to_roi.pbtxt`. The letterbox inverse
that brings detections into image pixels first is `service.imaging.letterbox.to_image_pixels`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.decoding.detections import Detections


def roll_degrees(keypoints_px: np.ndarray) -> np.ndarray:
    """In-plane rotation of each face, degrees in [-180, 180), float64, from its eyes.

    As MediaPipe's `DetectionsToRectsCalculator` with `rotation_vector_start_keypoint_index: 0` (right
    eye), `..._end_keypoint_index: 1` (left eye), `rotation_vector_target_angle_degrees: 0`
    (`face_detection_front_detection_to_roi.pbtxt`): `angle = target - atan2(-(y1 - y0), x1 - x0)`,
    computed in pixels (relative coordinates would skew it on non-square images).

    Sign: image y points down, so this is the angle of the eye line measured clockwise as seen on screen
    (MediaPipe's `Rect.rotation` is "clockwise"). An upright face, right eye (subject's) on the image's left,
    is 0; a face tilted so that its left eye sits lower in the image is positive; rotating an upright face's
    keypoints by `R(t) = [[cos t, -sin t], [sin t, cos t]]` in pixel coordinates gives `t`. Upside down is
    -180.

    `keypoints_px`: (N, K >= 2, 2) `x, y` pixels, `KEYPOINT_NAMES` order.
    """
    kp = np.asarray(keypoints_px, np.float64)
    dx = kp[:, 1, 0] - kp[:, 0, 0]
    dy = kp[:, 1, 1] - kp[:, 0, 1]
    angle = -np.degrees(np.arctan2(-dy, dx))
    # MediaPipe's NormalizeRadians: a - 2pi * floor((a + pi) / 2pi), here in degrees.
    return angle - 360.0 * np.floor((angle + 180.0) / 360.0)


@dataclass(frozen=True)
class CropRoi:
    """A square crop around a face for a downstream model (e.g. face landmarks), in image pixels.

    The square of side `size` centred on (`center_x`, `center_y`), rotated by `angle_degrees`
    (clockwise on screen, as `roll_degrees`) about its centre. Cropping it and rotating the crop by
    `-angle_degrees` makes the face upright.
    """

    center_x: float
    center_y: float
    size: float
    angle_degrees: float


def crop_rois(dets_px: Detections, scale: float = 1.5) -> list[CropRoi]:
    """One rotated square ROI per face, as `face_detection_front_detection_to_roi.pbtxt`.

    `DetectionsToRectsCalculator`: the rect is the detection's box (centre, width, height), its rotation
    the eye roll; `RectTransformationCalculator` (`scale_x = scale_y = 1.5`, `square_long: true`, no
    shift): side = the box's longer side in pixels times `scale`, centre unchanged. The box is not
    re-fitted to the rotation; MediaPipe's is not either.
    """
    boxes = dets_px.boxes.astype(np.float64)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    sides = np.max(boxes[:, 2:] - boxes[:, :2], axis=1) * scale
    angles = roll_degrees(dets_px.keypoints)
    return [
        CropRoi(float(cx), float(cy), float(side), float(angle))
        for (cx, cy), side, angle in zip(centres, sides, angles, strict=True)
    ]
