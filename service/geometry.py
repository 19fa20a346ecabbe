"""Geometry: undo the letterbox (results in original-image pixels), roll angle and crop ROI (paper §5)."""

from __future__ import annotations

from dataclasses import dataclass


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
