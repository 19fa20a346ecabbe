"""service/imaging/letterbox.py and preprocess: the forward warp and its inverse, tested together.

Forward: MediaPipe's FIT geometry and pixel-index convention, DCT-scaled decodes included. Inverse:
`to_image_pixels` on known values, against the forward mapping, and on what the warp actually drew.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import service.imaging.decode as decode_module
from blazeface_tools.testkit.images import jpeg, with_exif
from service.decoding.detections import Detections
from service.imaging import Preprocess, preprocess
from service.imaging.decode import DecodedImage, decode
from service.imaging.letterbox import Letterbox, letterbox, to_image_pixels

BIG = 100_000_000
RNG = np.random.default_rng(1234)


def white(width: int, height: int) -> DecodedImage:
    return DecodedImage(np.full((height, width, 3), 255, np.uint8), width, height)


def box_of(width: int, height: int, size: int) -> Letterbox:
    """The letterbox of any image this size; pixels at the coarsest scale, so the warp stays cheap."""
    pixels = np.zeros((-(-height // 8), -(-width // 8), 3), np.uint8)
    return letterbox(DecodedImage(pixels, width, height, 8), size)[1]


def face(points: np.ndarray) -> Detections:
    """One detection from normalised points: the first two are its box corners, the rest keypoints."""
    points = np.asarray(points, np.float32)
    return Detections(np.array([0.9], np.float32), points[None, :2].reshape(1, 4), points[None, 2:])


# --- forward --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "box"),
    [
        (200, 100, (0, 32, 128, 64)),  # landscape: bands top and bottom
        (100, 200, (32, 0, 64, 128)),  # portrait: bands left and right
        (300, 300, (0, 0, 128, 128)),  # square: no padding
        (512, 600, (9, 0, 109, 128)),  # 109.2 wide: rounded, the odd pixel of padding goes right
        (1, 1000, (63, 0, 1, 128)),  # a sliver
        (64, 32, (0, 32, 128, 64)),  # upscaling too
    ],
)
def test_letterbox_geometry(width: int, height: int, box: tuple[int, int, int, int]) -> None:
    tensor, lb = letterbox(white(width, height), 128)
    x, y, w, h = box
    # MediaPipe's warp centres the content exactly, so its edges may fall between pixels.
    ratio = 128 / max(width, height)
    exact = ((max(width, height) - width) / 2 * ratio, (max(width, height) - height) / 2 * ratio)
    assert (lb.content_x, lb.content_y) == pytest.approx(exact)
    assert (lb.content_width, lb.content_height) == pytest.approx((width * ratio, height * ratio))
    assert (lb.input_size, lb.image_width, lb.image_height) == (128, width, height)
    assert tensor.shape == (128, 128, 3) and tensor.dtype == np.uint8
    if min(w, h) > 1:  # a sub-pixel sliver (1×1000) may fall between input pixels, as in MediaPipe
        assert (tensor[y + h // 2, x + w // 2] == 255).all()  # content
    if x > 1:
        assert (tensor[:, : x - 1] == 0).all() and (tensor[:, x + w + 1 :] == 0).all()  # padding bands
    if y > 1:
        assert (tensor[: y - 1] == 0).all() and (tensor[y + h + 1 :] == 0).all()


def blob_centre(tensor: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted centre of the green channel, in continuous pixel coordinates (centres at +0.5)."""
    weights = tensor[..., 1].astype(float)
    ys, xs = np.indices(weights.shape)
    return float((xs * weights).sum() / weights.sum()) + 0.5, float(
        (ys * weights).sum() / weights.sum()
    ) + 0.5


