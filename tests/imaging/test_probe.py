"""service/imaging/probe.py: formats, refusals, impossible headers, truncation and fuzzed headers.

Every fixture is generated with OpenCV/numpy, headers crafted byte by byte
(blazeface_tools/testkit/images.py).
"""

from __future__ import annotations

import contextlib
import struct

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blazeface_tools.testkit.images import encode, format_samples, png_chunk, webp_extended, with_exif
from service.errors import ImageDecodeError, UnsupportedMediaType
from service.imaging.decode import decode
from service.imaging.probe import ImageInfo, probe

BIG = 100_000_000
SAMPLE = np.random.default_rng(1234).integers(0, 256, (30, 40, 3), dtype=np.uint8)
SAMPLES = format_samples(SAMPLE)
# An uncompressed 2×2 true-colour TGA header: no ID, no colour map, type 2, 24 bits, top-left origin.
TGA_HEADER = bytes([0, 0, 2]) + bytes(9) + struct.pack("<HH", 2, 2) + bytes([24, 0x20])


@pytest.mark.parametrize("name", SAMPLES)
def test_probe_reads_every_format(name: str) -> None:
    info = probe(SAMPLES[name])
    assert info == ImageInfo(name.split("-")[0], 40, 30, 1)
    assert probe(memoryview(SAMPLES[name])) == info


def test_probe_progressive_jpeg_and_fill_bytes() -> None:
    progressive = encode(".jpg", SAMPLE, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)
    assert probe(progressive).width == 40
    # Extra 0xFF fill bytes before a marker are legal.
    assert probe(b"\xff\xd8\xff\xff\xff" + SAMPLES["jpeg"][3:]).height == 30


def test_probe_counts_jpeg_scans_over_the_whole_file() -> None:
    assert probe(SAMPLES["jpeg"]).scans == 1
    assert probe(encode(".jpg", SAMPLE, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)).scans == 10  # libjpeg's script
    assert probe(SAMPLES["png"]).scans == 1
    # A marker split across the counter's 1 MiB windows is counted once: comment segments push the
    # scan's FF to the last byte of the first window.
    data = SAMPLES["jpeg"]
    sos = data.index(b"\xff\xda")
    gap = (1 << 20) - 1 - sos
    count = -(-gap // 65_537)  # a segment is 4 to 65537 bytes: marker, length, payload
    sizes = [gap // count + (i < gap % count) for i in range(count)]
    comments = b"".join(b"\xff\xfe" + struct.pack(">H", size - 2) + bytes(size - 4) for size in sizes)
    padded = data[:2] + comments + data[2:]
    assert padded.index(b"\xff\xda") == (1 << 20) - 1
    assert probe(padded).scans == 1


def test_a_tga_header_needs_every_field_plausible() -> None:
    # Checked last and field by field, so data that merely starts with small numbers stays a 400.
    for wrong in (
        TGA_HEADER[:1] + b"\x01" + TGA_HEADER[2:],  # colour map announced for a true-colour image
        TGA_HEADER[:2] + b"\x04" + TGA_HEADER[3:],  # no such image type
        TGA_HEADER[:16] + b"\x11" + TGA_HEADER[17:],  # 17 bits per pixel
        TGA_HEADER[:12] + b"\x00\x00" + TGA_HEADER[14:],  # zero width
        TGA_HEADER[:17],  # shorter than a header
    ):
        with pytest.raises(ImageDecodeError):
            probe(wrong + b"\x80" * 12)


def test_probe_bmp_top_down_and_core_header() -> None:
    bottom_up = SAMPLES["bmp"]
    top_down = bottom_up[:22] + struct.pack("<i", -30) + bottom_up[26:]
    assert probe(top_down) == ImageInfo("bmp", 40, 30, 1)
    np.testing.assert_array_equal(decode(top_down, max_pixels=BIG).pixels, SAMPLE[::-1, :, ::-1])
    core = b"BM" + struct.pack("<IHHI", 26 + 12, 0, 0, 26) + struct.pack("<IHHHH", 12, 2, 2, 1, 24)
    core += b"\x00" * 12
    assert probe(core) == ImageInfo("bmp", 2, 2, 1)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "GIF"),
        (encode(".tiff", SAMPLE), "TIFF"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "HEIF"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "HEIF"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "RIFF"),
        (b"%PDF-1.7\n", "PDF"),
        (b"P6\n2 2\n255\n" + b"\x00" * 12, "PNM"),
        (b"PF\n2 2\n-1.0\n" + b"\x00" * 24, "PFM"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n", "Radiance"),
        (b"#?RGBE\nFORMAT=32-bit_rle_rgbe\n\n", "Radiance"),
        (b"\x00\x00\x01\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00" + b"\x00" * 8, "ICO"),
        (b"\x00\x00\x02\x00\x01\x00\x10\x10\x00\x00\x01\x00\x20\x00" + b"\x00" * 8, "CUR"),
        (TGA_HEADER + b"\x80" * 12, "TGA"),  # TGA 1: its header alone
        (b"\x07" * 30 + b"\x00" * 8 + b"TRUEVISION-XFILE.\x00", "TGA"),  # TGA 2: its footer
        (webp_extended(SAMPLES["webp-lossless"], flags=0x02), "animated"),
    ],
)
def test_probe_refuses_types_we_do_not_decode(data: bytes, needle: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=needle):
        probe(data)
    with pytest.raises(UnsupportedMediaType):
        decode(data, max_pixels=BIG)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"hello world",
        b"\xff\xd8",  # SOI only
        b"\xff\xd8\xff\xd9",  # EOI before a frame header
        b"\xff\xd8\xff\xda\x00\x02",  # scan before a frame header
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10\x03",  # height 0 (DNL)
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)),
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2**31, 5, 8, 2, 0, 0, 0)),
        b"RIFF\x10\x00\x00\x00WEBPXXXX\x00\x00\x00\x00",
        b"BM" + b"\x00" * 12 + struct.pack("<I", 20) + b"\x00" * 20,  # unknown DIB header size
    ],
)
def test_probe_rejects_garbage_and_impossible_headers(data: bytes) -> None:
    with pytest.raises(ImageDecodeError):
        probe(data)


