"""Tensor decoding (MediaPipe's TensorsToDetectionsCalculator) and the `decode` entry point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.decoding import Detections, Suppression, candidates, decode, suppress
from service.decoding.anchors import generate_anchors
from service.decoding.boxes import decode_boxes, scores_from_logits
from service.specs import FULL, SHORT

A = SHORT.decoder.num_boxes
ANCHORS = generate_anchors(SHORT.anchors)
CELL_1_1 = 512 + 6 * (8 * 1 + 1) + 3  # stride-16 grid, row 1, column 1, 4th anchor: centre (0.1875, 0.1875)


def silent(num: int = A) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((num, 16), np.float32), np.full((num, 1), -10.0, np.float32)


def test_hand_made_regressors_decode_to_known_box_and_keypoints() -> None:
    regressors, logits = silent()
    # In input pixels (scale 128): centre offset (+12.8, -6.4), size 25.6 x 51.2, keypoint k at (k, -2k) px.
    regressors[CELL_1_1, :4] = [12.8, -6.4, 25.6, 51.2]
    regressors[CELL_1_1, 4:] = np.array([[k, -2 * k] for k in range(6)], np.float32).ravel()
    logits[CELL_1_1] = 2.0

    dets = decode_boxes(regressors, logits, ANCHORS, SHORT.decoder, 0.5)

    assert len(dets) == 1
    assert ANCHORS[CELL_1_1].tolist() == [0.1875, 0.1875]
    cx, cy = 0.1875 + 0.1, 0.1875 - 0.05
    np.testing.assert_allclose(dets.boxes[0], [cx - 0.1, cy - 0.2, cx + 0.1, cy + 0.2], atol=1e-6)
    expected_kp = [[0.1875 + k / 128, 0.1875 - 2 * k / 128] for k in range(6)]
    np.testing.assert_allclose(dets.keypoints[0], expected_kp, atol=1e-6)
    np.testing.assert_allclose(dets.scores, [1 / (1 + np.exp(-2.0))], rtol=1e-6)
    assert dets.scores.dtype == dets.boxes.dtype == dets.keypoints.dtype == np.float32


def test_sigmoid_is_clipped_and_does_not_warn() -> None:
    scores = scores_from_logits(np.array([1e4, -1e4, 0.0, 2.0], np.float32), clip=100.0)
    # exp(100) overflows float32 -> score 0.0 exactly, as MediaPipe's 1 / (1 + std::exp(100.f)).
    np.testing.assert_array_equal(scores[:3], [1.0, 0.0, 0.5])
    clipped = scores_from_logits(np.array([10.0, -10.0], np.float32), clip=1.0)
    np.testing.assert_allclose(clipped, [1 / (1 + np.exp(-1.0)), 1 / (1 + np.exp(1.0))], rtol=1e-6)


def test_threshold_is_inclusive_as_mediapipe() -> None:
    regressors, logits = silent()
    regressors[:, 2:4] = 10.0
    logits[[3, 7], 0] = [0.0, -0.001]  # scores 0.5 and just under
    dets = decode_boxes(regressors, logits, ANCHORS, SHORT.decoder, 0.5)
    assert dets.scores.tolist() == [0.5]


class RowsOnly(np.ndarray):
    """A regressor tensor that fails if anything computes on all of it rather than on selected rows."""

    rows_read: list[np.ndarray]

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        self.rows_read.append(np.asarray(index))
        return np.asarray(self).__getitem__(index)

    def __array_ufunc__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the whole regressor tensor was computed on")


def test_only_candidates_above_threshold_are_decoded() -> None:
    regressors, logits = silent()
    regressors[:, 2:4] = 10.0
    above = [5, 600, 895]
    logits[above] = 3.0
    spy = regressors.view(RowsOnly)
    spy.rows_read = []

    dets = decode_boxes(spy, logits, ANCHORS, SHORT.decoder, 0.5)

    assert len(dets) == 3
    assert [r.tolist() for r in spy.rows_read] == [above]


def test_negative_size_is_dropped_zero_size_kept() -> None:
    # TensorsToDetectionsCalculator skips width/height < 0 or NaN (b/171391719); 0 passes.
    regressors, logits = silent()
    logits[[0, 1, 2, 3]] = 5.0
    regressors[0, 2:4] = [-1.0, 10.0]
    regressors[1, 2:4] = [10.0, np.nan]
    regressors[2, 2:4] = [0.0, 0.0]
    regressors[3, 2:4] = [10.0, 10.0]
    dets = decode_boxes(regressors, logits, ANCHORS, SHORT.decoder, 0.5)
    assert len(dets) == 2
    np.testing.assert_array_equal(dets.boxes[0, 2:] - dets.boxes[0, :2], [0.0, 0.0])


def test_nan_scores_are_dropped() -> None:
    regressors, logits = silent()
    regressors[:, 2:4] = 10.0
    logits[4] = np.nan
    assert len(decode_boxes(regressors, logits, ANCHORS, SHORT.decoder, 0.0)) == A - 1


def test_flat_logits_are_accepted() -> None:
    regressors, logits = silent()
    logits[9] = 1.0
    regressors[9, 2:4] = 10.0
    a = decode_boxes(regressors, logits, ANCHORS, SHORT.decoder, 0.5)
    b = decode_boxes(regressors, logits.ravel(), ANCHORS, SHORT.decoder, 0.5)
    np.testing.assert_array_equal(a.boxes, b.boxes)


@pytest.mark.parametrize(
    ("reg_shape", "logit_shape"),
    [((A, 12), (A, 1)), ((A - 1, 16), (A, 1)), ((1, A, 16), (A, 1)), ((A, 16), (A, 2))],
)
def test_wrong_shapes_are_rejected(reg_shape: tuple[int, ...], logit_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        decode_boxes(
            np.zeros(reg_shape, np.float32), np.zeros(logit_shape, np.float32), ANCHORS, SHORT.decoder, 0.5
        )


def test_nothing_above_threshold_gives_empty() -> None:
    dets = decode(*silent(), SHORT)
    assert len(dets) == 0
    assert dets.boxes.shape == (0, 4) and dets.keypoints.shape == (0, 6, 2)


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
        regressors, logits = two_faces(spec.decoder.num_boxes, spec.decoder.scale)
        dets = decode(regressors, logits, spec)
        assert len(dets) == 2, spec.name
        assert dets.scores.tolist() == sorted(dets.scores.tolist(), reverse=True)
        assert dets.scores[0] == np.float32(1 / (1 + np.exp(-3.0)))  # the head's score
    raised = decode(*two_faces(FULL.decoder.num_boxes, 192.0), FULL, min_score=0.7)
    assert len(raised) == 1


def test_the_strongest_are_kept_in_their_order() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5], np.float32)
    dets = Detections(scores, np.zeros((6, 4), np.float32), np.zeros((6, 6, 2), np.float32))
    np.testing.assert_array_equal(dets.strongest(4).scores, scores[[1, 2, 3, 5]])
    np.testing.assert_array_equal(dets.strongest(2).scores, scores[[1, 3]])
    np.testing.assert_array_equal(dets.strongest(3).scores, scores[[1, 2, 3]])  # of tied 0.5s, the earlier
    assert dets.strongest(6) is dets


def test_decode_is_candidates_then_suppress() -> None:
    rng = np.random.default_rng(3)
    regressors = (rng.standard_normal((SHORT.decoder.num_boxes, 16)) * 5).astype(np.float32)
    logits = rng.uniform(-3, 3, (SHORT.decoder.num_boxes, 1)).astype(np.float32)
    for mode in Suppression:
        want = decode(regressors, logits, SHORT, min_score=0.3, suppression=mode)
        got = suppress(candidates(regressors, logits, SHORT, min_score=0.3), SHORT, mode)
        np.testing.assert_array_equal(got.boxes, want.boxes)
        np.testing.assert_array_equal(got.scores, want.scores)


def test_decode_suppression_modes() -> None:
    regressors, logits = two_faces(A, 128.0)
    blended = decode(regressors, logits, SHORT)
    kept = decode(regressors, logits, SHORT, suppression=Suppression.NMS)
    assert isinstance(kept, Detections)
    np.testing.assert_array_equal(blended.scores, kept.scores)
    assert not np.array_equal(blended.boxes[0], kept.boxes[0])  # blend moved toward the others
    by_name = decode(regressors, logits, SHORT, suppression="nms")  # type: ignore[arg-type]
    np.testing.assert_array_equal(by_name.boxes, kept.boxes)
    with pytest.raises(ValueError):
        decode(regressors, logits, SHORT, suppression="soft")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(
    min_score=st.floats(0.0, 1.0),
    spread=st.floats(1e-6, 50.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_logit_prefilter_keeps_exactly_the_sigmoid_survivors(
    min_score: float, spread: float, seed: int
) -> None:
    """The logit-space shortcut must keep the same anchors as scoring every anchor and comparing."""
    opts = SHORT.decoder
    anchors = generate_anchors(SHORT.anchors)
    rng = np.random.default_rng(seed)
    centre = np.log(min_score / (1 - min_score)) if 0 < min_score < 1 else 0.0
    logits = (centre + rng.normal(0, spread, (opts.num_boxes, 1))).astype(np.float32)
    regressors = np.zeros((opts.num_boxes, opts.num_coords), np.float32)
    regressors[:, 2:4] = 10  # positive sizes, so no box is dropped for its shape
    expected = scores_from_logits(logits[:, 0], opts.score_clipping_thresh)
    expected = expected[expected >= np.float32(min_score)]
    got = decode_boxes(regressors, logits, anchors, opts, min_score)
    np.testing.assert_array_equal(got.scores, expected)
