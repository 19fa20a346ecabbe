"""Imaging: request bytes → upright RGB pixels → the model's letterboxed uint8 input (ARCHITECTURE.md §1).

    tensor, lb = preprocess(data, 128, Preprocess.EXACT, max_pixels=40_000_000)   # all of the below

    probe.py      header only: format, stored size, EXIF orientation, JPEG scans
    formats.py    the image types we recognise but do not take (415)
    decode.py     `inspect`: the header against the cost limits (pixels, JPEG scans); bytes → upright
                  RGB (EXIF, DCT-scaled JPEG decode)
    letterbox.py  upright RGB → the square model input, and its inverse for results (`Letterbox`)

Callers import the steps from their modules (`from service.imaging.decode import decode`); this package
holds only their composition.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

# The submodules, not their same-named functions: the package attributes stay the modules.
from service.imaging import decode, letterbox, probe

__all__ = ["Preprocess", "preprocess"]


class Preprocess(StrEnum):
    """How an image becomes the model input (ARCHITECTURE.md §6).

    EXACT: full decode, MediaPipe's pixels exactly (parity tests pin this).
    FAST: JPEG decoded at the coarsest DCT scale that keeps the long side ≥ 2× the input (far cheaper
    on large photos: loadtest/RESULTS.md #2); both then take MediaPipe's bilinear warp to the input.
    """

    EXACT = "exact"
    FAST = "fast"


def preprocess(
    data: bytes | bytearray | memoryview,
    size: int,
    mode: Preprocess,
    *,
    max_pixels: int,
    max_jpeg_scans: int | None = None,
    info: probe.ImageInfo | None = None,
) -> tuple[np.ndarray, letterbox.Letterbox]:
    """Bytes → letterboxed model input. EXACT decodes every pixel; FAST decodes a JPEG at the coarsest
    DCT scale that keeps its long side ≥ 2× the input (no worse in AP on tests/data/eval for either
    model: README "Accuracy and stability"). Both then take MediaPipe's warp. The limits and `info`
    are `decode.decode`'s."""
    min_long_side = 2 * size if Preprocess(mode) is Preprocess.FAST else None
    image = decode.decode(
        data, max_pixels=max_pixels, min_long_side=min_long_side, max_jpeg_scans=max_jpeg_scans, info=info
    )
    return letterbox.letterbox(image, size)
