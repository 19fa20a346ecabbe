"""Hand-built image bytes that OpenCV cannot write, shared by the imaging tests and the bad-input corpus."""

from __future__ import annotations

import struct


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


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
