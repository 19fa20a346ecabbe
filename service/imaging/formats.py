"""Known-but-unsupported formats: image (and container) types we recognise and refuse with 415.

    refuse_unsupported(buf)   # raises UnsupportedMediaType for, e.g., a GIF; returns None otherwise

`probe` calls it once the formats we decode (JPEG, PNG, WebP, BMP) have not matched, so a recognised
type gets 415 rather than 400, and its OpenCV decoder is never reached with user bytes. Recognised:
RIFF containers other than WebP, ISO BMFF (HEIF/AVIF), GIF, TIFF/BigTIFF, JPEG 2000/XL, PSD, PDF,
OpenEXR, Radiance HDR, XML/SVG, PNM/PFM, ICO/CUR and TGA. TGA has no magic number: it is recognised by
its TGA 2.0 footer ("TRUEVISION-XFILE.\\0" in the last 18 bytes) or, for older files, by a header whose
every field holds one of the values the format allows (checked last, so it only ever turns a 400 into
a 415).
"""

from __future__ import annotations

from service.errors import UnsupportedMediaType

__all__ = ["SUPPORTED", "refuse_unsupported"]

SUPPORTED = "send JPEG, PNG, WebP or BMP"  # the hint every 415 (and the probe's last 400) ends with

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
    (b"#?RGBE", "Radiance HDR"),
    (b"<?xml", "XML/SVG"),
    (b"<svg", "SVG"),
)
# ICONDIR: reserved 0, then type 1 (icon) or 2 (cursor); a 16-bit image count of at least 1 follows,
# which tells a cursor from the commonest TGA (no ID, no colour map, type 2: 00 00 02 00, then zeros).
_ICON_MAGIC = {b"\x00\x00\x01\x00": "ICO", b"\x00\x00\x02\x00": "CUR"}
_TGA_FOOTER = b"TRUEVISION-XFILE.\x00"
_TGA_COLOUR_MAP = {1: 1, 2: 0, 3: 0, 9: 1, 10: 0, 11: 0}  # image type → the colour-map type it needs
_TGA_DEPTHS = (8, 15, 16, 24, 32)


def _is_tga(buf: memoryview) -> bool:
    """A TGA 2.0 footer, or an 18-byte header whose every field is one the format allows."""
    if bytes(buf[-18:]) == _TGA_FOOTER:
        return True
    if len(buf) < 18:
        return False
    header = bytes(buf[:18])
    colour_map = _TGA_COLOUR_MAP.get(header[2])
    if colour_map is None or header[1] != colour_map or header[16] not in _TGA_DEPTHS or header[17] & 0xC0:
        return False
    # The colour-map fields: an entry size where there is a map, all zero where there is none.
    if (header[7] not in _TGA_DEPTHS) if colour_map else header[3:8] != bytes(5):
        return False
    return int.from_bytes(header[12:14], "little") > 0 and int.from_bytes(header[14:16], "little") > 0


def refuse_unsupported(buf: memoryview) -> None:
    """Raise UnsupportedMediaType if `buf` (a non-empty byte view) is a type we recognise but do not
    decode; return None if it is none we know (the caller's 400)."""
    head = bytes(buf[:16])
    if head.startswith(b"RIFF") and len(head) >= 12:
        raise UnsupportedMediaType(f"RIFF {head[8:12]!r} is not an image type we decode; {SUPPORTED}")
    if head[4:8] == b"ftyp":  # ISO BMFF: HEIC, HEIF, AVIF (or a video)
        brand = head[8:12].decode("ascii", "replace")
        raise UnsupportedMediaType(f"ISO-BMFF ({brand!r}: HEIF/AVIF) is not supported; {SUPPORTED}")
    for magic, name in _UNSUPPORTED_MAGIC:
        if head.startswith(magic):
            raise UnsupportedMediaType(f"{name} is not supported; {SUPPORTED}")
    if len(head) >= 3 and head[0] == ord("P") and head[1] in b"1234567Ff" and head[2] in b" \t\r\n":
        raise UnsupportedMediaType(f"{'PFM' if head[1] in b'Ff' else 'PNM'} is not supported; {SUPPORTED}")
    if head[:4] in _ICON_MAGIC and int.from_bytes(head[4:6], "little") > 0:
        raise UnsupportedMediaType(f"{_ICON_MAGIC[head[:4]]} is not supported; {SUPPORTED}")
    if _is_tga(buf):
        raise UnsupportedMediaType(f"TGA is not supported; {SUPPORTED}")
