"""A generated corpus of bad (and awkward-but-valid) requests, each with the status the README documents.

    cases = build_corpus(max_body_bytes=2 * 1024 * 1024, max_pixels=20_000_000, max_batch_images=8)
    for case in cases:
        response = httpx.request("POST", url + case.path, **case.httpx_kwargs())
        assert response.status_code == case.expect

Everything is made here from numpy/OpenCV output and bytes crafted by hand (seeded, so every run sends
the same bytes); the only files read are the test photos. The statuses assume a service started with the
same limits as `build_corpus` was given. Used by tests/reliability/test_corpus.py and loadtest/soak.py.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import struct
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import orjson

from blazeface_tools import CHECKOUT
from blazeface_tools.testkit.images import (
    cmyk_jpeg,
    encode,
    flat_png,
    jpeg_declaring,
    jpeg_segment,
    png_chunk,
    png_declaring,
    scan_bomb,
)

PHOTOS = CHECKOUT / "tests" / "data" / "photos"
SEED = 20_261_127


@dataclass(frozen=True)
class SlowBody:
    """A chunked body (no Content-Length): `head`, then `prefix` fill bytes at once, then `chunk` bytes
    every `interval_s` until `total` bytes in all. `limit` is the server's body limit, so the sender can
    note when it was passed."""

    total: int
    limit: int
    head: bytes = b""
    prefix: int = 0
    chunk: int = 1024
    interval_s: float = 0.25
    fill: bytes = b"\0"


@dataclass
class SlowProgress:
    """What a SlowBody sender did: bytes sent, and when (monotonic) it first went past the limit."""

    sent: int = 0
    limit_passed_at: float | None = None


@dataclass(frozen=True)
class Case:
    """One request. Exactly one of `content`, `files` or `slow` is set (or none: an empty body)."""

    name: str
    group: str
    expect: int
    path: str = "/detect"
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] | None = None  # non-file multipart fields
    slow: SlowBody | None = None
    note: str = ""

    @property
    def url_path(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    def httpx_kwargs(
        self, progress: SlowProgress | None = None, *, asynchronous: bool = False
    ) -> dict[str, Any]:
        """Keyword arguments for `httpx.Client.request` / `AsyncClient.request` (method and URL aside)."""
        kwargs: dict[str, Any] = {"headers": dict(self.headers)}
        if self.files is not None:
            kwargs["files"] = self.files
            if self.data:
                kwargs["data"] = self.data
        elif self.slow is not None:
            progress = progress if progress is not None else SlowProgress()
            kwargs["content"] = (
                _slow_async(self.slow, progress) if asynchronous else _slow_sync(self.slow, progress)
            )
        else:
            kwargs["content"] = self.content if self.content is not None else b""
        return kwargs


def _slow_pieces(body: SlowBody) -> Iterator[bytes]:
    yield body.head + body.fill * body.prefix
    sent = len(body.head) + body.prefix
    while sent < body.total:
        piece = min(body.chunk, body.total - sent)
        sent += piece
        yield body.fill * piece


def _note(progress: SlowProgress, body: SlowBody, piece: bytes) -> None:
    progress.sent += len(piece)
    if progress.limit_passed_at is None and progress.sent > body.limit:
        progress.limit_passed_at = time.monotonic()


def _slow_sync(body: SlowBody, progress: SlowProgress) -> Iterator[bytes]:
    for index, piece in enumerate(_slow_pieces(body)):
        if index:
            time.sleep(body.interval_s)
        _note(progress, body, piece)
        yield piece


async def _slow_async(body: SlowBody, progress: SlowProgress) -> AsyncIterator[bytes]:
    for index, piece in enumerate(_slow_pieces(body)):
        if index:
            await asyncio.sleep(body.interval_s)
        _note(progress, body, piece)
        yield piece


# --- byte builders ----------------------------------------------------------------------------------


def photo(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


def base_image() -> np.ndarray:
    """A real face photo, small enough that every truncation of it decodes (or fails) in milliseconds."""
    pixels = cv2.imdecode(np.frombuffer(photo("grace_hopper.jpg"), np.uint8), cv2.IMREAD_COLOR)
    return cv2.resize(pixels, (160, 200), interpolation=cv2.INTER_AREA)


def webp_lossless_declaring(width: int, height: int) -> bytes:
    """A VP8L header claiming the size (14 bits each, so at most 16384²) over a few junk bytes."""
    bits = (width - 1) | ((height - 1) << 14)
    vp8l = b"\x2f" + struct.pack("<I", bits) + b"\0" * 16
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l
    return b"RIFF" + struct.pack("<I", len(body)) + body


def after_soi(jpeg: bytes, inserted: bytes) -> bytes:
    return jpeg[:2] + inserted + jpeg[2:]


def animated_gif(frames: int = 3) -> bytes:
    """A 1×1 looping GIF89a with `frames` frames (NETSCAPE2.0 loop extension)."""
    head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    frame = b"!\xf9\x04\x00\x0a\x00\x00\x00" + b",\x00\x00\x00\x00\x01\x00\x01\x00\x00" + b"\x02\x02D\x01\x00"
    return head + loop + frame * frames + b";"


def animation(ext: str) -> bytes | None:
    """A two-frame animated WebP/PNG from OpenCV's encoder, or None on OpenCV builds without it."""
    if not hasattr(cv2, "imencodeanimation"):
        return None
    anim = cv2.Animation()
    anim.frames = [np.full((40, 30, 3), 10, np.uint8), np.full((40, 30, 3), 200, np.uint8)]
    anim.durations = [100, 100]
    ok, buffer = cv2.imencodeanimation(ext, anim)
    return buffer.tobytes() if ok else None


