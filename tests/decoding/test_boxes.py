"""Candidate decoding (MediaPipe's TensorsToDetectionsCalculator) and the `decode` entry point.

The graph hands decoding each image's `top_k` best candidates (scores, anchor indices, regressors);
`graph_tail` below plays that part on hand-made per-anchor tensors, with MediaPipe's score formula.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decoding import Detections, Suppression, candidates, decode, is_truncated, suppress
from service.decoding.anchors import generate_anchors
from service.decoding.boxes import decode_boxes
from service.specs import FULL, SHORT, ModelSpec

A = SHORT.decoder.num_boxes
K = SHORT.top_k
ANCHORS = generate_anchors(SHORT.anchors)
CELL_1_1 = 512 + 6 * (8 * 1 + 1) + 3  # stride-16 grid, row 1, column 1, 4th anchor: centre (0.1875, 0.1875)

Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """MediaPipe's score in float32: 1 / (1 + exp(-x)) of the logit clipped to ±100."""
    x = np.clip(np.asarray(logits, np.float32), np.float32(-100), np.float32(100))
    with np.errstate(over="ignore"):
        return np.float32(1) / (np.float32(1) + np.exp(-x))


def graph_tail(regressors: np.ndarray, logits: np.ndarray, spec: ModelSpec = SHORT) -> Candidates:
    """What the graph returns for per-anchor tensors: the top_k scores, best first (ties: lower anchor)."""
    scores = sigmoid(logits.reshape(-1))
    best = np.argsort(-scores, kind="stable")[: spec.top_k]
    return scores[best], best.astype(np.int32), regressors[best]


def silent(num: int = A) -> tuple[np.ndarray, np.ndarray]:
    """Per-anchor regressors and logits of an image with no face."""
    return np.zeros((num, 16), np.float32), np.full((num, 1), -10.0, np.float32)


def test_hand_made_regressors_decode_to_known_box_and_keypoints() -> None:
    regressors, logits = silent()
    # In input pixels (scale 128): centre offset (+12.8, -6.4), size 25.6 x 51.2, keypoint k at (k, -2k) px.
    regressors[CELL_1_1, :4] = [12.8, -6.4, 25.6, 51.2]
    regressors[CELL_1_1, 4:] = np.array([[k, -2 * k] for k in range(6)], np.float32).ravel()
    logits[CELL_1_1] = 2.0

    dets = decode_boxes(*graph_tail(regressors, logits), ANCHORS, SHORT.decoder, 0.5)

    assert len(dets) == 1
    assert ANCHORS[CELL_1_1].tolist() == [0.1875, 0.1875]
    cx, cy = 0.1875 + 0.1, 0.1875 - 0.05
    np.testing.assert_allclose(dets.boxes[0], [cx - 0.1, cy - 0.2, cx + 0.1, cy + 0.2], atol=1e-6)
    expected_kp = [[0.1875 + k / 128, 0.1875 - 2 * k / 128] for k in range(6)]
    np.testing.assert_allclose(dets.keypoints[0], expected_kp, atol=1e-6)
    np.testing.assert_allclose(dets.scores, [1 / (1 + np.exp(-2.0))], rtol=1e-6)
    assert dets.scores.dtype == dets.boxes.dtype == dets.keypoints.dtype == np.float32


def test_threshold_is_inclusive_and_between_floats_as_mediapipe() -> None:
    regressors, logits = silent()
    regressors[:, 2:4] = 10.0
    logits[[3, 7], 0] = [0.0, -0.001]  # scores 0.5 and just under
    dets = decode_boxes(*graph_tail(regressors, logits), ANCHORS, SHORT.decoder, 0.5)
    assert dets.scores.tolist() == [0.5]
    # 0.7 means 0.7f, which is below the double 0.7: a score of exactly 0.7f passes, as in MediaPipe.
    scores = np.full(K, 0.1, np.float32)
    scores[0] = np.float32(0.7)
    assert float(np.float32(0.7)) < 0.7
    dets = decode_boxes(
        scores, np.arange(K, dtype=np.int32), np.ones((K, 16), np.float32), ANCHORS, SHORT.decoder, 0.7
    )
    assert len(dets) == 1


