"""Imaging: request bytes → upright RGB pixels → the model's letterboxed uint8 input (DESIGN §1, §8).

    info = probe(data)                    # header only: format, stored size, EXIF orientation
    image = decode(data, max_pixels=40_000_000, min_long_side=256)   # JPEG may come back DCT-scaled
    tensor, lb = letterbox(image, 128, out=batch[i])
    tensor, lb = preprocess(data, 128, Preprocess.EXACT, max_pixels=40_000_000)   # all of the above

Decisions (each checked against OpenCV 4.14 / MediaPipe, see tests/test_imaging.py):

- Formats: JPEG, PNG, WebP, BMP. `probe` recognises GIF, TIFF, HEIF/AVIF, JPEG 2000/XL, PSD, PDF, SVG,
  EXR, PNM as images we do not take (415), so those OpenCV decoders are never reached with user bytes.
- Animation: an animated WebP (VP8X animation flag) is refused with 415 by `probe`, like GIF: picking one
  frame silently would answer a question the client did not ask. An APNG is a valid PNG whose default
  image every PNG decoder shows, so it is decoded as that still image.
- EXIF orientation: OpenCV 4.14's `imdecode` rotates by EXIF itself (JPEG APP1, PNG eXIf, WebP EXIF),
  `IMREAD_REDUCED_*` included. Rather than lean on that from one OpenCV release to the next, we decode
  with `IMREAD_IGNORE_ORIENTATION` and rotate from our own parse, so it happens exactly once; the
  pixels equal OpenCV 4.14's own rotation. Bad EXIF is ignored (orientation 1), as browsers and OpenCV
  do; a bad frame header is not.
- Alpha is dropped, not composited: MediaPipe's CPU `ImageToTensorCalculator` converts SRGBA input with
  `cv::COLOR_RGBA2RGB` (the colour under a transparent pixel is kept), and so does `IMREAD_COLOR`.
- Grey → RGB, 16-bit PNG → 8-bit (high byte), CMYK JPEG → RGB: OpenCV's `IMREAD_COLOR` conversions.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import cv2
import numpy as np

from service.errors import ImageDecodeError, ImageTooLarge, UnsupportedMediaType
from service.geometry import Letterbox

__all__ = [
    "DecodedImage",
    "ImageInfo",
    "Preprocess",
    "decode",
    "letterbox",
    "preprocess",
    "probe",
]


class Preprocess(StrEnum):
    """How an image becomes the model input (DESIGN §8).

    EXACT: full decode, MediaPipe's pixels exactly (parity tests pin this).
    FAST: JPEG decoded at the coarsest DCT scale that keeps the long side ≥ 2× the input (3–4× cheaper
    on 12 MP photos); both then take MediaPipe's bilinear warp to the input.
    """

    EXACT = "exact"
    FAST = "fast"


@dataclass(frozen=True)
class ImageInfo:
    """What the header says; no pixel has been decoded. `width`/`height` are as stored (before EXIF)."""

    format: str  # "jpeg" | "png" | "webp" | "bmp"
    width: int
    height: int
    orientation: int = 1  # EXIF 1..8

    @property
    def upright_width(self) -> int:
        return self.height if self.orientation >= 5 else self.width

    @property
    def upright_height(self) -> int:
        return self.width if self.orientation >= 5 else self.height


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


# --- probe ----------------------------------------------------------------------------------------

# Loop budgets: header walks are Python loops, so a crafted file of a million empty segments must not
# make one request burn seconds. Real files need a few dozen steps.
_MAX_JPEG_STEPS = 4096
_MAX_CHUNKS = 256

# Recognised image (or container) types we do not decode → 415 rather than 400.
_UNSUPPORTED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
    (b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (b"\xff\x0a", "JPEG XL"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"v/1\x01", "OpenEXR"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"<?xml", "XML/SVG"),
    (b"<svg", "SVG"),
)
_SUPPORTED = "send JPEG, PNG, WebP or BMP"


def _truncated(what: str) -> ImageDecodeError:
    return ImageDecodeError(f"truncated or corrupt {what} header")


_ByteOrder = Literal["little", "big"]


def _uint(buf: memoryview, offset: int, size: int, order: _ByteOrder, what: str) -> int:
    """Unsigned integer at `offset`, or ImageDecodeError if the buffer ends first."""
    if offset < 0 or offset + size > len(buf):
        raise _truncated(what)
    return int.from_bytes(buf[offset : offset + size], order)


def _exif_orientation(tiff: memoryview) -> int:
    """Orientation (tag 0x0112) from IFD0 of a TIFF-structured EXIF block; 1 if absent or malformed."""
    if len(tiff) < 8:
        return 1
    orders: dict[bytes, _ByteOrder] = {b"II": "little", b"MM": "big"}
    order = orders.get(bytes(tiff[:2]))
    if order is None:
        return 1

    def uint(offset: int, size: int) -> int:
        if offset + size > len(tiff):
            raise IndexError
        return int.from_bytes(tiff[offset : offset + size], order)

    try:
        if uint(2, 2) != 42:
            return 1
        ifd = uint(4, 4)
        for i in range(min(uint(ifd, 2), _MAX_CHUNKS)):
            entry = ifd + 2 + 12 * i
            if uint(entry, 2) != 0x0112:
                continue
            kind, count = uint(entry + 2, 2), uint(entry + 4, 4)
            if count < 1 or kind not in (3, 4):  # SHORT is the spec; LONG seen from some writers
                return 1
            value = uint(entry + 8, 2 if kind == 3 else 4)
            return value if 1 <= value <= 8 else 1
    except IndexError:
        pass
    return 1


def _probe_jpeg(buf: memoryview) -> ImageInfo:
    orientation: int | None = None
    pos, steps = 2, 0
    while True:
        if pos >= len(buf) or buf[pos] != 0xFF:
            raise _truncated("JPEG")
        while pos < len(buf) and buf[pos] == 0xFF:  # fill bytes before a marker are legal
            pos += 1
            steps += 1
            if steps > _MAX_JPEG_STEPS:
                raise ImageDecodeError("JPEG header has too many markers or fill bytes")
        if pos >= len(buf):
            raise _truncated("JPEG")
        marker = buf[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length field
            continue
        if marker in (0x00, 0xD8, 0xD9, 0xDA):  # stuffing, SOI, EOI or scan data before any frame
            raise ImageDecodeError("corrupt JPEG: no frame header before the image data")
        length = _uint(buf, pos, 2, "big", "JPEG")
        if length < 2:
            raise _truncated("JPEG")
        body = pos + 2
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOF0..15 less DHT, JPG, DAC
            height = _uint(buf, body + 1, 2, "big", "JPEG")
            width = _uint(buf, body + 3, 2, "big", "JPEG")
            if width == 0 or height == 0:  # height 0 means "see DNL", which OpenCV cannot decode
                raise ImageDecodeError("JPEG frame header declares a zero size")
            return ImageInfo("jpeg", width, height, orientation or 1)
        if marker == 0xE1 and orientation is None:
            app1 = buf[body : pos + length]
            if bytes(app1[:5]) == b"Exif\x00":  # first EXIF APP1 wins (XMP also uses APP1)
                orientation = _exif_orientation(app1[6:])
        pos += length


def _probe_png(buf: memoryview) -> ImageInfo:
    if len(buf) < 33 or bytes(buf[12:16]) != b"IHDR":
        raise _truncated("PNG")
    width = _uint(buf, 16, 4, "big", "PNG")
    height = _uint(buf, 20, 4, "big", "PNG")
    if not (0 < width < 2**31 and 0 < height < 2**31):
        raise ImageDecodeError("PNG header declares an invalid size")
    # eXIf must precede IDAT; stop there (or on a short buffer: the decoder will report that).
    pos, orientation = 33, 1
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(buf):
            break
        size = int.from_bytes(buf[pos : pos + 4], "big")
        kind = bytes(buf[pos + 4 : pos + 8])
        if kind == b"IDAT":
            break
        if kind == b"eXIf":
            orientation = _exif_orientation(buf[pos + 8 : pos + 8 + size])
            break
        pos += 12 + size
    return ImageInfo("png", width, height, orientation)


def _webp_frame_size(buf: memoryview, kind: bytes, body: int) -> tuple[int, int]:
    """Size from a VP8 (lossy key frame) or VP8L (lossless) bitstream starting at `body`."""
    if kind == b"VP8 ":
        tag = _uint(buf, body, 3, "little", "WebP")
        if tag & 1 or bytes(buf[body + 3 : body + 6]) != b"\x9d\x01\x2a":  # key frame, start code
            raise _truncated("WebP")
        width = _uint(buf, body + 6, 2, "little", "WebP") & 0x3FFF
        height = _uint(buf, body + 8, 2, "little", "WebP") & 0x3FFF
    else:
        if _uint(buf, body, 1, "little", "WebP") != 0x2F:  # VP8L signature
            raise _truncated("WebP")
        bits = _uint(buf, body + 1, 4, "little", "WebP")
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if width == 0 or height == 0:
        raise ImageDecodeError("WebP header declares a zero size")
    return width, height


def _probe_webp(buf: memoryview) -> ImageInfo:
    kind = bytes(buf[12:16])
    if kind in (b"VP8 ", b"VP8L"):
        return ImageInfo("webp", *_webp_frame_size(buf, kind, 20))
    if kind != b"VP8X":
        raise _truncated("WebP")
    flags = _uint(buf, 20, 1, "little", "WebP")
    if flags & 0x02:
        raise UnsupportedMediaType(f"animated WebP is not supported; {_SUPPORTED} with a single frame")
    canvas = (_uint(buf, 24, 3, "little", "WebP") + 1, _uint(buf, 27, 3, "little", "WebP") + 1)
    # Walk the chunks: the frame's own size must agree with the canvas (else the pixel limit could be
    # dodged with a small canvas), and EXIF usually sits after the image data.
    pos, frame, orientation = 12, None, 1
    for _ in range(_MAX_CHUNKS):
        if pos + 8 > len(buf):
            break
        kind = bytes(buf[pos : pos + 4])
        size = int.from_bytes(buf[pos + 4 : pos + 8], "little")
        if kind in (b"VP8 ", b"VP8L") and frame is None:
            frame = _webp_frame_size(buf, kind, pos + 8)
        elif kind == b"EXIF":
            exif = buf[pos + 8 : pos + 8 + size]
            # Some writers keep JPEG's "Exif\0\0" prefix in the chunk.
            orientation = _exif_orientation(exif[6:] if bytes(exif[:6]) == b"Exif\x00\x00" else exif)
            break
        pos += 8 + size + (size & 1)
    if frame is None:
        raise _truncated("WebP")
    if frame != canvas:
        raise ImageDecodeError(f"WebP canvas {canvas} does not match its image {frame}")
    return ImageInfo("webp", canvas[0], canvas[1], orientation)


def _probe_bmp(buf: memoryview) -> ImageInfo:
    header = _uint(buf, 14, 4, "little", "BMP")
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit unsigned sizes
        width = _uint(buf, 18, 2, "little", "BMP")
        height = _uint(buf, 20, 2, "little", "BMP")
    elif header >= 40:  # BITMAPINFOHEADER and its successors: 32-bit signed sizes
        width = _uint(buf, 18, 4, "little", "BMP")
        height = _uint(buf, 22, 4, "little", "BMP")
        width = width - 2**32 if width >= 2**31 else width
        height = abs(height - 2**32 if height >= 2**31 else height)  # negative height: rows top-down
    else:
        raise ImageDecodeError(f"unknown BMP header size {header}")
    if width <= 0 or height == 0:
        raise ImageDecodeError("BMP header declares an invalid size")
    return ImageInfo("bmp", width, height)


def probe(data: bytes | bytearray | memoryview) -> ImageInfo:
    """Format, stored size and EXIF orientation from the header alone (a pure-Python parse).

    Raises ImageDecodeError for empty, truncated or unrecognisable data and UnsupportedMediaType for
    images of a type we do not decode (including animated WebP).
    """
    buf = memoryview(data).cast("B")
    if len(buf) == 0:
        raise ImageDecodeError("empty image")
    head = bytes(buf[:16])
    if head.startswith(b"\xff\xd8\xff"):
        return _probe_jpeg(buf)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _probe_png(buf)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return _probe_webp(buf)
    if head.startswith(b"BM"):
        return _probe_bmp(buf)
    if head.startswith(b"RIFF") and len(head) >= 12:
        raise UnsupportedMediaType(f"RIFF {head[8:12]!r} is not an image type we decode; {_SUPPORTED}")
    if head[4:8] == b"ftyp":  # ISO BMFF: HEIC, HEIF, AVIF (or a video)
        brand = head[8:12].decode("ascii", "replace")
        raise UnsupportedMediaType(f"ISO-BMFF ({brand!r}: HEIF/AVIF) is not supported; {_SUPPORTED}")
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            raise UnsupportedMediaType(f"{name} is not supported; {_SUPPORTED}")
    if len(head) >= 3 and head[0] == ord("P") and head[1] in b"1234567" and head[2] in b" \t\r\n":
        raise UnsupportedMediaType(f"PNM is not supported; {_SUPPORTED}")
    raise ImageDecodeError(f"not a recognised image; {_SUPPORTED}")


# --- decode ---------------------------------------------------------------------------------------

# Decode straight to RGB where OpenCV has IMREAD_COLOR_RGB (4.14 here): libjpeg-turbo then writes RGB
# itself, saving a full-size cvtColor (≈5 ms of ≈65 on a 12 MP JPEG). It must be combined with the
# REDUCED_GRAYSCALE_n bits: REDUCED_COLOR_n carry IMREAD_COLOR (BGR), which OpenCV refuses beside RGB.
# Images are processed in parallel by our own decode threads and workers, one image per thread; OpenCV's
# own thread pool on top of that would only oversubscribe the cores.
cv2.setNumThreads(1)
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


def decode(
    data: bytes | bytearray | memoryview, *, max_pixels: int, min_long_side: int | None = None
) -> DecodedImage:
    """Bytes → upright RGB. The pixel limit is checked on the header, before any pixel is decoded.

    `min_long_side` (JPEG only) allows a DCT-scaled decode at the coarsest 1/2, 1/4 or 1/8 scale whose
    long side is still at least that many pixels; `None` decodes at full size.
    """
    info = probe(data)
    pixel_count = info.width * info.height
    if pixel_count > max_pixels:
        raise ImageTooLarge(
            f"image is {info.width}×{info.height} = {pixel_count} pixels; the limit is {max_pixels}"
        )
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


# --- letterbox ------------------------------------------------------------------------------------


def _check_out(out: np.ndarray | None, size: int) -> None:
    if out is not None and (
        out.shape != (size, size, 3) or out.dtype != np.uint8 or out.strides[1:] != (3, 1)
    ):
        raise ValueError(
            f"out must be a ({size}, {size}, 3) uint8 array with packed pixels, "
            f"not {out.shape} {out.dtype} strides {out.strides}"
        )


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


def letterbox(
    image: DecodedImage, size: int, *, out: np.ndarray | None = None
) -> tuple[np.ndarray, Letterbox]:
    """Fit the image into a `size`×`size` uint8 RGB square (MediaPipe FIT): long side = size, centred,
    zero padding — exactly as MediaPipe's CPU `ImageToTensorCalculator` does it
    (`image_to_tensor_converter_opencv.cc`): a bilinear warp mapping the corners of the long-side square
    ROI centred on the image onto the corners of the input, so input pixel i samples source point
    i × L/size. (`cv2.resize`'s half-pixel-centred grid shifts that by ~1.5 source px at 4× and moved
    scores by up to 0.08 on the reference photos; an area resize cost the short model AP on
    tests/data/eval — the model was trained on these point-sampled pixels.)

    `out`, if given, is a (size, size, 3) uint8 array (a slot of a batch tensor) the warp writes into;
    the returned array is `out` itself. The Letterbox maps upright original pixels to input pixels,
    `x_in = content_x + x / image_width * content_width`, in MediaPipe's pixel-index convention.
    """
    if size < 1:
        raise ValueError(f"size must be positive, not {size}")
    _check_out(out, size)
    image = _fit_warp_limit(image)
    long_side = max(image.width, image.height)
    ratio = size / long_side  # input pixels per original pixel
    left = (long_side - image.width) / 2 * ratio
    top = (long_side - image.height) / 2 * ratio
    # Pixel indices, centres at integers (MediaPipe's convention): decoded pixel c of a 1/s DCT decode
    # covers original pixels c*s … c*s + s-1, so its centre is original index c*s + (s-1)/2.
    step = ratio * image.scale
    shift = ratio * (image.scale - 1) / 2
    matrix = np.array([[step, 0.0, left + shift], [0.0, step, top + shift]])
    if out is None:
        out = np.empty((size, size, 3), np.uint8)
    cv2.warpAffine(
        image.pixels,
        matrix,
        (size, size),
        dst=out,
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
    return out, box


def preprocess(
    data: bytes | bytearray | memoryview,
    size: int,
    mode: Preprocess,
    *,
    max_pixels: int,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, Letterbox]:
    """Bytes → letterboxed model input. EXACT decodes every pixel; FAST decodes a JPEG at the coarsest
    DCT scale that keeps its long side ≥ 2× the input (no worse in AP on tests/data/eval for either
    model: README "Accuracy and stability"). Both then take MediaPipe's warp."""
    min_long_side = 2 * size if Preprocess(mode) is Preprocess.FAST else None
    image = decode(data, max_pixels=max_pixels, min_long_side=min_long_side)
    return letterbox(image, size, out=out)