def test_webp_canvas_must_match_its_image() -> None:
    # A small canvas over a big frame would dodge the pixel limit.
    lying = webp_extended(SAMPLES["webp-lossless"], canvas=(4, 3))
    with pytest.raises(ImageDecodeError, match="canvas"):
        probe(lying)


@pytest.mark.parametrize("name", SAMPLES)
def test_truncation_anywhere_is_a_decode_error(name: str) -> None:
    data = SAMPLES[name]
    for cut in [*range(0, min(len(data), 200)), *range(200, len(data), max(1, len(data) // 25))]:
        with contextlib.suppress(ImageDecodeError, UnsupportedMediaType):
            probe(data[:cut])
    # Past the header the decoder must notice too (OpenCV 4.14 returns None on short data).
    for fraction in (0.5, 0.9, 0.999):
        with pytest.raises(ImageDecodeError):
            decode(data[: int(len(data) * fraction)], max_pixels=BIG)


PREFIXES = [
    b"",
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"RIFF\x00\x01\x00\x00WEBP",
    b"BM",
    b"\xff\xd8\xff\xe1",
]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(PREFIXES), tail=st.binary(max_size=256))
def test_probe_on_random_bytes_raises_only_our_errors(prefix: bytes, tail: bytes) -> None:
    try:
        info = probe(prefix + tail)
    except (ImageDecodeError, UnsupportedMediaType):
        return
    assert info.width > 0 and info.height > 0 and 1 <= info.orientation <= 8


MUTABLE = {**SAMPLES, "jpeg-exif": with_exif(SAMPLES["jpeg"], 6, big_endian=True)}


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(MUTABLE)),
    flips=st.lists(st.tuples(st.integers(0, 120), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(0, 400),
)
def test_probe_on_mutated_headers_raises_only_our_errors(
    name: str, flips: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(MUTABLE[name][: 30 + cut])
    for offset, value in flips:
        if offset < len(data):
            data[offset] = value
    with contextlib.suppress(ImageDecodeError, UnsupportedMediaType):
        probe(bytes(data))


def test_probe_budget_stops_endless_fill_bytes() -> None:
    with pytest.raises(ImageDecodeError):
        probe(b"\xff\xd8" + b"\xff" * 1_000_000)