def tiff_ifd(entries: int, orientation_offset: int | None = None) -> bytes:
    """A little-endian TIFF block for EXIF: IFD0 claiming `entries` entries (only the first is written)."""
    header = b"II\x2a\x00" + struct.pack("<I", 8 if orientation_offset is None else orientation_offset)
    entry = struct.pack("<HHIH", 0x0112, 3, 1, 6) + b"\0\0"
    return header + struct.pack("<H", entries) + entry + struct.pack("<I", 0)


def _raw(content: bytes, kind: str = "application/octet-stream") -> dict[str, Any]:
    return {"content": content, "headers": {"content-type": kind}}


def _json(document: Any) -> dict[str, Any]:
    return {"content": orjson.dumps(document), "headers": {"content-type": "application/json"}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _multipart(field_name: str, data: bytes, filename: str = "upload.bin") -> dict[str, Any]:
    return {"files": [(field_name, (filename, data, "application/octet-stream"))]}


# --- the corpus -------------------------------------------------------------------------------------


def build_corpus(
    *,
    max_body_bytes: int = 2 * 1024 * 1024,
    max_pixels: int = 20_000_000,
    max_batch_images: int = 8,
    include_slow: bool = True,
) -> list[Case]:
    """Every case, in a stable order. `include_slow=False` leaves out the trickled bodies (seconds each)."""
    rng = np.random.default_rng(SEED)
    image = base_image()
    jpeg = encode(".jpg", image, cv2.IMWRITE_JPEG_QUALITY, 90)
    png = encode(".png", image)
    webp_lossy = encode(".webp", image, cv2.IMWRITE_WEBP_QUALITY, 80)
    webp_lossless = encode(".webp", image, cv2.IMWRITE_WEBP_QUALITY, 101)
    bmp = encode(".bmp", image)
    cases: list[Case] = []

    def add(name: str, group: str, expect: int, **request: Any) -> None:
        cases.append(Case(name=name, group=group, expect=expect, **request))

    # Empty bodies, in every form.
    add("empty raw image/jpeg", "empty", 400, **_raw(b"", "image/jpeg"))
    add("empty raw octet-stream", "empty", 400, **_raw(b""))
    add("empty multipart file", "empty", 400, **_multipart("image", b""))
    add("empty base64 in JSON", "empty", 400, **_json({"image": ""}))
    add("empty JSON body", "empty", 422, **_raw(b"", "application/json"))
    add(
        "batch of empty files",
        "empty",
        200,
        path="/detect/batch",
        files=[("images", ("a.jpg", b"", "image/jpeg")), ("images", ("b.jpg", b"", "image/jpeg"))],
    )

    # Seeded random bytes, bare and behind each format's magic number.
    for size in (1, 7, 64, 1024, 65_536, 1_000_000):
        add(f"random {size} B", "random", 400, **_raw(rng.bytes(size)))
    for magic, label in (
        (b"\xff\xd8\xff", "JPEG SOI"),
        (b"\x89PNG\r\n\x1a\n", "PNG signature"),
        (b"RIFF\x00\x10\x00\x00WEBP", "RIFF/WEBP"),
        (b"\xff\xd8\xff\xe1\xff\xfeExif\x00\x00", "JPEG APP1"),
    ):
        add(f"{label} + 4 KB random", "random", 400, **_raw(magic + rng.bytes(4096)))
    add("random multipart file", "random", 400, **_multipart("image", rng.bytes(2048)))
    add("random bytes as base64 JSON", "random", 400, **_json({"image": _b64(rng.bytes(2048))}))
    add(
        "batch of random files",
        "random",
        200,
        path="/detect/batch",
        files=[
            ("images", (f"{i}.bin", rng.bytes(512 * (i + 1)), "application/octet-stream")) for i in range(3)
        ],
    )

    # Truncations of every format: inside the signature, inside headers, inside pixel data, one byte short.
    for label, data in (
        ("jpeg", jpeg),
        ("png", png),
        ("webp-lossy", webp_lossy),
        ("webp-lossless", webp_lossless),
        ("bmp", bmp),
        ("photo-jpeg", photo("astronaut.jpg")),
    ):
        n = len(data)
        cuts = {1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 26, 30, 33, 40, 64, 100, 200, 400, 1000}
        cuts |= {int(n * fraction) for fraction in (0.1, 0.25, 0.5, 0.75, 0.9, 0.99)} | {n - 2, n - 1}
        for cut in sorted(c for c in cuts if 0 < c < n):
            add(f"{label} truncated at {cut}/{n}", "truncated", 400, **_raw(data[:cut]))

    # Corrupted headers.
    sof = jpeg.index(b"\xff\xc0")
    for label, offset in (("height", sof + 5), ("width", sof + 7)):
        bad = bytearray(jpeg)
        bad[offset : offset + 2] = b"\0\0"
        add(f"jpeg SOF {label} 0", "corrupt", 400, **_raw(bytes(bad), "image/jpeg"))
    bad = bytearray(jpeg)
    bad[sof + 9] = 0
    add("jpeg SOF with 0 components", "corrupt", 400, **_raw(bytes(bad), "image/jpeg"))
    bad = bytearray(jpeg)
    bad[sof + 4] = 12
    add("jpeg SOF precision 12", "corrupt", 400, **_raw(bytes(bad), "image/jpeg"))
    add("jpeg segment length 1", "corrupt", 400, **_raw(after_soi(jpeg, b"\xff\xe2\x00\x01"), "image/jpeg"))
    add("jpeg segment longer than file", "corrupt", 400, **_raw(b"\xff\xd8\xff\xe2\xff\xff" + b"\0" * 100))
    add("jpeg EOI before frame", "corrupt", 400, **_raw(b"\xff\xd8\xff\xd9" + jpeg[2:]))
    sos = jpeg.index(b"\xff\xda")
    add(
        "jpeg SOS names a missing component",
        "corrupt",
        400,
        **_raw(jpeg[: sos + 5] + b"\x09" + jpeg[sos + 6 :]),
    )
    add("jpeg 100k fill bytes", "corrupt", 400, **_raw(b"\xff\xd8" + b"\xff" * 100_000))
    bad = bytearray(png)
    bad[29] ^= 0xFF
    add("png bad IHDR CRC", "corrupt", 400, **_raw(bytes(bad), "image/png"))
    idat = png.index(b"IDAT")
    idat_end = idat + 4 + int.from_bytes(png[idat - 4 : idat], "big")
    bad = bytearray(png)
    bad[idat_end] ^= 0xFF
    add("png bad IDAT CRC", "corrupt", 400, **_raw(bytes(bad), "image/png"))
    for label, offset, value in (("bit depth 3", 24, 3), ("colour type 5", 25, 5), ("interlace 7", 28, 7)):
        bad = bytearray(png)
        bad[offset] = value
        add(f"png IHDR {label}", "corrupt", 400, **_raw(bytes(bad), "image/png"))
    for label, width, height in (("width 0", 0, 200), ("width 2^31", 2**31, 200)):
        ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        add(f"png IHDR {label}", "corrupt", 400, **_raw(png[:8] + ihdr + png[33:]))
    add("png without IDAT", "corrupt", 400, **_raw(png[:33] + png_chunk(b"IEND", b"")))
    add("png zlib garbage", "corrupt", 400, **_raw(png[: idat + 4] + bytes(50) + png[idat + 54 :]))
    for label, offset, size in (
        ("RIFF size 0xFFFFFFF0", 4, 0xFFFFFFF0),
        ("RIFF size 4", 4, 4),
        ("VP8 chunk size 0xFFFFFFF0", 16, 0xFFFFFFF0),
    ):
        bad = bytearray(webp_lossy)
        bad[offset : offset + 4] = struct.pack("<I", size)
        add(f"webp {label}", "corrupt", 400, **_raw(bytes(bad), "image/webp"))
    bad = bytearray(webp_lossy)
    bad[16:20] = struct.pack("<I", 10)
    add("webp VP8 chunk size 10", "corrupt", 400, **_raw(bytes(bad), "image/webp"))
    bad = bytearray(webp_lossless)
    bad[16:20] = struct.pack("<I", 0xFFFFFFF0)
    add("webp VP8L chunk size 0xFFFFFFF0", "corrupt", 400, **_raw(bytes(bad), "image/webp"))
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + (3).to_bytes(3, "little") + (2).to_bytes(3, "little")
    lying = b"WEBP" + vp8x + webp_lossless[12:]
    add(
        "webp VP8X canvas smaller than frame",
        "corrupt",
        400,
        **_raw(b"RIFF" + struct.pack("<I", len(lying)) + lying),
    )
    frameless = b"WEBP" + vp8x
    add(
        "webp VP8X without a frame",
        "corrupt",
        400,
        **_raw(b"RIFF" + struct.pack("<I", len(frameless)) + frameless),
    )
    bad = bytearray(bmp)
    bad[14:18] = struct.pack("<I", 20)
    add("bmp unknown header size", "corrupt", 400, **_raw(bytes(bad), "image/bmp"))
    bad = bytearray(bmp)
    bad[28:30] = struct.pack("<H", 7)
    add("bmp 7 bits per pixel", "corrupt", 400, **_raw(bytes(bad), "image/bmp"))
    bad = bytearray(bmp)
    bad[10:14] = struct.pack("<I", 0xFFFFFF00)
    add("bmp pixel offset past end", "corrupt", 400, **_raw(bytes(bad), "image/bmp"))

    # Decompression bombs: the header alone must decide (413), however small the file.
    add("png declaring 50000x50000", "bomb", 413, **_raw(png_declaring(50_000, 50_000), "image/png"))
    add("jpeg declaring 50000x50000", "bomb", 413, **_raw(jpeg_declaring(50_000, 50_000), "image/jpeg"))
    add("jpeg declaring 65535x65535", "bomb", 413, **_raw(jpeg_declaring(65_535, 65_535)))
    add("webp declaring 16384x16384", "bomb", 413, **_raw(webp_lossless_declaring(16_384, 16_384)))
    add("png declaring (2^31-1)x1", "bomb", 413, **_raw(png_declaring(2**31 - 1, 1)))
    bad = bytearray(bmp)
    bad[18:26] = struct.pack("<ii", 50_000, 50_000)
    add("bmp declaring 50000x50000", "bomb", 413, **_raw(bytes(bad)))
    over = max_pixels + 1
    add(f"png declaring {over} px (limit + 1)", "bomb", 413, **_raw(png_declaring(over, 1)))
    add("bomb as base64 JSON", "bomb", 413, **_json({"image": _b64(png_declaring(50_000, 50_000))}))
    add("bomb in multipart", "bomb", 413, **_multipart("image", jpeg_declaring(50_000, 50_000)))
    side = int(max_pixels**0.5)
    flat = encode(".png", np.zeros((side, side, 3), np.uint8), cv2.IMWRITE_PNG_COMPRESSION, 9)
    # A real, fully decodable zlib bomb just under the pixel limit: ~60 KB → ~60 MB of pixels. Valid.
    add(f"png {side}x{side} all zero ({len(flat) // 1024} KB)", "bomb", 200, **_raw(flat, "image/png"))

    # Metadata: huge EXIF, many APP segments, EXIF pointing nowhere. All still valid images.
    exif = b"Exif\x00\x00" + tiff_ifd(1)
    add(
        "jpeg APP1 EXIF of 64 KB",
        "exif",
        200,
        **_raw(after_soi(jpeg, jpeg_segment(0xE1, exif + bytes(65_533 - 2 - len(exif)))), "image/jpeg"),
    )
    add(
        "jpeg EXIF IFD claiming 65535 entries",
        "exif",
        200,
        **_raw(after_soi(jpeg, jpeg_segment(0xE1, b"Exif\x00\x00" + tiff_ifd(0xFFFF))), "image/jpeg"),
    )
    add(
        "jpeg EXIF IFD offset past end",
        "exif",
        200,
        **_raw(after_soi(jpeg, jpeg_segment(0xE1, b"Exif\x00\x00" + tiff_ifd(1, 0x7FFFFFFF)))),
    )
    add(
        "jpeg 16 APP segments of 64 KB",
        "exif",
        200,
        **_raw(after_soi(jpeg, b"".join(jpeg_segment(0xE2 + i % 12, bytes(65_000)) for i in range(16)))),
    )
    add(
        "jpeg 1000 small APP segments",
        "exif",
        200,
        **_raw(after_soi(jpeg, b"".join(jpeg_segment(0xE2 + i % 12, b"x" * 8) for i in range(1000)))),
    )
    # The header walk is budgeted (4096 markers) so a crafted file cannot pin a CPU: refused as corrupt.
    add(
        "jpeg 5000 empty APP segments",
        "exif",
        400,
        **_raw(after_soi(jpeg, b"".join(jpeg_segment(0xE2, b"") for _ in range(5000)))),
    )

    # Extreme shapes.
    for ext in (".jpg", ".png", ".webp", ".bmp"):
        add(f"1x1 {ext[1:]}", "shape", 200, **_raw(encode(ext, np.full((1, 1, 3), 128, np.uint8))))
    add("3x100000 png (tall)", "shape", 200, **_raw(encode(".png", np.zeros((100_000, 3, 3), np.uint8))))
    add("100000x3 png (wide)", "shape", 200, **_raw(encode(".png", np.zeros((3, 100_000, 3), np.uint8))))
    add("65500x1 jpeg", "shape", 200, **_raw(encode(".jpg", np.zeros((1, 65_500, 3), np.uint8))))
    add("1x16383 webp", "shape", 200, **_raw(encode(".webp", np.zeros((16_383, 1, 3), np.uint8))))

    # Unusual but valid encodings → 200.
    add("16-bit RGB png", "valid", 200, **_raw(encode(".png", image.astype(np.uint16) * 257)))
    add("16-bit grey png", "valid", 200, **_raw(encode(".png", np.full((20, 30), 40_000, np.uint16))))
    add("RGBA png", "valid", 200, **_raw(encode(".png", cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))))
    add("grey jpeg", "valid", 200, **_raw(encode(".jpg", cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))))
    add("CMYK jpeg", "valid", 200, **_raw(cmyk_jpeg((200, 100, 50, 255)), "image/jpeg"))
    add("progressive jpeg", "valid", 200, **_raw(encode(".jpg", image, cv2.IMWRITE_JPEG_PROGRESSIVE, 1)))
    add("PNG bytes sent as image/jpeg", "valid", 200, **_raw(png, "image/jpeg"))
    add("content-type with parameters and capitals", "valid", 200, **_raw(jpeg, "IMAGE/JPEG; q=0.9"))
    add("data: URL in JSON", "valid", 200, **_json({"image": "data:image/jpeg;base64," + _b64(jpeg)}))
    apng = animation(".png")
    if apng is not None:
        add("animated PNG (first frame)", "valid", 200, **_raw(apng, "image/png"))

    # Types we do not take → 415.
    add("animated GIF", "unsupported", 415, **_raw(animated_gif(), "image/gif"))
    add("animated GIF as octet-stream", "unsupported", 415, **_raw(animated_gif()))
    animated_webp = animation(".webp")
    if animated_webp is not None:
        add("animated WebP", "unsupported", 415, **_raw(animated_webp, "image/webp"))
    flagged = b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\x02" + bytes(9) + webp_lossless[12:]
    add(
        "WebP with the animation flag",
        "unsupported",
        415,
        **_raw(b"RIFF" + struct.pack("<I", len(flagged)) + flagged),
    )
    add("TIFF", "unsupported", 415, **_raw(encode(".tiff", image), "image/tiff"))
    add("HEIC brand", "unsupported", 415, **_raw(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"))
    add("PDF", "unsupported", 415, **_raw(b"%PDF-1.7\n" + bytes(100)))
    add("SVG", "unsupported", 415, **_raw(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"))
    add("WAV in RIFF", "unsupported", 415, **_raw(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(24)))
    add("content-type text/plain", "content-type", 415, **_raw(jpeg, "text/plain"))
    add("content-type application/xml", "content-type", 415, **_raw(jpeg, "application/xml"))
    add("no content-type", "content-type", 415, content=jpeg)
    add("form-urlencoded", "content-type", 415, **_raw(b"image=abc", "application/x-www-form-urlencoded"))
    add("batch as raw body", "content-type", 415, path="/detect/batch", **_raw(jpeg, "image/jpeg"))
    add("batch as JSON", "content-type", 415, path="/detect/batch", **_json({"images": [_b64(jpeg)]}))

    # Multipart shapes.
    add("multipart without the image field", "multipart", 422, **_multipart("photo", jpeg))
    add(
        "multipart image as a text field",
        "multipart",
        422,
        files=[("other", ("x", b"x", "text/plain"))],
        data={"image": "not a file"},
    )
    add("multipart without boundary", "multipart", 400, **_raw(b"--x\r\n\r\n", "multipart/form-data"))
    add("multipart garbage", "multipart", 400, **_raw(b"garbage", "multipart/form-data; boundary=XYZ"))
    add(
        "multipart two image files",
        "multipart",
        422,
        files=[("image", ("a.jpg", jpeg, "image/jpeg")), ("image", ("b.jpg", jpeg, "image/jpeg"))],
    )
    add(
        "multipart 20 text fields",
        "multipart",
        422,
        files=[("image", ("a.jpg", jpeg, "image/jpeg"))],
        data={f"f{i}": "x" for i in range(20)},
    )
    add("batch without images field", "multipart", 422, path="/detect/batch", **_multipart("image", jpeg))
    add(
        f"batch of {max_batch_images + 1} files",
        "multipart",
        422,
        path="/detect/batch",
        files=[("images", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(max_batch_images + 1)],
    )
    add(
        "batch good + bad + bomb",
        "multipart",
        200,
        path="/detect/batch",
        files=[
            ("images", ("a.jpg", jpeg, "image/jpeg")),
            ("images", ("b.bin", b"not an image", "application/octet-stream")),
            ("images", ("c.png", png_declaring(50_000, 50_000), "image/png")),
        ],
    )

    # JSON bodies.
    add("JSON invalid base64", "json", 400, **_json({"image": "%%% not base64 %%%"}))
    add("JSON base64 bad padding", "json", 400, **_json({"image": _b64(jpeg)[:-3]}))
    add("JSON base64 with line breaks", "json", 400, **_json({"image": base64.encodebytes(jpeg).decode()}))
    for label, document in (
        ("a list", [_b64(jpeg)]),
        ("a number", 42),
        ("a string", _b64(jpeg)),
        ("null", None),
        ("image a number", {"image": 42}),
        ("image a list", {"image": [_b64(jpeg)]}),
        ("no image", {"model": "short"}),
        ("unknown key", {"image": _b64(jpeg), "colour": "red"}),
        ("model a list", {"image": _b64(jpeg), "model": ["short"]}),
        ("model an object", {"image": _b64(jpeg), "model": {"name": "short"}}),
        ("model a number", {"image": _b64(jpeg), "model": 1}),
        ("suppression a list", {"image": _b64(jpeg), "suppression": ["nms"]}),
        ("preprocess an object", {"image": _b64(jpeg), "preprocess": {}}),
        ("min_score a string", {"image": _b64(jpeg), "min_score": "0.5"}),
        ("min_score 2", {"image": _b64(jpeg), "min_score": 2}),
        ("min_score a list", {"image": _b64(jpeg), "min_score": [0.5]}),
        ("max_faces 0", {"image": _b64(jpeg), "max_faces": 0}),
        ("max_faces 1.5", {"image": _b64(jpeg), "max_faces": 1.5}),
        ("max_faces true", {"image": _b64(jpeg), "max_faces": True}),
        ("model an 100 KB string", {"image": _b64(jpeg), "model": "x" * 100_000}),
    ):
        add(f"JSON {label}", "json", 422, **_json(document))
    add("JSON not JSON", "json", 422, **_raw(b"{not json", "application/json"))
    add("JSON nested 100000 deep", "json", 422, **_raw(b"[" * 100_000 + b"]" * 100_000, "application/json"))
    add(
        "JSON with huge number",
        "json",
        422,
        **_raw(b'{"image": "", "min_score": 1e99999}', "application/json"),
    )
    add("JSON truncated", "json", 422, **_raw(orjson.dumps({"image": _b64(jpeg)})[:-10], "application/json"))
    repeated = b'{"image": "%s", "model": "full", "model": "short"}' % _b64(jpeg).encode()
    add("JSON option repeated", "json", 422, **_raw(repeated, "application/json"))
    many_members = {"image": "", **{f"k{i}": 0 for i in range(100_000)}}
    add("JSON of 100 000 members", "json", 422, **_json(many_members))
    add("JSON option a 100 000-item list", "json", 422, **_json({"image": "", "min_score": [0] * 100_000}))
    add("JSON as a data URL", "json", 200, **_json({"image": "data:image/jpeg;base64," + _b64(jpeg)}))
    gzip_headers = {"content-type": "image/jpeg", "content-encoding": "gzip"}
    gzipped = {"content": gzip.compress(jpeg), "headers": gzip_headers}
    add("raw gzip content coding", "type", 415, **gzipped)
    br = {"content": jpeg, "headers": {"content-type": "image/jpeg", "content-encoding": "br"}}
    add("raw br content coding, body not encoded", "type", 415, **br)
    add("trailing slash (no redirect)", "type", 404, path="/detect/", **_raw(jpeg, "image/jpeg"))

    # Query options out of range (on both endpoints).
    for query in (
        "model=huge",
        "model=",
        "min_score=inf",
        "min_score=1e400",
        "min_score=abc",
        "max_faces=-1",
        "max_faces=1001",
        "max_faces=99999999999999999999999",
        "max_faces=1.5",
        "suppression=SOFT",
        "preprocess=",
    ):
        add(f"query {query}", "query", 422, query=query, **_raw(jpeg, "image/jpeg"))
    add(
        "batch query model=huge",
        "query",
        422,
        path="/detect/batch",
        query="model=huge",
        **_multipart("images", jpeg),
    )
    add("query option repeated", "query", 422, query="model=full&model=short", **_raw(jpeg))
    add("query unknown key repeated (ignored)", "query", 200, query="cache=1&cache=2", **_raw(jpeg))
    add("query unknown option (ignored)", "query", 200, query="colour=red", **_raw(jpeg))

    # Body size limits.
    add("raw body limit + 1 (declared)", "size", 413, **_raw(bytes(max_body_bytes + 1), "image/jpeg"))
    add("raw body exactly at the limit", "size", 400, **_raw(rng.bytes(max_body_bytes)))
    add("multipart over the limit", "size", 413, **_multipart("image", bytes(max_body_bytes + 1)))
    add("JSON over the limit", "size", 413, **_json({"image": "A" * (max_body_bytes + 4)}))
    add(
        "batch over the limit",
        "size",
        413,
        path="/detect/batch",
        files=[("images", (f"{i}.jpg", bytes(max_body_bytes // 2), "image/jpeg")) for i in range(3)],
    )
    if include_slow:
        # Chunked (no Content-Length), then trickled at 4 KB/s: the 413 must come as the limit is
        # passed, not when the client gives up. The client would send 64 KB (16 s) past the limit.
        trickle = SlowBody(
            total=max_body_bytes + 64 * 1024, limit=max_body_bytes, prefix=max_body_bytes - 8 * 1024
        )
        add(
            "chunked body trickled past the limit",
            "size",
            413,
            headers={"content-type": "image/jpeg"},
            slow=trickle,
        )
        part = b'--XYZ\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        add(
            "chunked multipart body trickled past the limit",
            "size",
            413,
            headers={"content-type": "multipart/form-data; boundary=XYZ"},
            slow=SlowBody(total=trickle.total, limit=trickle.limit, head=part, prefix=trickle.prefix),
        )
        add(
            "chunked JSON-typed body trickled past the limit",
            "size",
            413,
            headers={"content-type": "application/json"},
            slow=trickle,
        )
        # A slow but small upload of garbage is answered when it ends, like any other.
        add(
            "chunked small body trickled",
            "size",
            400,
            headers={"content-type": "image/jpeg"},
            slow=SlowBody(total=16 * 1024, limit=max_body_bytes, chunk=4096, interval_s=0.2),
        )
    return cases


def good_requests() -> list[Case]:
    """Well-formed requests on real photos, both models and the batch endpoint (soak, warm-up)."""
    names = ("astronaut.jpg", "grace_hopper.jpg", "voc_2008_001322_three_faces.jpg", "grace_hopper_alpha.png")
    cases = [
        Case(f"{name} {model}", "good", 200, query=f"model={model}", **_raw(photo(name), "image/jpeg"))
        for name in names
        for model in ("short", "full")
    ]
    cases.append(
        Case(
            "12 MP photo fast",
            "good",
            200,
            query="preprocess=fast",
            **_raw(photo("voc_2008_002506_12mp_4000x3000.jpg")),
        )
    )
    cases.append(
        Case(
            "batch of 3 full",
            "good",
            200,
            path="/detect/batch",
            query="model=full",
            files=[("images", (name, photo(name), "image/jpeg")) for name in names[:3]],
        )
    )
    cases.append(
        Case(
            "JSON base64 nms",
            "good",
            200,
            **_json({"image": _b64(photo("astronaut.jpg")), "suppression": "nms"}),
        )
    )
    return cases


def hostile_requests(max_pixels: int = 20_000_000) -> list[Case]:
    """Cheap, legal-looking requests that used to buy unbounded work or stall other clients (the soak's
    hostile share), each with the status a priced service gives it at low concurrency."""
    three_faces = photo("voc_2008_001322_three_faces.jpg")
    side = int((max_pixels * 0.8) ** 0.5)  # a large image within the pixel limit
    boundary = "hostile-boundary"
    cut_batch = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="a.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + three_faces  # no closing boundary
    return [
        Case(
            "every anchor a candidate (min_score 1e-9, full, nms)",
            "hostile",
            200,
            **_json({"image": _b64(three_faces), "min_score": 1e-9, "model": "full", "suppression": "nms"}),
        ),
        Case(f"flat PNG {side}x{side}", "hostile", 200, **_raw(flat_png(side), "image/png")),
        Case(
            "JPEG of 4000 empty progressive scans",
            "hostile",
            422,
            **_raw(scan_bomb(4000, side), "image/jpeg"),
        ),
        Case(
            "multipart batch without its closing boundary",
            "hostile",
            400,
            path="/detect/batch",
            content=cut_batch,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        ),
        Case(
            "64 KiB header value",
            "hostile",
            431,
            content=three_faces,
            headers={"content-type": "image/jpeg", "x-padding": "a" * 65536},
        ),
        Case("16 KiB URL", "hostile", 414, query="pad=" + "a" * 16384, **_raw(three_faces, "image/jpeg")),
    ]
