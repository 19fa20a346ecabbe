"""Plain suppression (MediaPipe's DEFAULT), and what both suppressions share: IoU and the score order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service.decoding.blending import blend
from service.decoding.detections import Detections, Overlaps, iou, score_order
from service.decoding.nms import nms


def dets(boxes: list[list[float]], scores: list[float]) -> Detections:
    b = np.array(boxes, np.float32)
    return Detections(np.array(scores, np.float32), b, np.repeat(b[:, None, :2], 6, axis=1))


# -- IoU ----------------------------------------------------------------------------------------------


def test_iou_values() -> None:
    box = np.array([0, 0, 2, 2], np.float32)
    others = np.array(
        [[0, 0, 2, 2], [1, 0, 3, 2], [2, 0, 4, 2], [3, 3, 4, 4], [0, 0, 1, 1], [1, 1, 1, 1]], np.float32
    )
    np.testing.assert_allclose(iou(box, others), [1.0, 2 / 6, 0.0, 0.0, 0.25, 0.0], rtol=1e-6)
    assert iou(box, others).dtype == np.float32


def test_iou_of_degenerate_boxes_is_zero_without_warnings() -> None:
    point = np.array([0.5, 0.5, 0.5, 0.5], np.float32)
    inverted = np.array([[1, 1, 0, 0]], np.float32)
    assert iou(point, point[None]).tolist() == [0.0]  # zero union: 0, as MediaPipe's `normalization > 0`
    assert iou(np.array([0, 0, 1, 1], np.float32), inverted).tolist() == [0.0]
    assert iou(np.array([np.nan, 0, 1, 1], np.float32), point[None]).tolist() == [0.0]


# -- score order --------------------------------------------------------------------------------------


def test_distinct_scores_sort_descending() -> None:
    assert score_order(np.array([0.5, 0.9, 0.7], np.float32)).tolist() == [1, 2, 0]


def test_ties_up_to_16_keep_input_order() -> None:
    assert score_order(np.full(16, 0.75, np.float32)).tolist() == list(range(16))


def test_ties_over_16_follow_mediapipe() -> None:
    # Orders read back from mediapipe 0.10.21's NonMaxSuppressionCalculator (DEFAULT, disjoint boxes).
    assert score_order(np.full(17, 0.75, np.float32)).tolist() == [
        8, 16, 15, 14, 13, 12, 11, 10, 9, 0, 7, 6, 5, 4, 3, 2, 1,
    ]  # fmt: skip
    # A quicksort-adversarial input with tied pairs: exercises std::sort's heapsort fallback.
    levels = [
        0, 19, 1, 18, 2, 17, 3, 16, 1, 15, 3, 14, 0, 13, 4, 12, 2, 11, 9, 10,
        19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 4, 6, 5, 7, 6, 8, 7, 9, 8, 5,
    ]  # fmt: skip
    expected = [
        1, 20, 3, 21, 5, 22, 7, 23, 9, 24, 11, 25, 13, 26, 15, 27, 17, 28, 19, 29,
        18, 37, 35, 38, 36, 33, 31, 34, 39, 32, 14, 30, 6, 10, 16, 4, 2, 8, 0, 12,
    ]  # fmt: skip
    scores = np.float32(0.5) + np.array(levels, np.float32) / np.float32(40)
    assert score_order(scores).tolist() == expected


@settings(max_examples=50, deadline=None)
@given(arrays(np.float32, st.integers(0, 80), elements=st.sampled_from([0.5, 0.7, 0.9])))
def test_score_order_is_a_descending_permutation(scores: np.ndarray) -> None:
    order = score_order(scores)
    assert sorted(order.tolist()) == list(range(len(scores)))
    assert (np.diff(scores[order]) <= 0).all()


# -- nms ----------------------------------------------------------------------------------------------


def test_nms_keeps_the_best_of_each_cluster_unchanged() -> None:
    d = dets([[0, 0, 1, 1], [0.1, 0, 1.1, 1], [5, 5, 6, 6], [0.2, 0, 1.2, 1]], [0.9, 0.6, 0.8, 0.95])
    out = nms(d)
    assert out.scores.tolist() == [np.float32(0.95), np.float32(0.8)]
    np.testing.assert_array_equal(out.boxes, d.boxes[[3, 2]])
    np.testing.assert_array_equal(out.keypoints, d.keypoints[[3, 2]])


def test_nms_threshold_is_strict_and_in_float32() -> None:
    assert len(nms(dets([[0, 0, 10, 10], [0, 0, 10, 3]], [0.9, 0.8]), 0.3)) == 2  # IoU == 0.3f
    assert len(nms(dets([[0, 0, 10, 10], [0, 0, 10, 3.001]], [0.9, 0.8]), 0.3)) == 1


def test_nms_suppresses_only_by_kept_detections() -> None:
    # B is suppressed by A, so C (which only B overlaps) survives.
    d = dets([[0, 0, 1, 1], [0.5, 0, 1.5, 1], [1, 0, 2, 1]], [0.9, 0.8, 0.7])
    assert nms(d).scores.tolist() == [np.float32(0.9), np.float32(0.7)]


def test_nms_max_detections() -> None:
    d = dets([[k * 3, 0, k * 3 + 1, 1] for k in range(5)], [0.6, 0.9, 0.7, 0.95, 0.8])
    assert nms(d, max_detections=2).scores.tolist() == [np.float32(0.95), np.float32(0.9)]
    assert len(nms(d, max_detections=None)) == 5
    with pytest.raises(ValueError):
        nms(d, max_detections=0)


def test_nms_does_not_stop_at_a_zero_area_detection() -> None:
    # Unlike WEIGHTED's guard, DEFAULT just never suppresses with it (checked against mediapipe 0.10.21).
    d = dets([[0.2, 0.2, 0.2, 0.5], [0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]], [0.9, 0.8, 0.7])
    assert len(nms(d)) == 3
    assert len(blend(d)) == 1


def test_empty() -> None:
    out = nms(Detections.empty())
    assert len(out) == 0 and out.keypoints.shape == (0, 6, 2)


# -- nms vs blend -------------------------------------------------------------------------------------


@st.composite
def detections(draw: st.DrawFn) -> Detections:
    n = draw(st.integers(0, 30))
    xy = draw(arrays(np.float32, (n, 2), elements=st.floats(0.0, 1.0, width=32)))
    wh = draw(arrays(np.float32, (n, 2), elements=st.floats(0.015625, 0.5, width=32)))
    scores = draw(arrays(np.float32, (n,), elements=st.sampled_from([0.5, 0.6, 0.75, 0.9, 1.0])))
    keypoints = draw(arrays(np.float32, (n, 6, 2), elements=st.floats(0.0, 1.0, width=32)))
    return Detections(scores, np.concatenate([xy, xy + wh], axis=1), keypoints)


@settings(max_examples=60, deadline=None)
@given(detections(), st.floats(0.0, 0.9))
def test_nms_and_blend_pick_the_same_heads(d: Detections, threshold: float) -> None:
    # Blend's heads are exactly the detections plain NMS keeps; NMS returns them as they are, blend
    # returns each group's weighted mean under the head's score.
    kept, blended = nms(d, threshold), blend(d, threshold)
    assert kept.scores.tolist() == blended.scores.tolist()
    assert len(kept) <= len(d)
    for i in range(len(kept)):
        assert (iou(kept.boxes[i], np.delete(kept.boxes, i, axis=0)) <= np.float32(threshold)).all()
    rows = {tuple(b) for b in d.boxes.tolist()}
    assert all(tuple(b) in rows for b in kept.boxes.tolist())


def test_row_by_row_overlaps_equal_the_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    # Many candidates (a very low min_score) switch Overlaps from one matrix to rows; same answers.
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 1, (300, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(0.02, 0.3, (300, 2)).astype(np.float32)], axis=1)
    d = Detections(
        rng.choice(np.float32([0.5, 0.7, 0.9]), 300), boxes, rng.uniform(0, 1, (300, 6, 2)).astype(np.float32)
    )
    monkeypatch.setattr(Overlaps, "MATRIX_MAX", 1000)
    by_matrix_blend, by_matrix_nms = blend(d), nms(d)
    monkeypatch.setattr(Overlaps, "MATRIX_MAX", 0)
    by_rows_blend, by_rows_nms = blend(d), nms(d)
    np.testing.assert_array_equal(by_rows_blend.boxes, by_matrix_blend.boxes)
    np.testing.assert_array_equal(by_rows_blend.keypoints, by_matrix_blend.keypoints)
    np.testing.assert_array_equal(by_rows_nms.boxes, by_matrix_nms.boxes)
