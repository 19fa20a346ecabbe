"""Weighted suppression: MediaPipe's WEIGHTED NonMaxSuppressionCalculator (ARCHITECTURE.md §1)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from service.decoding.blending import blend
from service.decoding.detections import Detections, iou


def dets(boxes: list[list[float]], scores: list[float], keypoints: np.ndarray | None = None) -> Detections:
    b = np.array(boxes, np.float32)
    if keypoints is None:
        # keypoint k of detection i at (xmin + k, ymin - k): weighted means are easy to state
        keypoints = b[:, None, :2] + np.array([[k, -k] for k in range(6)], np.float32)
    return Detections(np.array(scores, np.float32), b, keypoints.astype(np.float32))


def test_group_becomes_score_weighted_mean_with_head_score() -> None:
    d = dets(
        [[0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 1.1, 1.0], [5.0, 5.0, 6.0, 6.0], [0.2, 0.0, 1.2, 1.0]],
        [0.9, 0.6, 0.8, 0.3],
    )
    out = blend(d)

    assert out.scores.tolist() == [np.float32(0.9), np.float32(0.8)]  # head's score, not the mean
    # group of the 0.9 head: IoU 0.82 and 0.67 with it; weights 0.9, 0.6, 0.3
    xmin = (0.9 * 0.0 + 0.6 * 0.1 + 0.3 * 0.2) / 1.8
    np.testing.assert_allclose(out.boxes[0], [xmin, 0.0, xmin + 1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out.keypoints[0, :, 0], xmin + np.arange(6), atol=1e-6)
    np.testing.assert_allclose(out.keypoints[0, :, 1], -np.arange(6), atol=1e-6)
    # the disjoint one is its own group of one: unchanged
    np.testing.assert_array_equal(out.boxes[1], d.boxes[2])
    np.testing.assert_array_equal(out.keypoints[1], d.keypoints[2])


def test_iou_exactly_threshold_is_not_grouped() -> None:
    # inter 30, union 100 + 30 - 30: IoU is the float32 nearest 0.3, i.e. 0.3f, and MediaPipe's test is
    # `0.3f > 0.3f` (a float64 0.3 would group them).
    d = dets([[0, 0, 10, 10], [0, 0, 10, 3]], [0.9, 0.8])
    assert iou(d.boxes[0], d.boxes[1:])[0] == np.float32(0.3)
    assert len(blend(d, 0.3)) == 2
    just_over = dets([[0, 0, 10, 10], [0, 0, 10, 3.001]], [0.9, 0.8])
    assert len(blend(just_over, 0.3)) == 1


def test_group_is_taken_against_the_head_only() -> None:
    # B overlaps A (IoU 1/3), C overlaps B (1/3) but only touches A: A+B blend, C stays alone.
    d = dets([[0, 0, 1, 1], [0.5, 0, 1.5, 1], [1, 0, 2, 1]], [0.9, 0.8, 0.7])
    out = blend(d)
    assert out.scores.tolist() == [np.float32(0.9), np.float32(0.7)]
    np.testing.assert_array_equal(out.boxes[1], d.boxes[2])


def test_output_sorted_by_score_whatever_the_input_order() -> None:
    d = dets([[k * 3, 0, k * 3 + 1, 1] for k in range(5)], [0.6, 0.9, 0.7, 0.95, 0.8])
    out = blend(d)
    assert out.scores.tolist() == sorted(d.scores.tolist(), reverse=True)
    np.testing.assert_array_equal(out.boxes[0], d.boxes[3])


def test_zero_area_head_ends_the_loop_as_mediapipe() -> None:
    # Checked against mediapipe 0.10.21: a head whose IoU with itself is 0 forms no group, is emitted
    # unchanged, and MediaPipe's "no progress" guard stops there; the rest are dropped.
    d = dets([[0.2, 0.2, 0.2, 0.5], [0.1, 0.1, 0.4, 0.4], [0.6, 0.6, 0.9, 0.9]], [0.9, 0.8, 0.7])
    out = blend(d)
    assert len(out) == 1
    np.testing.assert_array_equal(out.boxes[0], d.boxes[0])


def test_empty_in_empty_out() -> None:
    assert len(blend(Detections.empty())) == 0


def test_blending_reduces_jitter_of_one_face() -> None:
    rng = np.random.default_rng(0)
    true_box = np.array([0.3, 0.3, 0.6, 0.6], np.float32)
    noisy = true_box + rng.normal(0, 0.01, (12, 4)).astype(np.float32)
    d = dets(noisy.tolist(), rng.uniform(0.6, 0.9, 12).tolist())
    out = blend(d)
    assert len(out) == 1
    head = d.boxes[np.argmax(d.scores)]
    assert np.abs(out.boxes[0] - true_box).max() < np.abs(head - true_box).max()


# -- properties ---------------------------------------------------------------------------------------

coord = st.floats(0.0, 1.0, width=32)


@st.composite
def detections(draw: st.DrawFn) -> Detections:
    n = draw(st.integers(0, 24))
    xy = draw(arrays(np.float32, (n, 2), elements=coord))
    wh = draw(arrays(np.float32, (n, 2), elements=st.floats(0.015625, 0.5, width=32)))
    # few distinct scores, so ties are common
    scores = draw(arrays(np.float32, (n,), elements=st.sampled_from([0.5, 0.6, 0.75, 0.9, 1.0])))
    keypoints = draw(arrays(np.float32, (n, 6, 2), elements=coord))
    return Detections(scores, np.concatenate([xy, xy + wh], axis=1), keypoints)


@settings(max_examples=60, deadline=None)
@given(detections(), st.floats(0.0, 0.9))
def test_blend_properties(d: Detections, threshold: float) -> None:
    out = blend(d, threshold)
    assert len(out) <= len(d)
    assert set(out.scores.tolist()) <= set(d.scores.tolist())
    assert out.scores.tolist() == sorted(out.scores.tolist(), reverse=True)
    if len(d):
        assert out.scores[0] == d.scores.max()
        # weighted means stay inside the inputs' hull
        lo, hi = d.boxes.min(axis=0) - 1e-6, d.boxes.max(axis=0) + 1e-6
        assert ((out.boxes >= lo) & (out.boxes <= hi)).all()
