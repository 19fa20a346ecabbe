"""Image bytes for tests: OpenCV encodings and headers crafted byte by byte (EXIF, chunks, containers)
that OpenCV cannot write, shared by the imaging tests and the bad-input corpus."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

from service.imaging.probe import probe


def encode(ext: str, bgr: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, bgr, list(params))
    assert ok, ext
    return buf.tobytes()


def jpeg(bgr: np.ndarray, quality: int = 95) -> bytes:
    # 4:4:4 so colour blocks keep their colour to the block edge (orientation tests compare blocks).
    return encode(".jpg", bgr, cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, 0x111111)


def format_samples(bgr: np.ndarray) -> dict[str, bytes]:
    """The image in every format and container variant the probe parses, keyed "format[-variant]"."""
    lossless = encode(".webp", bgr, cv2.IMWRITE_WEBP_QUALITY, 101)
    return {
        "jpeg": jpeg(bgr),
        "png": encode(".png", bgr),
        "webp-lossy": encode(".webp", bgr, cv2.IMWRITE_WEBP_QUALITY, 80),
        "webp-lossless": lossless,
        "webp-extended": webp_extended(lossless),
        "bmp": encode(".bmp", bgr),
    }


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def tiff_orientation(orientation: int, big_endian: bool) -> bytes:
    """A minimal TIFF block: header + IFD0 holding one Orientation (0x0112, SHORT) entry."""
    bo = ">" if big_endian else "<"
    header = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(bo + "I", 8)
    entry = struct.pack(bo + "HHIH", 0x0112, 3, 1, orientation) + b"\x00\x00"
    return header + struct.pack(bo + "H", 1) + entry + struct.pack(bo + "I", 0)


def with_exif_block(jpg: bytes, tiff: bytes) -> bytes:
    """Splice an APP1 EXIF segment holding this TIFF block right after SOI."""
    return jpg[:2] + jpeg_segment(0xE1, b"Exif\x00\x00" + tiff) + jpg[2:]


def with_exif(jpg: bytes, orientation: int, big_endian: bool = False) -> bytes:
    return with_exif_block(jpg, tiff_orientation(orientation, big_endian))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def riff_chunk(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1)


def webp_extended(
    simple: bytes, *, flags: int = 0, canvas: tuple[int, int] | None = None, exif: bytes | None = None
) -> bytes:
    """Rewrap a simple (VP8/VP8L) WebP in a VP8X container, optionally with an EXIF chunk after the image."""
    frame = probe(simple)
    width, height = canvas or (frame.width, frame.height)
    vp8x = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + riff_chunk(b"VP8X", vp8x) + simple[12:]
    if exif is not None:
        body += riff_chunk(b"EXIF", exif)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_declaring(width: int, height: int) -> bytes:
    """SOI + a baseline frame header declaring the size, and nothing a decoder could use."""
    components = b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"  # Y 2×2, Cb and Cr 1×1 (4:2:0)
    sof = jpeg_segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) + components)
    return b"\xff\xd8" + sof + b"\xff\xd9"


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims the size, with a token IDAT: a decompression bomb's header."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + png_chunk(b"IEND", b"")


def cmyk_jpeg(cmyk: tuple[int, int, int, int]) -> bytes:
    """An 8×8 flat-colour four-component (Adobe, transform 0 = CMYK) baseline JPEG, built by hand
    because OpenCV cannot write CMYK: quantiser 1, DC-only blocks, a one-entry AC table (EOB)."""
    app14 = jpeg_segment(0xEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0))
    dqt = jpeg_segment(0xDB, b"\x00" + b"\x01" * 64)
    sof = jpeg_segment(
        0xC0, struct.pack(">BHHB", 8, 8, 8, 4) + b"".join(bytes([i + 1, 0x11, 0]) for i in range(4))
    )
    # DC table: categories 0..11 as 4-bit codes 0000..1011; AC table: EOB as the 1-bit code "0".
    dc_table = b"\x00" + bytes([0, 0, 0, 12] + [0] * 12) + bytes(range(12))
    ac_table = b"\x10" + bytes([1] + [0] * 15) + b"\x00"
    dht = jpeg_segment(0xC4, dc_table + ac_table)
    sos = jpeg_segment(0xDA, b"\x04" + b"".join(bytes([i + 1, 0x00]) for i in range(4)) + b"\x00\x3f\x00")
    bits = ""
    for value in cmyk:
        dc = 8 * (value - 128)  # the DC term of a flat block is 8 × (level − 128)
        category = abs(dc).bit_length()
        magnitude = dc if dc >= 0 else dc + (1 << category) - 1
        bits += format(category, "04b") + (format(magnitude, f"0{category}b") if category else "") + "0"
    bits += "1" * (-len(bits) % 8)
    scan = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)).replace(b"\xff", b"\xff\x00")
    return b"\xff\xd8" + app14 + dqt + sof + dht + sos + scan + b"\xff\xd9"


def flat_png(side: int) -> bytes:
    """~120 KB of PNG for a 36 MP image (side 6000): a decompression workload for a small upload's price."""
    pixels = np.full((side, side, 3), 128, np.uint8)
    return encode(".png", pixels, cv2.IMWRITE_PNG_COMPRESSION, 9)


def scan_bomb(scans: int, side: int = 6000) -> bytes:
    """A progressive greyscale JPEG: one DC scan, then `scans` AC scans, all without data (~10 bytes
    each). libjpeg passes over every block of the image for each one: ~8 ms a scan at 36 MP."""
    dqt = jpeg_segment(0xDB, b"\x00" + b"\x01" * 64)
    sof2 = jpeg_segment(0xC2, struct.pack(">BHHB", 8, side, side, 1) + b"\x01\x11\x00")
    one_code = bytes([1] + [0] * 15) + b"\x00"  # a table of one 1-bit code, for symbol 0
    dht = jpeg_segment(0xC4, b"\x00" + one_code + b"\x10" + one_code)
    dc_scan = jpeg_segment(0xDA, b"\x01\x01\x00" + b"\x00\x00\x00")
    ac_scan = jpeg_segment(0xDA, b"\x01\x01\x00" + b"\x01\x3f\x00")
    return b"\xff\xd8" + dqt + sof2 + dht + dc_scan + ac_scan * scans + b"\xff\xd9"
