"""service/imaging.py: header probe, decode (limits, DCT scale, EXIF, colour), letterbox geometry.

Every fixture is generated here with OpenCV/numpy, headers and EXIF blocks crafted byte by byte.
"""

from __future__ import annotations

import contextlib
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blazeface_tools.testkit.images import cmyk_jpeg
from service import imaging
from service.errors import ImageDecodeError, ImageTooLarge, UnsupportedMediaType
from service.imaging import DecodedImage, ImageInfo, Preprocess, decode, letterbox, preprocess, probe

BIG = 100_000_000
RNG = np.random.default_rng(1234)


# --- fixture builders -----------------------------------------------------------------------------


def encode(ext: str, bgr: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, bgr, list(params))
    assert ok
    return buf.tobytes()


def jpeg(bgr: np.ndarray, quality: int = 95) -> bytes:
    # 4:4:4 so colour blocks keep their colour to the block edge (orientation tests compare blocks).
    return encode(".jpg", bgr, cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, 0x111111)


def blocks(rows: int, cols: int, cell: int = 16) -> np.ndarray:
    """A (rows·cell, cols·cell, 3) image of distinct flat colour cells: any flip or turn is visible."""
    colours = RNG.permutation(np.arange(40, 240, 200 // (rows * cols + 1))[: rows * cols])
    grid = np.stack([colours, 255 - colours, (colours * 7) % 200 + 30], axis=-1).astype(np.uint8)
    return np.kron(grid.reshape(rows, cols, 3), np.ones((cell, cell, 1), np.uint8))


def tiff_orientation(orientation: int, big_endian: bool) -> bytes:
    """A minimal TIFF block: header + IFD0 holding one Orientation (0x0112, SHORT) entry."""
    bo = ">" if big_endian else "<"
    header = (b"MM\x00\x2a" if big_endian else b"II\x2a\x00") + struct.pack(bo + "I", 8)
    entry = struct.pack(bo + "HHIH", 0x0112, 3, 1, orientation) + b"\x00\x00"
    return header + struct.pack(bo + "H", 1) + entry + struct.pack(bo + "I", 0)


def with_exif(jpg: bytes, orientation: int, big_endian: bool = False) -> bytes:
    """Splice an APP1 EXIF segment right after SOI."""
    payload = b"Exif\x00\x00" + tiff_orientation(orientation, big_endian)
    return jpg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpg[2:]


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


def orient_stored(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The stored image that a viewer shows as `upright` under this EXIF orientation (inverse transform)."""
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, 1),  # viewer turns it 90° clockwise, so store it 90° counter-clockwise
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, -1),
    }[orientation](upright).copy()


SAMPLE = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)
SAMPLES = {
    "jpeg": jpeg(SAMPLE),
    "png": encode(".png", SAMPLE),
    "webp-lossy": encode(".webp", SAMPLE, cv2.IMWRITE_WEBP_QUALITY, 80),
    "webp-lossless": encode(".webp", SAMPLE, cv2.IMWRITE_WEBP_QUALITY, 101),
    "webp-extended": webp_extended(encode(".webp", SAMPLE, cv2.IMWRITE_WEBP_QUALITY, 101)),
    "bmp": encode(".bmp", SAMPLE),
}


# --- probe ----------------------------------------------------------------------------------------


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


def test_valid_header_with_undecodable_body_is_a_decode_error() -> None:
    # (Random entropy-coded bytes are not one: libjpeg decodes them to noise, as browsers do.)
    data = SAMPLES["jpeg"]
    sos = data.index(b"\xff\xda")
    bad_component = data[: sos + 5] + b"\x09" + data[sos + 6 :]  # SOS names a component the frame lacks
    png = SAMPLES["png"]
    idat = png.index(b"IDAT")
    bad_zlib = png[: idat + 4] + bytes(50) + png[idat + 54 :]
    webp = SAMPLES["webp-lossless"]
    bad_bitstream = webp[:25] + bytes(len(webp) - 25)
    for bad in (bad_component, bad_zlib, bad_bitstream):
        probe(bad)  # the header is fine
        with pytest.raises(ImageDecodeError, match="could not decode"):
            decode(bad, max_pixels=BIG)


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


# --- decode: limits and DCT scale ----------------------------------------------------------------


def huge_jpeg_header(width: int, height: int) -> bytes:
    """SOI + a baseline frame header declaring the size, and nothing a decoder could use."""
    sof = (
        b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    return b"\xff\xd8" + sof + b"\xff\xd9"


def huge_png_header(width: int, height: int) -> bytes:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return (
        b"\x89PNG\r\n\x1a\n"
        + ihdr
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("data", [huge_jpeg_header(50_000, 50_000), huge_png_header(50_000, 50_000)])
def test_pixel_limit_rejects_before_any_decode(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(data) < 100
    assert (probe(data).width, probe(data).height) == (50_000, 50_000)

    def no_decode(*_: object) -> None:
        raise AssertionError("pixels decoded despite the limit")

    monkeypatch.setattr(imaging.cv2, "imdecode", no_decode)
    with pytest.raises(ImageTooLarge, match="2500000000"):
        decode(data, max_pixels=40_000_000)
    with pytest.raises(ImageTooLarge):
        preprocess(data, 128, Preprocess.FAST, max_pixels=40_000_000)


def test_pixel_limit_is_inclusive() -> None:
    assert decode(SAMPLES["png"], max_pixels=40 * 30).pixels.shape == (30, 40, 3)
    with pytest.raises(ImageTooLarge):
        decode(SAMPLES["png"], max_pixels=40 * 30 - 1)


@pytest.mark.parametrize(
    ("long_side", "min_long_side", "scale"),
    [
        (4000, 256, 8),
        (4000, 501, 4),
        (4000, 500, 8),
        (1920, 256, 4),
        (1280, 256, 4),
        (1280, 384, 2),
        (500, 256, 1),
        (100, 256, 1),
        (4001, 501, 8),
        (2000, 256, 4),
    ],
)
def test_dct_scale_choice(long_side: int, min_long_side: int, scale: int) -> None:
    assert imaging._dct_scale(long_side, min_long_side) == scale


def test_decode_asks_opencv_for_the_chosen_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def fake_imdecode(buf: np.ndarray, flags: int) -> np.ndarray:
        seen.append(flags)
        return np.zeros((375, 500, 3), np.uint8)

    monkeypatch.setattr(imaging.cv2, "imdecode", fake_imdecode)
    image = decode(huge_jpeg_header(4000, 3000), max_pixels=BIG, min_long_side=256)
    assert seen[0] & 0b1110000 == cv2.IMREAD_REDUCED_GRAYSCALE_8
    assert seen[0] & cv2.IMREAD_IGNORE_ORIENTATION
    assert (image.width, image.height, image.scale) == (4000, 3000, 8)


@pytest.mark.parametrize("scale", [1, 2, 4, 8])
def test_dct_scaled_decode_keeps_original_size_and_rounds_up(scale: int) -> None:
    data = jpeg(cv2.resize(blocks(3, 4), (1001, 757), interpolation=cv2.INTER_NEAREST))
    image = decode(data, max_pixels=BIG, min_long_side=-(-1001 // scale))
    assert (image.width, image.height, image.scale) == (1001, 757, scale)
    assert image.pixels.shape == (-(-757 // scale), -(-1001 // scale), 3)
    assert image.pixels.flags.c_contiguous


def test_decoder_disagreeing_with_the_header_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging.cv2, "imdecode", lambda buf, flags: np.zeros((31, 40, 3), np.uint8))
    with pytest.raises(ImageDecodeError, match="header said"):
        decode(SAMPLES["png"], max_pixels=BIG)


def test_dct_scaling_is_jpeg_only() -> None:
    image = decode(SAMPLES["png"], max_pixels=BIG, min_long_side=1)
    assert image.scale == 1 and image.pixels.shape == (30, 40, 3)


# --- decode: orientation and colour ---------------------------------------------------------------


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_exactly_once(orientation: int, big_endian: bool) -> None:
    upright = blocks(3, 4)  # 48 × 64, cells on the 8×8 DCT grid so 1/8 decodes stay clean
    data = with_exif(jpeg(orient_stored(upright, orientation), quality=100), orientation, big_endian)
    info = probe(data)
    assert info.orientation == orientation
    assert (info.upright_width, info.upright_height) == (64, 48)
    want = upright[..., ::-1].astype(int)  # fixtures are BGR, decode gives RGB
    for min_long_side, scale in ((None, 1), (32, 2), (8, 8)):
        image = decode(data, max_pixels=BIG, min_long_side=min_long_side)
        assert (image.width, image.height, image.scale) == (64, 48, scale)
        assert image.pixels.shape == (48 // scale, 64 // scale, 3)
        centres = image.pixels[8 // scale :: 16 // scale, 8 // scale :: 16 // scale].astype(int)
        assert np.abs(centres - want[8::16, 8::16]).max() <= 3
    # Same pixels as OpenCV 4.14 rotating by itself (our flags switch that off, so it happens once).
    auto = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
    np.testing.assert_array_equal(decode(data, max_pixels=BIG).pixels, auto)


def test_exif_in_png_and_webp_is_honoured() -> None:
    upright = blocks(2, 3)
    stored = orient_stored(upright, 6)
    png = encode(".png", stored)
    png = png[:33] + png_chunk(b"eXIf", tiff_orientation(6, True)) + png[33:]
    lossless = encode(".webp", stored, cv2.IMWRITE_WEBP_QUALITY, 101)
    webps = [
        webp_extended(lossless, flags=0x08, exif=prefix + tiff_orientation(6, False))
        for prefix in (b"", b"Exif\x00\x00")
    ]
    for data in (png, *webps):
        assert probe(data).orientation == 6
        np.testing.assert_array_equal(decode(data, max_pixels=BIG).pixels, upright[..., ::-1])


@pytest.mark.parametrize(
    "tiff",
    [
        b"",
        b"XX\x2a\x00\x08\x00\x00\x00",
        b"II\x2b\x00\x08\x00\x00\x00",
        b"II\x2a\x00\xff\xff\x00\x00",
        tiff_orientation(9, False),
        tiff_orientation(0, True),
        tiff_orientation(6, False)[:19],
    ],
)
def test_malformed_exif_is_ignored(tiff: bytes) -> None:
    payload = b"Exif\x00\x00" + tiff
    data = (
        SAMPLES["jpeg"][:2]
        + b"\xff\xe1"
        + struct.pack(">H", len(payload) + 2)
        + payload
        + SAMPLES["jpeg"][2:]
    )
    assert probe(data).orientation == 1
    assert decode(data, max_pixels=BIG).pixels.shape == (30, 40, 3)


def test_grey_becomes_rgb() -> None:
    grey = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    for data in (encode(".png", grey), jpeg(grey)):
        pixels = decode(data, max_pixels=BIG).pixels
        assert pixels.shape == (20, 30, 3) and pixels.dtype == np.uint8
        assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
    np.testing.assert_array_equal(decode(encode(".png", grey), max_pixels=BIG).pixels[..., 0], grey)


def test_alpha_is_dropped_not_composited() -> None:
    # As MediaPipe's ImageToTensorCalculator (RGBA2RGB): the colour under a transparent pixel survives.
    bgra = np.zeros((4, 5, 4), np.uint8)
    bgra[..., :3] = (30, 200, 10)
    # From nearly transparent to nearly opaque (libwebp's encoder zeroes colour under alpha 0 itself).
    bgra[..., 3] = 1 + np.arange(20).reshape(4, 5) * 13
    for data in (encode(".png", bgra), encode(".webp", bgra, cv2.IMWRITE_WEBP_QUALITY, 101)):
        pixels = decode(data, max_pixels=BIG).pixels
        assert pixels.shape == (4, 5, 3)
        assert (pixels == (10, 200, 30)).all()
    grey_alpha = np.dstack([np.full((3, 3), 77, np.uint8), np.zeros((3, 3), np.uint8)])
    png = encode(".png", cv2.cvtColor(grey_alpha[..., 0], cv2.COLOR_GRAY2BGRA))
    assert (decode(png, max_pixels=BIG).pixels == 77).all()


def test_sixteen_bit_png_becomes_eight_bit() -> None:
    eight = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257
    sixteen[0, 0] = 0x01FF  # the high byte is kept (libpng strip_16), not rounded
    eight[0, 0] = 1
    data = encode(".png", sixteen)
    assert probe(data) == ImageInfo("png", 7, 6, 1)
    np.testing.assert_array_equal(decode(data, max_pixels=BIG).pixels, eight[..., ::-1])


@pytest.mark.skipif(not hasattr(cv2, "imencodeanimation"), reason="needs OpenCV's animation encoder")
def test_animated_webp_is_refused_and_apng_is_its_first_frame() -> None:
    animation = cv2.Animation()
    animation.frames = [np.full((20, 30, 3), 10, np.uint8), np.full((20, 30, 3), 200, np.uint8)]
    animation.durations = [100, 100]
    ok, webp = cv2.imencodeanimation(".webp", animation)
    assert ok
    with pytest.raises(UnsupportedMediaType, match="animated WebP"):
        preprocess(webp.tobytes(), 128, Preprocess.EXACT, max_pixels=BIG)
    ok, apng = cv2.imencodeanimation(".png", animation)
    assert ok and b"acTL" in apng.tobytes()
    assert (decode(apng.tobytes(), max_pixels=BIG).pixels == 10).all()


def test_cmyk_jpeg_becomes_rgb() -> None:
    # Adobe CMYK JPEGs store inverted ink: (200, 100, 50, 255) is R 200, G 100, B 50.
    data = cmyk_jpeg((200, 100, 50, 255))
    assert probe(data) == ImageInfo("jpeg", 8, 8, 1)
    pixels = decode(data, max_pixels=BIG).pixels
    assert pixels.shape == (8, 8, 3)
    assert np.abs(pixels.astype(int) - (200, 100, 50)).max() <= 2


def test_bgr_fallback_for_opencv_without_imread_color_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    data = with_exif(jpeg(blocks(2, 2)), 6)
    want = decode(data, max_pixels=BIG, min_long_side=8).pixels
    monkeypatch.setattr(imaging, "_RGB_FLAG", None)
    np.testing.assert_array_equal(decode(data, max_pixels=BIG, min_long_side=8).pixels, want)


# --- letterbox ------------------------------------------------------------------------------------


def white(width: int, height: int) -> DecodedImage:
    return DecodedImage(np.full((height, width, 3), 255, np.uint8), width, height)


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


def test_letterbox_into_a_batch_slot_writes_in_place() -> None:
    batch = np.full((3, 128, 128, 3), 77, np.uint8)
    image = DecodedImage(RNG.integers(0, 256, (90, 200, 3), dtype=np.uint8), 200, 90)
    result, lb = letterbox(image, 128, out=batch[1])
    assert result is batch[1] or np.shares_memory(result, batch)
    expected, expected_lb = letterbox(image, 128)
    np.testing.assert_array_equal(batch[1], expected)  # padding zeroed, content resized in place
    assert lb == expected_lb
    assert (batch[0] == 77).all() and (batch[2] == 77).all()
    with pytest.raises(ValueError, match="out must be"):
        letterbox(image, 128, out=batch[1, :, :64])
    with pytest.raises(ValueError, match="out must be"):
        letterbox(image, 128, out=np.zeros((128, 128, 3), np.float32))


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
    scale = 1 if min_long_side is None else imaging._dct_scale(max(width, height), min_long_side * size)
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


# --- preprocess -----------------------------------------------------------------------------------


def test_preprocess_modes_are_decode_plus_letterbox() -> None:
    data = with_exif(jpeg(RNG.integers(0, 256, (700, 1000, 3), dtype=np.uint8)), 8)
    exact, exact_lb = preprocess(data, 128, Preprocess.EXACT, max_pixels=BIG)
    want, want_lb = letterbox(decode(data, max_pixels=BIG), 128)
    np.testing.assert_array_equal(exact, want)
    assert exact_lb == want_lb == imaging.Letterbox(128, 700, 1000, 19.2, 0.0, 700 * 0.128, 128.0)

    fast, fast_lb = preprocess(data, 128, "fast", max_pixels=BIG)  # type: ignore[arg-type]
    reduced = decode(data, max_pixels=BIG, min_long_side=256)
    assert reduced.scale == 2  # 1000 / 4 = 250 < 256
    want, want_lb = letterbox(reduced, 128)
    np.testing.assert_array_equal(fast, want)
    assert fast_lb == want_lb


def test_preprocess_writes_into_out() -> None:
    batch = np.full((2, 192, 192, 3), 5, np.uint8)
    tensor, _ = preprocess(SAMPLES["webp-lossy"], 192, Preprocess.FAST, max_pixels=BIG, out=batch[0])
    assert np.shares_memory(tensor, batch)
    assert (batch[1] == 5).all() and not (batch[0] == 5).all()