def test_candidates_come_out_in_anchor_order() -> None:
    """MediaPipe leaves detections in anchor order, and its score sort breaks ties by that order."""
    regressors, logits = silent()
    regressors[:, 2:4] = 10.0
    regressors[:, 0] = np.arange(A)  # each row says which anchor it is
    logits[[700, 5, 300, 6], 0] = [3.0, 1.0, 2.0, 1.0]  # the graph ranks them 700, 300, 5, 6
    scores, indices, rows = graph_tail(regressors, logits)
    assert indices[:4].tolist() == [700, 300, 5, 6]
    dets = decode_boxes(scores, indices, rows, ANCHORS, SHORT.decoder, 0.5)
    centres = (dets.boxes[:, 0] + dets.boxes[:, 2]) / 2
    np.testing.assert_allclose(
        centres, ANCHORS[[5, 6, 300, 700], 0] + np.array([5, 6, 300, 700]) / 128, atol=1e-5
    )
    np.testing.assert_array_equal(dets.scores, sigmoid(np.array([1.0, 1.0, 2.0, 3.0])))


def test_negative_size_is_dropped_zero_size_kept() -> None:
    # TensorsToDetectionsCalculator skips width/height < 0 or NaN (b/171391719); 0 passes.
    regressors, logits = silent()
    logits[[0, 1, 2, 3]] = 5.0
    regressors[0, 2:4] = [-1.0, 10.0]
    regressors[1, 2:4] = [10.0, np.nan]
    regressors[2, 2:4] = [0.0, 0.0]
    regressors[3, 2:4] = [10.0, 10.0]
    dets = decode_boxes(*graph_tail(regressors, logits), ANCHORS, SHORT.decoder, 0.5)
    assert len(dets) == 2
    np.testing.assert_array_equal(dets.boxes[0, 2:] - dets.boxes[0, :2], [0.0, 0.0])


def test_nan_scores_are_dropped() -> None:
    scores = np.full(K, 0.9, np.float32)
    scores[4] = np.nan
    regressors = np.full((K, 16), 10.0, np.float32)
    dets = decode_boxes(scores, np.arange(K, dtype=np.int32), regressors, ANCHORS, SHORT.decoder, 0.0)
    assert len(dets) == K - 1


@pytest.mark.parametrize(
    ("scores", "indices", "regressors"),
    [((K,), (K,), (K, 12)), ((K,), (K - 1,), (K, 16)), ((1, K), (K,), (K, 16)), ((K,), (K, 1), (K, 16))],
)
def test_wrong_shapes_are_rejected(
    scores: tuple[int, ...], indices: tuple[int, ...], regressors: tuple[int, ...]
) -> None:
    with pytest.raises(ValueError, match="candidates must be"):
        decode_boxes(
            np.ones(scores, np.float32),
            np.zeros(indices, np.int32),
            np.zeros(regressors, np.float32),
            ANCHORS,
            SHORT.decoder,
            0.5,
        )


@pytest.mark.parametrize("bad", [-1, A])
def test_anchor_indices_outside_the_model_are_rejected(bad: int) -> None:
    indices = np.arange(K, dtype=np.int32)
    indices[3] = bad
    with pytest.raises(ValueError, match="anchor indices"):
        decode_boxes(
            np.ones(K, np.float32), indices, np.ones((K, 16), np.float32), ANCHORS, SHORT.decoder, 0.5
        )


def test_nothing_above_threshold_gives_empty() -> None:
    dets = decode(*graph_tail(*silent()), SHORT)
    assert len(dets) == 0
    assert dets.boxes.shape == (0, 4) and dets.keypoints.shape == (0, 6, 2)


