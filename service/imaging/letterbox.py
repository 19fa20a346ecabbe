"""Letterbox: upright pixels → the model's square uint8 input (MediaPipe FIT), and back for results.

    tensor, lb = letterbox(image, 128)        # forward: a bilinear warp into the square
    dets_px = to_image_pixels(dets, lb)       # inverse: model-input coordinates → original pixels

The forward warp is MediaPipe's CPU `ImageToTensorCalculator` (`image_to_tensor_converter_opencv.cc`);
the inverse is its `DetectionProjectionCalculator` with that calculator's `keep_aspect_ratio` matrix.
Both read one `Letterbox`, so the two directions cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from service.decoding.detections import Detections
from service.imaging.decode import DecodedImage

__all__ = ["Letterbox", "letterbox", "to_image_pixels"]


@dataclass(frozen=True)
class Letterbox:
    """Where the image's content sits inside the square model input (MediaPipe's FIT mode).

    All `content_*` values are in model-input pixels; `image_*` is the upright original image (after
    EXIF orientation, before any DCT downscale), so the inverse lands in the pixels the user sent.
    """

    input_size: int
    image_width: int
    image_height: int
    content_x: float
    content_y: float
    content_width: float
    content_height: float


# OpenCV's warp (remap) asserts every side < SHRT_MAX; JPEG allows 65500 px and PNG 2^31, and a strip
# like 3×100000 passes any pixel limit.
_WARP_MAX_SIDE = 32766


def _fit_warp_limit(image: DecodedImage) -> DecodedImage:
    """Block-average an image with a side over the warp's limit by the smallest integer factor that fits.

    The result is a coarser `scale`, exactly like a DCT-scaled decode (pixel c covers original pixels
    c*s … c*s + s-1, the last block padded by its edge), so the warp's geometry stays exact. Only such
    degenerate strips take this path; MediaPipe itself cannot run them at all.
    """
    rows, cols = image.pixels.shape[:2]
    factor = -(-max(rows, cols) // _WARP_MAX_SIDE)
    if factor == 1:
        return image
    pad_rows, pad_cols = -rows % factor, -cols % factor
    pixels = image.pixels
    if pad_rows or pad_cols:
        pixels = np.pad(pixels, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
    # INTER_AREA by an exact integer factor is the mean of each factor×factor block.
    shrunk = cv2.resize(
        pixels, ((cols + pad_cols) // factor, (rows + pad_rows) // factor), interpolation=cv2.INTER_AREA
    )
    return DecodedImage(np.ascontiguousarray(shrunk), image.width, image.height, image.scale * factor)


def letterbox(image: DecodedImage, size: int) -> tuple[np.ndarray, Letterbox]:
    """Fit the image into a `size`×`size` uint8 RGB square (MediaPipe FIT): long side = size, centred,
    zero padding — exactly as MediaPipe's CPU `ImageToTensorCalculator` does it: a bilinear warp
    mapping the corners of the long-side square ROI centred on the image onto the corners of the input,
    so input pixel i samples source point i × L/size. (`cv2.resize`'s half-pixel-centred grid shifts
    every sample and broke parity with MediaPipe, loadtest/RESULTS.md #1; an area resize cost the short
    model AP on tests/data/eval — the model was trained on these point-sampled pixels.)

    The Letterbox maps upright original pixels to input pixels,
    `x_in = content_x + x / image_width * content_width`, in MediaPipe's pixel-index convention.
    """
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    image = _fit_warp_limit(image)
    long_side = max(image.width, image.height)
    ratio = size / long_side  # input pixels per original pixel
    left = (long_side - image.width) / 2 * ratio
    top = (long_side - image.height) / 2 * ratio
    # MediaPipe's own matrix: cv::getPerspectiveTransform from the ROI square's float32 corners (centred,
    # long side, in cv::boxPoints' order) onto the input's, then cv::warpPerspective. Samples that fall
    # halfway between two of the warp's 1/32-pixel steps (every other one for 500 px onto 256) go the
    # way this matrix's rounding sends them; an exact affine matrix sent them the other way and moved the
    # back model's scores by 3e-3.
    cx, cy, half = image.width / 2, image.height / 2, long_side / 2
    corners = np.array(
        [[cx - half, cy + half], [cx - half, cy - half], [cx + half, cy - half], [cx + half, cy + half]]
    )
    # Pixel indices, centres at integers (MediaPipe's convention): decoded pixel c of a 1/s DCT decode
    # covers original pixels c*s … c*s + s-1, so its centre is original index c*s + (s-1)/2.
    source = ((corners - (image.scale - 1) / 2) / image.scale).astype(np.float32)
    target = np.array([[0, size], [0, 0], [size, 0], [size, size]], np.float32)
    tensor = cv2.warpPerspective(
        image.pixels,
        cv2.getPerspectiveTransform(source, target),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    box = Letterbox(
        input_size=size,
        image_width=image.width,
        image_height=image.height,
        content_x=left,
        content_y=top,
        content_width=image.width * ratio,
        content_height=image.height * ratio,
    )
    return tensor, box


def to_image_pixels(dets: Detections, lb: Letterbox) -> Detections:
    """Normalised model-input coordinates -> pixels of the upright original image.

    `x_img = (x * S - content_x) / content_width * image_width`, the same for y: the inverse of
    `letterbox`, like MediaPipe's `DetectionProjectionCalculator` with `ImageToTensorCalculator`'s
    `keep_aspect_ratio` matrix. Points in the padding map outside `[0, image_width]`; nothing is clipped.
    """
    size = float(lb.input_size)
    scale_x = lb.image_width / lb.content_width
    scale_y = lb.image_height / lb.content_height

    def project(xy: np.ndarray) -> np.ndarray:
        # float64 arithmetic, float32 result (~1e-3 px resolution even at 12 MP)
        x = (xy[..., 0].astype(np.float64) * size - lb.content_x) * scale_x
        y = (xy[..., 1].astype(np.float64) * size - lb.content_y) * scale_y
        return np.stack([x, y], axis=-1).astype(np.float32)

    boxes = project(dets.boxes.reshape(-1, 2, 2)).reshape(-1, 4)
    return Detections(dets.scores, boxes, project(dets.keypoints))
