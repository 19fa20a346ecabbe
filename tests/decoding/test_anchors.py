"""SSD anchors: counts, first/last centres and the per-cell layout of MediaPipe's SsdAnchorsCalculator."""

from __future__ import annotations

import numpy as np
import pytest

from service.decoding.anchors import generate_anchors
from service.specs import BACK, FULL, SHORT, AnchorOptions


@pytest.mark.parametrize("spec", [SHORT, FULL, BACK], ids=lambda s: s.name)
def test_count_matches_the_model_output(spec) -> None:
    anchors = generate_anchors(spec.anchors)
    assert anchors.shape == (spec.decoder.num_boxes, 2)
    assert anchors.dtype == np.float32


def test_short_first_and_last_centres() -> None:
    a = generate_anchors(SHORT.anchors)
    assert a[0].tolist() == a[1].tolist() == [0.03125, 0.03125]  # (0 + 0.5) / 16, two per cell
    assert a[2].tolist() == [0.09375, 0.03125]  # x moves first
    assert a[511].tolist() == [0.96875, 0.96875]  # last of the 16x16 grid
    assert a[512].tolist() == [0.0625, 0.0625]  # (0 + 0.5) / 8: the merged stride-16 layers
    assert a[-1].tolist() == [0.9375, 0.9375]


def test_full_first_and_last_centres() -> None:
    a = generate_anchors(FULL.anchors)
    np.testing.assert_allclose(a[0], [0.5 / 48, 0.5 / 48], rtol=1e-7)
    np.testing.assert_allclose(a[1], [1.5 / 48, 0.5 / 48], rtol=1e-7)
    np.testing.assert_allclose(a[-1], [47.5 / 48, 47.5 / 48], rtol=1e-7)


def _check_grid(block: np.ndarray, size: int, per_cell: int) -> None:
    grid = block.reshape(size, size, per_cell, 2)  # y, x, anchor, (x, y)
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    assert (grid == grid[:, :, :1]).all()  # every anchor of a cell sits at the cell centre
    np.testing.assert_array_equal(grid[0, :, 0, 0], centres)
    np.testing.assert_array_equal(grid[:, 0, 0, 1], centres)
    assert (grid[..., 0] == grid[:1, :, :, 0]).all()  # x constant down a column
    assert (grid[..., 1] == grid[:, :1, :, 1]).all()  # y constant along a row


def test_short_layout_is_16x16x2_then_8x8x6() -> None:
    a = generate_anchors(SHORT.anchors)
    _check_grid(a[:512], 16, 2)
    _check_grid(a[512:], 8, 6)


def test_full_layout_is_48x48x1() -> None:
    _check_grid(generate_anchors(FULL.anchors), 48, 1)


def test_back_layout_is_16x16x2_then_8x8x6() -> None:
    # face_detection_back_desktop_live.pbtxt: 256x256, strides 16, 32, 32, 32 -> 16x16x2 + 8x8x6, the short
    # model's centres at twice the input size.
    a = generate_anchors(BACK.anchors)
    _check_grid(a[:512], 16, 2)
    _check_grid(a[512:], 8, 6)
    np.testing.assert_array_equal(a, generate_anchors(SHORT.anchors))


def test_cached_and_read_only() -> None:
    a = generate_anchors(SHORT.anchors)
    assert generate_anchors(SHORT.anchors) is a
    with pytest.raises(ValueError):
        a[0, 0] = 1.0


def test_rejects_variable_anchor_size() -> None:
    with pytest.raises(ValueError, match="fixed_anchor_size"):
        generate_anchors(AnchorOptions(input_size=128, strides=(8,), fixed_anchor_size=False))
