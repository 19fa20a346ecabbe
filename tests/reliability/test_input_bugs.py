"""Fast, in-process regressions for the bugs the bad-input corpus found (each was a 500 over HTTP)."""

from __future__ import annotations

import base64

import cv2
import numpy as np
import orjson
import pytest

from service.api.uploads import _from_json
from service.decoding.blending import blend
from service.decoding.detections import Detections
from service.errors import InvalidOption
from service.imaging import Preprocess, preprocess

B64 = base64.b64encode(b"\xff\xd8\xff").decode()


@pytest.mark.parametrize(
    "shape",
    [(3, 100_000), (100_000, 3), (1, 65_500), (2, 32_767), (40_000, 40)],
)
@pytest.mark.parametrize("mode", list(Preprocess))
def test_images_with_a_side_over_opencvs_warp_limit_are_letterboxed(
    shape: tuple[int, int], mode: Preprocess
) -> None:
    # OpenCV's warpAffine asserts every side < SHRT_MAX (32767); a valid PNG/JPEG may be wider.
    rows, cols = shape
    pixels = np.full((rows, cols, 3), 200, np.uint8)
    data = cv2.imencode(".png", pixels)[1].tobytes()
    tensor, box = preprocess(data, 128, mode, max_pixels=40_000_000)
    assert tensor.shape == (128, 128, 3)
    assert (box.image_width, box.image_height) == (cols, rows)
    assert box.content_width == pytest.approx(128 * cols / max(shape))
    assert tensor.max() > 0  # the image's strip is there (the padding is black)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("model", ["short"]),
        ("model", {"name": "short"}),
        ("model", 1),
        ("suppression", ["nms"]),
        ("preprocess", {}),
        ("min_score", "0.5"),
        ("min_score", [0.5]),
        ("min_score", True),
        ("max_faces", 1.5),
        ("max_faces", True),
        ("max_faces", "3"),
        ("model", "x" * 100_000),
    ],
)
def test_json_options_of_the_wrong_type_are_invalid_options(key: str, value: object) -> None:
    with pytest.raises(InvalidOption) as raised:
        _from_json(orjson.dumps({"image": B64, key: value}))
    assert key in raised.value.detail
    assert len(raised.value.detail) < 200  # names the field, never echoes the value


def test_json_options_of_the_right_type_pass_through() -> None:
    document = {"model": "full", "min_score": 0.7, "max_faces": 3, "suppression": "nms", "preprocess": "fast"}
    data, options = _from_json(orjson.dumps({"image": B64, **document}))
    assert data == b"\xff\xd8\xff"
    assert options == document
    _, options = _from_json(orjson.dumps({"image": B64, "min_score": 1}))  # an int is a number
    assert options == {"min_score": 1}


def test_blending_a_group_whose_scores_are_all_zero_gives_finite_coordinates() -> None:
    # Found by Schemathesis: POST /detect?min_score=0 on a blank image answered 200 with `null`
    # coordinates. Far-from-face anchors have sigmoid scores that underflow to exactly 0.0 in float32,
    # min_score=0 keeps them, and the weighted mean of a group is then 0/0 = NaN (orjson writes null).
    box = np.array([0.4, 0.4, 0.6, 0.6], np.float32)
    dets = Detections(
        scores=np.zeros(3, np.float32),
        boxes=np.stack([box, box + 0.01, box - 0.01]),
        keypoints=np.full((3, 6, 2), 0.5, np.float32),
    )
    out = blend(dets)
    assert len(out) >= 1
    assert np.isfinite(out.boxes).all() and np.isfinite(out.keypoints).all()