@pytest.mark.parametrize(("width", "height"), [(1001, 757), (757, 1001), (640, 640)])
def test_letterbox_inverse_lands_on_the_image_pixel(width: int, height: int) -> None:
    # A smooth blob far from the origin (where a stretch error would be largest; smooth so bilinear
    # point sampling does not alias its centroid), decoded fully and DCT-scaled (1001 is not a multiple
    # of 8: the decoded grid then covers 1008 original pixels).
    cx, cy = width - 150.0, height - 130.0
    ys, xs = np.indices((height, width))
    blob = 255 * np.exp(-((xs + 0.5 - cx) ** 2 + (ys + 0.5 - cy) ** 2) / (2 * 25.0**2))
    bgr = np.zeros((height, width, 3), np.uint8)
    bgr[..., 1] = np.round(blob)
    data = jpeg(bgr, quality=100)
    for min_long_side in (None, 120):
        image = decode(data, max_pixels=BIG, min_long_side=min_long_side)
        tensor, lb = letterbox(image, 128)
        # MediaPipe's warp maps pixel centres by index (input i ↔ source i × L/S), not by area.
        want = (
            lb.content_x + (cx - 0.5) * lb.content_width / lb.image_width + 0.5,
            lb.content_y + (cy - 0.5) * lb.content_height / lb.image_height + 0.5,
        )
        got = blob_centre(tensor)
        assert got == pytest.approx(want, abs=0.03), (min_long_side, image.scale)
        # Round trip: the inverse takes the drawn centre (as a pixel index) back to the blob's index.
        index = (np.array(got) - 0.5) / 128
        back = to_image_pixels(face(np.tile(index, (8, 1))), lb).keypoints[0, 0]
        assert tuple(back) == pytest.approx((cx - 0.5, cy - 0.5), abs=0.03 * max(width, height) / 128)


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(1, 5_000),
    height=st.integers(1, 5_000),
    size=st.sampled_from([128, 192, 256]),
    min_long_side=st.sampled_from([None, 1, 2]),
)
def test_letterbox_round_trip(width: int, height: int, size: int, min_long_side: int | None) -> None:
    """Points map into the square and back, the long side fills it, the content is centred, for the
    DCT scale decode() would choose for a min_long_side of 1× or 2× the input."""
    scale = 1 if min_long_side is None else decode_module._dct_scale(max(width, height), min_long_side * size)
    pixels = np.zeros((-(-height // scale), -(-width // scale), 3), np.uint8)
    _, lb = letterbox(DecodedImage(pixels, width, height, scale), size)
    for x, y in [(0, 0), (width, height), (width / 3, height / 7)]:
        xi = lb.content_x + x / lb.image_width * lb.content_width
        yi = lb.content_y + y / lb.image_height * lb.content_height
        assert -1e-9 <= xi <= size + 1e-9 and -1e-9 <= yi <= size + 1e-9
        back = (
            (xi - lb.content_x) / lb.content_width * width,
            (yi - lb.content_y) / lb.content_height * height,
        )
        assert back == pytest.approx((x, y), rel=1e-12, abs=1e-9)
    assert max(lb.content_width, lb.content_height) == pytest.approx(size)
    for start, extent in ((lb.content_x, lb.content_width), (lb.content_y, lb.content_height)):
        assert start == pytest.approx(size - start - extent)  # centred: both bands alike


# --- inverse: to_image_pixels ---------------------------------------------------------------------


def test_letterbox_inverse_known_values() -> None:
    lb = letterbox(white(200, 100), 128)[1]  # content 128 x 64 at y = 32
    assert (lb.content_y, lb.content_height) == (32.0, 64.0)
    kp = np.zeros((6, 2))
    kp[0] = [0.5, 0.5]
    out = to_image_pixels(face(np.concatenate([[[0.0, 0.25], [1.0, 0.75]], kp])), lb)
    np.testing.assert_allclose(out.boxes[0], [0, 0, 200, 100], atol=1e-4)
    np.testing.assert_allclose(out.keypoints[0, 0], [100, 50], atol=1e-4)
    np.testing.assert_allclose(out.keypoints[0, 1], [0, -50], atol=1e-4)  # in the padding: not clipped
    assert out.boxes.dtype == out.keypoints.dtype == np.float32


@settings(max_examples=80, deadline=None)
@given(
    st.integers(1, 8000),
    st.integers(1, 8000),
    st.sampled_from([128, 192]),
    st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=14, max_size=14),
)
def test_letterbox_inverse_undoes_the_forward_mapping(
    width: int, height: int, size: int, points: list[tuple[float, float]]
) -> None:
    lb = box_of(width, height, size)
    px = np.array(points) * [width, height]  # points in the original image
    # forward: image pixels -> normalised model input
    norm = np.stack(
        [
            (px[:, 0] / width * lb.content_width + lb.content_x) / size,
            (px[:, 1] / height * lb.content_height + lb.content_y) / size,
        ],
        axis=1,
    )
    out = to_image_pixels(face(norm), lb)
    tol = 1e-4 * max(width, height)
    np.testing.assert_allclose(out.boxes[0], px[:2].ravel(), atol=tol)
    np.testing.assert_allclose(out.keypoints[0], px[2:], atol=tol)


# --- preprocess: decode, then letterbox -----------------------------------------------------------


def test_preprocess_modes_are_decode_plus_letterbox() -> None:
    data = with_exif(jpeg(RNG.integers(0, 256, (700, 1000, 3), dtype=np.uint8)), 8)
    exact, exact_lb = preprocess(data, 128, Preprocess.EXACT, max_pixels=BIG)
    want, want_lb = letterbox(decode(data, max_pixels=BIG), 128)
    np.testing.assert_array_equal(exact, want)
    assert exact_lb == want_lb == Letterbox(128, 700, 1000, 19.2, 0.0, 700 * 0.128, 128.0)

    fast, fast_lb = preprocess(data, 128, "fast", max_pixels=BIG)  # type: ignore[arg-type]
    reduced = decode(data, max_pixels=BIG, min_long_side=256)
    assert reduced.scale == 2  # 1000 / 4 = 250 < 256
    want, want_lb = letterbox(reduced, 128)
    np.testing.assert_array_equal(fast, want)
    assert fast_lb == want_lb
