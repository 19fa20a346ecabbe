"""Header probe: format, stored size and EXIF orientation from the first bytes, no pixel decoded.

    info = probe(data)   # ImageInfo("jpeg", 4000, 3000, orientation=6); raises before any decode

Its answer is what the pixel limit (413) and the decoded geometry are checked against, so a decoder
never runs on an image we would refuse. A pure-Python parse, loop-bounded against crafted headers.

- Formats: JPEG, PNG, WebP, BMP. Anything else goes to `formats.refuse_unsupported`, which answers
  415 for the types we recognise but do not take (GIF, TIFF, HEIF/AVIF, PDF, TGA, ...), so those
  OpenCV decoders are never reached with user bytes; the rest is 400.
- Scans: a JPEG's SOS markers are counted over the whole file (`ImageInfo.scans`, ~0.3 ms per MB):
  each scan of a progressive (or multi-scan) JPEG is a pass over the whole image in the decoder, so
  thousands of empty scans in a few KB cost seconds to decode (libjpeg-turbo's "Two Issues with the
  JPEG Standard"; its tools refuse past a scan limit for it); the limit is the caller's
  (`decode.inspect`).
- Animation: an animated WebP (VP8X animation flag) is refused with 415, like GIF: picking one frame
  silently would answer a question the client did not ask. An APNG is a valid PNG whose default image
  every PNG decoder shows, so it passes here and is decoded as that still image.
- EXIF: bad EXIF is ignored (orientation 1), as browsers and OpenCV do; a bad frame header is not (400).

Hand-written rather than Pillow's lazy `Image.open`, as measured (loadtest/RESULTS.md, "Header
probe: hand-written vs Pillow"): Pillow is ~5× slower on tests/data/photos (median 31 µs vs 6 µs a
probe) and changes 9 of 249 answers on the bad-input corpus: HEIC, PDF, SVG, RIFF/WAV and a WebP
flagged animated get 400 for 415, a WebP bomb's header 400 for 413 (libwebp demuxes the whole file at
open), a 2^31-wide PNG 413 for 400, and a JPEG with a 1-byte segment length or 5000 empty segments
(past our loop budget) passes. Its `getexif()` decodes a PNG's pixels. Nor does its open expose a
JPEG's SOS markers, which the probe counts, so the JPEG walk would stay ours anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from service.errors import ImageDecodeError, UnsupportedMediaType
from service.imaging.formats import SUPPORTED, refuse_unsupported

__all__ = ["ImageInfo", "probe"]


@dataclass(frozen=True)
class ImageInfo:
    """What the header says; no pixel has been decoded. `width`/`height` are as stored (before EXIF)."""

    format: str  # "jpeg" | "png" | "webp" | "bmp"
    width: int
    height: int
    orientation: int = 1  # EXIF 1..8
    scans: int = 1  # JPEG: SOS markers in the file (an EXIF thumbnail's included); 1 for other formats

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def upright_width(self) -> int:
        return self.height if self.orientation >= 5 else self.width

    @property
    def upright_height(self) -> int:
        return self.width if self.orientation >= 5 else self.height


# Loop budgets: header walks are Python loops, so a crafted file of a million empty segments must not
# make one request burn seconds. Real files need a few dozen steps.
_MAX_JPEG_STEPS = 4096
_MAX_CHUNKS = 256

# Scans are counted in windows, so the comparison temporaries stay small whatever the file's size.
_SCAN_WINDOW = 1 << 20


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
            return ImageInfo("jpeg", width, height, orientation or 1, _count_scans(buf))
        if marker == 0xE1 and orientation is None:
            app1 = buf[body : pos + length]
            if bytes(app1[:5]) == b"Exif\x00":  # first EXIF APP1 wins (XMP also uses APP1)
                orientation = _exif_orientation(app1[6:])
        pos += length


def _count_scans(buf: memoryview) -> int:
    """SOS markers (FF DA) anywhere in the file. Entropy-coded data never holds one (an FF there is
    followed by 00 or a restart marker), so this counts scans, plus any in embedded JPEGs (thumbnails)."""
    data = np.frombuffer(buf, np.uint8)
    count = 0
    for start in range(0, len(data) - 1, _SCAN_WINDOW):
        window = data[start : start + _SCAN_WINDOW + 1]  # one byte of overlap: a marker split across two
        # One comparison pass, then only the bytes after an FF (few in a photo): it runs on the event loop,
        # and comparing both bytes everywhere cost several times more (loadtest/RESULTS.md, O6).
        after_ff = np.flatnonzero(window[:-1] == 0xFF) + 1
        count += int(np.count_nonzero(window[after_ff] == 0xDA))
    return count


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
        raise UnsupportedMediaType(f"animated WebP is not supported; {SUPPORTED} with a single frame")
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
    refuse_unsupported(buf)
    raise ImageDecodeError(f"not a recognised image; {SUPPORTED}")
