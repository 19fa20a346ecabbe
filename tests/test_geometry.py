"""Geometry: roll angle sign convention, crop ROI (MediaPipe's detection-to-ROI).

The letterbox inverse is tested beside the letterbox, in tests/imaging/test_letterbox.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decoding.detections import Detections
from service.geometry import CropRoi, crop_rois, roll_degrees


def one(boxes: list[float], keypoints: np.ndarray) -> Detections:
    return Detections(
        np.array([0.9], np.float32), np.array([boxes], np.float32), keypoints[None].astype(np.float32)
    )


UPRIGHT = np.array([[-1, 0], [1, 0], [0, 0.5], [0, 1], [-2, 0.2], [2, 0.2]], np.float64)  # right eye first


# -- roll ---------------------------------------------------------------------------------------------


def rotate(points: np.ndarray, degrees: float, centre: tuple[float, float] = (320.0, 240.0)) -> np.ndarray:
    """R(t) = [[cos, -sin], [sin, cos]] applied in pixel coordinates (y down): clockwise on screen."""
    t = math.radians(degrees)
    r = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return (points * 40) @ r.T + centre


def test_upright_face_has_roll_zero() -> None:
    assert roll_degrees(rotate(UPRIGHT, 0)[None]).tolist() == [0.0]


def test_rotated_by_30_degrees_has_roll_30() -> None:
    kp = rotate(UPRIGHT, 30)
    # y down: +30 puts the left eye (keypoint 1, image right) lower in the image
    assert kp[1, 1] > kp[0, 1]
    np.testing.assert_allclose(roll_degrees(kp[None]), [30.0], atol=1e-9)
    np.testing.assert_allclose(roll_degrees(rotate(UPRIGHT, -30)[None]), [-30.0], atol=1e-9)


def test_roll_range_is_half_open() -> None:
    upside_down = np.array([[[10.0, 0.0], [0.0, 0.0]]])  # eye line pointing left
    assert roll_degrees(upside_down).tolist() == [-180.0]
    np.testing.assert_allclose(roll_degrees(rotate(UPRIGHT, 90)[None]), [90.0], atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.floats(-179.9, 179.9), st.floats(-1000, 1000), st.floats(-1000, 1000))
def test_roll_recovers_any_rotation(degrees: float, cx: float, cy: float) -> None:
    roll = roll_degrees(rotate(UPRIGHT, degrees, (cx, cy))[None])
    assert -180 <= roll[0] < 180
    np.testing.assert_allclose(roll, [degrees], atol=1e-6)


# -- crop ROI -----------------------------------------------------------------------------------------


def test_crop_roi_upright() -> None:
    kp = np.zeros((6, 2))
    kp[0], kp[1] = [40, 40], [80, 40]
    (roi,) = crop_rois(one([10, 20, 110, 80], kp))
    assert roi == CropRoi(center_x=60.0, center_y=50.0, size=150.0, angle_degrees=0.0)


@pytest.mark.parametrize(
    ("box", "eyes", "expected"),
    [
        # Read back from mediapipe 0.10.21's DetectionsToRects -> RectTransformation (the
        # face_detection_front_detection_to_roi.pbtxt options) on 748x202 and 682x683 images.
        (
            [235.3106725, 127.7947859, 355.5578264, 148.4318116],
            [[212.4548787, 161.7532734], [349.0350133, 97.7573981]],
            (295.4342606, 138.1132927, 180.3707308, -25.1058732),
        ),
        (
            [222.2153978, 397.3259922, 351.6582012, 655.3324443],
            [[385.7402825, 565.1381571], [452.7809503, 570.1721080]],
            (286.9367995, 526.3292183, 387.0096716, 4.2941562),
        ),
    ],
)
def test_crop_roi_matches_mediapipe(box: list[float], eyes: list[list[float]], expected: tuple) -> None:
    kp = np.zeros((6, 2))
    kp[:2] = eyes
    (roi,) = crop_rois(one(box, kp))
    np.testing.assert_allclose(
        [roi.center_x, roi.center_y, roi.size, roi.angle_degrees], expected, rtol=1e-6, atol=1e-3
    )


def test_crop_rois_empty() -> None:
    assert crop_rois(Detections.empty()) == []
