"""service/imaging/decode.py: pixel limit, DCT scale, EXIF orientation, colour conversions.

Every fixture is generated with OpenCV/numpy, headers and EXIF blocks crafted byte by byte
(blazeface_tools/testkit/images.py).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import service.imaging.decode as decode_module
from blazeface_tools.testkit.images import (
    cmyk_jpeg,
    encode,
    format_samples,
    jpeg,
    jpeg_declaring,
    png_chunk,
    png_declaring,
    tiff_orientation,
    webp_extended,
    with_exif,
    with_exif_block,
)
from service.errors import ImageDecodeError, ImageTooComplex, ImageTooLarge, UnsupportedMediaType
from service.imaging import Preprocess, preprocess
from service.imaging.decode import decode, inspect
from service.imaging.probe import ImageInfo, probe

BIG = 100_000_000
RNG = np.random.default_rng(1234)
SAMPLE = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)
SAMPLES = format_samples(SAMPLE)


def blocks(rows: int, cols: int, cell: int = 16) -> np.ndarray:
    """A (rows·cell, cols·cell, 3) image of distinct flat colour cells: any flip or turn is visible."""
    colours = RNG.permutation(np.arange(40, 240, 200 // (rows * cols + 1))[: rows * cols])
    grid = np.stack([colours, 255 - colours, (colours * 7) % 200 + 30], axis=-1).astype(np.uint8)
    return np.kron(grid.reshape(rows, cols, 3), np.ones((cell, cell, 1), np.uint8))


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


def test_valid_header_with_undecodable_body_is_a_decode_error(capfd: pytest.CaptureFixture[str]) -> None:
    # (Random entropy-coded bytes are not one: libjpeg decodes them to noise, as browsers do.)
    data = SAMPLES["jpeg"]
    sos = data.index(b"\xff\xda")
    bad_component = data[: sos + 5] + b"\x09" + data[sos + 6 :]  # SOS names a component the frame lacks
    png = SAMPLES["png"]
    idat = png.index(b"IDAT")
    bad_zlib = png[: idat + 4] + bytes(50) + png[idat + 54 :]
    webp = SAMPLES["webp-lossless"]
    bad_bitstream = webp[:25] + bytes(len(webp) - 25)
    cut_bmp = SAMPLES["bmp"][: len(SAMPLES["bmp"]) // 2]
    for bad in (bad_component, bad_zlib, bad_bitstream, cut_bmp):
        probe(bad)  # the header is fine
        with pytest.raises(ImageDecodeError, match="could not decode"):
            decode(bad, max_pixels=BIG)
    # OpenCV's own error lines are silenced (the error is ours to log); libpng's and libjpeg's warnings
    # are written by those libraries, out of reach.
    assert "imdecode" not in capfd.readouterr().err


# --- limits and DCT scale -------------------------------------------------------------------------


@pytest.mark.parametrize("data", [jpeg_declaring(50_000, 50_000), png_declaring(50_000, 50_000)])
def test_pixel_limit_rejects_before_any_decode(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(data) < 100
    assert (probe(data).width, probe(data).height) == (50_000, 50_000)

    def no_decode(*_: object) -> None:
        raise AssertionError("pixels decoded despite the limit")

    monkeypatch.setattr(decode_module.cv2, "imdecode", no_decode)
    with pytest.raises(ImageTooLarge, match="2500000000"):
        decode(data, max_pixels=40_000_000)
    with pytest.raises(ImageTooLarge):
        preprocess(data, 128, Preprocess.FAST, max_pixels=40_000_000)


def test_scan_limit_is_inclusive_and_rejects_before_any_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    progressive = encode(".jpg", SAMPLE, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)  # 10 scans
    assert inspect(progressive, max_pixels=BIG, max_jpeg_scans=10).scans == 10
    assert decode(progressive, max_pixels=BIG, max_jpeg_scans=10).pixels.shape == (30, 40, 3)
    assert inspect(progressive, max_pixels=BIG).scans == 10  # no limit by default (trusted files)

    def no_decode(*_: object) -> None:
        raise AssertionError("pixels decoded despite the limit")

    monkeypatch.setattr(decode_module.cv2, "imdecode", no_decode)
    with pytest.raises(ImageTooComplex, match="10 scans"):
        decode(progressive, max_pixels=BIG, max_jpeg_scans=9)
    with pytest.raises(ImageTooComplex):
        preprocess(progressive, 128, Preprocess.FAST, max_pixels=BIG, max_jpeg_scans=9)


def test_decode_trusts_the_info_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    info = inspect(SAMPLES["png"], max_pixels=BIG)

    def no_probe(*_: object) -> None:
        raise AssertionError("probed again")

    monkeypatch.setattr(decode_module, "probe", no_probe)
    assert decode(SAMPLES["png"], max_pixels=BIG, info=info).pixels.shape == (30, 40, 3)


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
    assert decode_module._dct_scale(long_side, min_long_side) == scale


def test_decode_asks_opencv_for_the_chosen_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def fake_imdecode(buf: np.ndarray, flags: int) -> np.ndarray:
        seen.append(flags)
        return np.zeros((375, 500, 3), np.uint8)

    monkeypatch.setattr(decode_module.cv2, "imdecode", fake_imdecode)
    image = decode(jpeg_declaring(4000, 3000), max_pixels=BIG, min_long_side=256)
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
    monkeypatch.setattr(decode_module.cv2, "imdecode", lambda buf, flags: np.zeros((31, 40, 3), np.uint8))
    with pytest.raises(ImageDecodeError, match="header said"):
        decode(SAMPLES["png"], max_pixels=BIG)


def test_dct_scaling_is_jpeg_only() -> None:
    image = decode(SAMPLES["png"], max_pixels=BIG, min_long_side=1)
    assert image.scale == 1 and image.pixels.shape == (30, 40, 3)


# --- orientation and colour -----------------------------------------------------------------------


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
    data = with_exif_block(SAMPLES["jpeg"], tiff)
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
    monkeypatch.setattr(decode_module, "_RGB_FLAG", None)
    np.testing.assert_array_equal(decode(data, max_pixels=BIG, min_long_side=8).pixels, want)
