"""Decode: request bytes → upright RGB pixels, the limits on decode cost checked on the header first.

    info = inspect(data, max_pixels=40_000_000, max_jpeg_scans=100)  # header only: 413 / 415 / 422
    image = decode(data, max_pixels=40_000_000)                      # every pixel
    image = decode(data, max_pixels=40_000_000, min_long_side=256)   # JPEG may come back DCT-scaled

Decisions (each checked against OpenCV 4.14 / MediaPipe, see tests/imaging/test_decode.py):

- EXIF orientation: OpenCV 4.14's `imdecode` rotates by EXIF itself (JPEG APP1, PNG eXIf, WebP EXIF),
  `IMREAD_REDUCED_*` included. Rather than lean on that from one OpenCV release to the next, we decode
  with `IMREAD_IGNORE_ORIENTATION` and rotate from the probe's own parse, so it happens exactly once;
  the pixels equal OpenCV 4.14's own rotation.
- Alpha is dropped, not composited: MediaPipe's CPU `ImageToTensorCalculator` converts SRGBA input with
  `cv::COLOR_RGBA2RGB` (the colour under a transparent pixel is kept), and so does `IMREAD_COLOR`.
- Grey → RGB, 16-bit PNG → 8-bit (high byte), CMYK JPEG → RGB: OpenCV's `IMREAD_COLOR` conversions.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from service.errors import ImageDecodeError, ImageTooComplex, ImageTooLarge
from service.imaging.probe import ImageInfo, probe

__all__ = ["DecodedImage", "decode", "inspect"]


@dataclass(frozen=True)
class DecodedImage:
    """Upright RGB pixels and the upright size of the original image, which results are reported in.

    `pixels` is (h, w, 3) uint8 C-contiguous. After a DCT-scaled decode it is smaller than
    `width` × `height`: each pixel covers `scale` × `scale` original pixels, and JPEG rounds the pixel
    count up, so the last row/column may stand for fewer than `scale` real ones.
    """

    pixels: np.ndarray
    width: int
    height: int
    scale: int = 1  # DCT scale denominator used to decode (1, 2, 4 or 8)


# Decode straight to RGB where OpenCV has IMREAD_COLOR_RGB (4.14 here): libjpeg-turbo then writes RGB
# itself, saving a full-size cvtColor (loadtest/RESULTS.md #11). It must be combined with the
# REDUCED_GRAYSCALE_n bits: REDUCED_COLOR_n carry IMREAD_COLOR (BGR), which OpenCV refuses beside RGB.
# Images are processed in parallel by our own decode threads and workers, one image per thread; OpenCV's
# own thread pool on top of that would only oversubscribe the cores.
cv2.setNumThreads(1)
# OpenCV logs a failed decode to stderr itself: a line outside our logs, with no level we set and no
# request id. The failure is ours to report (ImageDecodeError), in the request's own log line and answer.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
_RGB_FLAG: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)
_REDUCED_BITS = {
    1: 0,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def _read_flags(scale: int, rgb_flag: int | None) -> int:
    color = rgb_flag if rgb_flag is not None else cv2.IMREAD_COLOR
    return _REDUCED_BITS[scale] | color | cv2.IMREAD_IGNORE_ORIENTATION


def _dct_scale(long_side: int, min_long_side: int) -> int:
    """Largest JPEG DCT scale denominator whose decoded long side (rounded up) is still ≥ min_long_side."""
    for scale in (8, 4, 2):
        if -(-long_side // scale) >= min_long_side:
            return scale
    return 1


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels → upright, per EXIF orientation (identical to OpenCV's own ApplyExifOrientation)."""
    match orientation:
        case 2:
            return cv2.flip(pixels, 1)
        case 3:
            return cv2.rotate(pixels, cv2.ROTATE_180)
        case 4:
            return cv2.flip(pixels, 0)
        case 5:
            return cv2.transpose(pixels)
        case 6:
            return cv2.rotate(pixels, cv2.ROTATE_90_CLOCKWISE)
        case 7:
            return cv2.rotate(cv2.transpose(pixels), cv2.ROTATE_180)
        case 8:
            return cv2.rotate(pixels, cv2.ROTATE_90_COUNTERCLOCKWISE)
        case _:
            return pixels


def inspect(
    data: bytes | bytearray | memoryview, *, max_pixels: int, max_jpeg_scans: int | None = None
) -> ImageInfo:
    """The header's answer, refused (before any pixel) where decoding it would cost more than the
    limits allow: over `max_pixels` (413), or a JPEG of more than `max_jpeg_scans` scans (422; `None`:
    no scan limit, for trusted files)."""
    info = probe(data)
    if info.pixels > max_pixels:
        raise ImageTooLarge(
            f"image is {info.width}×{info.height} = {info.pixels} pixels; the limit is {max_pixels}"
        )
    if max_jpeg_scans is not None and info.scans > max_jpeg_scans:
        raise ImageTooComplex(f"JPEG has {info.scans} scans; the limit is {max_jpeg_scans}")
    return info


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_pixels: int,
    min_long_side: int | None = None,
    max_jpeg_scans: int | None = None,
    info: ImageInfo | None = None,
) -> DecodedImage:
    """Bytes → upright RGB. The limits are checked on the header (`inspect`), before any pixel is decoded.

    `min_long_side` (JPEG only) allows a DCT-scaled decode at the coarsest 1/2, 1/4 or 1/8 scale whose
    long side is still at least that many pixels; `None` decodes at full size. `info` is `inspect`'s
    answer for these bytes where the caller has it already (the engine prices a decode by it first).
    """
    if info is None:
        info = inspect(data, max_pixels=max_pixels, max_jpeg_scans=max_jpeg_scans)
    scale = 1
    if min_long_side is not None and info.format == "jpeg":
        scale = _dct_scale(max(info.width, info.height), min_long_side)
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), _read_flags(scale, _RGB_FLAG))
    except cv2.error as exc:
        raise ImageDecodeError(f"could not decode the {info.format} image") from exc
    if pixels is None:
        raise ImageDecodeError(f"could not decode the {info.format} image (corrupt or truncated)")
    # The header decided the pixel limit and the geometry; a decoder that disagrees is not trusted.
    expected = (-(-info.height // scale), -(-info.width // scale), 3)
    if pixels.shape != expected or pixels.dtype != np.uint8:
        raise ImageDecodeError(f"{info.format} image decoded to {pixels.shape}, header said {expected}")
    if _RGB_FLAG is None:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
    pixels = np.ascontiguousarray(_orient(pixels, info.orientation))
    return DecodedImage(pixels, info.upright_width, info.upright_height, scale)
