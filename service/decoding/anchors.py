"""SSD anchor centres, as MediaPipe's `mediapipe/calculators/tflite/ssd_anchors_calculator.cc`.

Only the branch BlazeFace uses: strides given (no explicit feature-map sizes), no multiscale generation,
no `reduce_boxes_in_lowest_layer`, and `fixed_anchor_size` (every anchor is 1 x 1), so an anchor is just
its centre. Consecutive layers with the same stride share one grid: their anchors are interleaved per
cell, which is why the short-range model has 16x16x2 + 8x8x6 = 896 anchors and not four grids.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from service.specs import AnchorOptions


@lru_cache(maxsize=8)
def generate_anchors(opts: AnchorOptions) -> np.ndarray:
    """Anchor centres (A, 2) float32, `x, y` in [0, 1], in the model's output order (read-only: cached).

    >>> from service.specs import SHORT
    >>> generate_anchors(SHORT.anchors).shape
    (896, 2)
    """
    if not opts.fixed_anchor_size:
        # Without it the decoder would need per-anchor w/h; no BlazeFace graph uses that.
        raise ValueError("only fixed_anchor_size=True is supported")
    if not opts.strides or any(s <= 0 for s in opts.strides):
        raise ValueError(f"strides must be positive, got {opts.strides}")

    per_layer = len(opts.aspect_ratios) + (1 if opts.interpolated_scale_aspect_ratio > 0.0 else 0)
    offset = np.float32(opts.anchor_offset)
    grids: list[np.ndarray] = []
    layer = 0
    while layer < len(opts.strides):
        stride = opts.strides[layer]
        same = layer
        while same < len(opts.strides) and opts.strides[same] == stride:
            same += 1
        anchors_per_cell = per_layer * (same - layer)
        # float32 like the calculator (`std::ceil(1.0f * size / stride)`, `(x + offset) * 1.0f / w`).
        size = math.ceil(np.float32(opts.input_size) / np.float32(stride))
        centres = (np.arange(size, dtype=np.float32) + offset) / np.float32(size)
        ys, xs = np.meshgrid(centres, centres, indexing="ij")  # row-major: y outer, x inner
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        grids.append(np.repeat(cells, anchors_per_cell, axis=0))
        layer = same

    anchors = np.concatenate(grids).astype(np.float32, copy=False)
    anchors.flags.writeable = False
    return anchors