def test_truncated_only_when_every_candidate_is_over_the_threshold() -> None:
    scores = np.linspace(0.9, 0.3, K, dtype=np.float32)  # best first, as the graph returns them
    assert is_truncated(scores, 0.3) and is_truncated(scores, 0.0)
    assert not is_truncated(scores, 0.31) and not is_truncated(scores, 0.5)
    scores[-1] = np.nan  # a broken model's NaN is no candidate
    assert not is_truncated(scores, 0.0)


def two_faces(num: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Two faces: three overlapping anchors on one, one anchor on the other."""
    regressors, logits = silent(num)
    regressors[:, 2:4] = 0.2 * scale
    for i, logit in zip((100, 101, 102), (1.0, 3.0, 2.0), strict=True):
        logits[i] = logit
    regressors[101, 0] = 0.01 * scale  # the best one slightly off the others
    logits[num - 1] = 0.45  # score 0.61: above full's 0.6, below nothing else
    return regressors, logits


def test_decode_defaults_to_the_model_threshold_and_blends() -> None:
    for spec in (SHORT, FULL):
        tail = graph_tail(*two_faces(spec.decoder.num_boxes, spec.decoder.scale), spec)
        dets = decode(*tail, spec)
        assert len(dets) == 2, spec.name
        assert dets.scores.tolist() == sorted(dets.scores.tolist(), reverse=True)
        assert dets.scores[0] == np.float32(1 / (1 + np.exp(-3.0)))  # the head's score
    raised = decode(*graph_tail(*two_faces(FULL.decoder.num_boxes, 192.0), FULL), FULL, min_score=0.7)
    assert len(raised) == 1


def test_decode_is_candidates_then_suppress() -> None:
    rng = np.random.default_rng(3)
    regressors = (rng.standard_normal((A, 16)) * 5).astype(np.float32)
    logits = rng.uniform(-3, 3, (A, 1)).astype(np.float32)
    tail = graph_tail(regressors, logits)
    for mode in Suppression:
        want = decode(*tail, SHORT, min_score=0.3, suppression=mode)
        got = suppress(candidates(*tail, SHORT, min_score=0.3), SHORT, mode)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.scores, want.scores)


def test_decode_suppression_modes() -> None:
    tail = graph_tail(*two_faces(A, 128.0))
    blended = decode(*tail, SHORT)
    kept = decode(*tail, SHORT, suppression=Suppression.NMS)
    assert isinstance(kept, Detections)
    np.testing.assert_array_equal(blended.scores, kept.scores)
    assert not np.array_equal(blended.boxes[0], kept.boxes[0])  # blend moved toward the others
    by_name = decode(*tail, SHORT, suppression="nms")  # type: ignore[arg-type]
    np.testing.assert_array_equal(by_name.boxes, kept.boxes)
    with pytest.raises(ValueError):
        decode(*tail, SHORT, suppression="soft")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(min_score=st.floats(0.0, 1.0), spread=st.floats(1e-6, 50.0), seed=st.integers(0, 2**32 - 1))
def test_keeps_exactly_the_candidates_over_the_threshold_in_anchor_order(
    min_score: float, spread: float, seed: int
) -> None:
    """Whatever the graph's order, decoding keeps every candidate with score >= min_score (as float32)
    and only those, by anchor."""
    rng = np.random.default_rng(seed)
    centre = np.log(min_score / (1 - min_score)) if 0 < min_score < 1 else 0.0
    scores = sigmoid(centre + rng.normal(0, spread, K))
    indices = rng.permutation(A)[:K].astype(np.int32)
    regressors = np.zeros((K, 16), np.float32)
    regressors[:, 2:4] = 10  # positive sizes, so no box is dropped for its shape
    passed = scores >= np.float32(min_score)
    order = np.argsort(indices[passed])
    got = decode_boxes(scores, indices, regressors, ANCHORS, SHORT.decoder, min_score)
    np.testing.assert_array_equal(got.scores, scores[passed][order])
    np.testing.assert_array_equal(got.boxes[:, 0], ANCHORS[indices[passed][order], 0] - 10 / 256)
