"""AP: VOC matching, all-points and 11-point interpolation, size buckets; hand-computed answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from blazeface_tools.evaluation.ap import (
    FALSE_POSITIVE,
    IGNORED,
    TRUE_POSITIVE,
    EvalConfig,
    ImageEval,
    SizeBuckets,
    average_precision,
    detect_annotated,
    evaluate,
    match_image,
)
from blazeface_tools.evaluation.cli import ap_markdown
from blazeface_tools.evaluation.wider import read_annotations
from service.pipeline import Detector


def box(x: float, y: float, size: float) -> list[float]:
    return [x, y, x + size, y + size]


def image(gt: list[list[float]], dets: list[tuple[list[float], float]], **kw: object) -> ImageEval:
    return ImageEval(
        gt_boxes=np.array(gt, float).reshape(-1, 4),
        det_boxes=np.array([d for d, _ in dets], float).reshape(-1, 4),
        det_scores=np.array([s for _, s in dets], float),
        **kw,  # type: ignore[arg-type]
    )


FAR = box(1000, 1000, 60)  # overlaps nothing


def test_perfect_detections_give_ap_one() -> None:
    gts = [box(10, 10, 60), box(200, 10, 80)]
    result = evaluate(
        [image(gts, [(gts[0], 0.9), (gts[1], 0.7)]), image([box(5, 5, 55)], [(box(5, 5, 55), 0.8)])]
    )
    assert result["all"].ap == 1.0
    assert (result["all"].true_positives, result["all"].false_positives, result["all"].num_gt) == (3, 0, 3)
    assert evaluate([image(gts, [(gts[0], 0.9), (gts[1], 0.7)])], EvalConfig(interpolation="11point"))[
        "all"
    ].ap == pytest.approx(1.0)


def test_one_false_positive_ranked_first_halves_ap() -> None:
    gt = box(10, 10, 60)
    result = evaluate([image([gt], [(FAR, 0.95), (gt, 0.6)])])["all"]
    # one point on the curve: recall 1 at precision 1/2
    assert result.ap == pytest.approx(0.5)
    assert result.precision == pytest.approx(0.5) and result.recall == 1.0
    eleven = evaluate([image([gt], [(FAR, 0.95), (gt, 0.6)])], EvalConfig(interpolation="11point"))["all"]
    assert eleven.ap == pytest.approx(0.5)


def test_false_positive_ranked_last_does_not_lower_ap() -> None:
    gt = box(10, 10, 60)
    assert evaluate([image([gt], [(gt, 0.9), (FAR, 0.2)])])["all"].ap == pytest.approx(1.0)


def test_missed_ground_truth_caps_recall() -> None:
    gts = [box(10, 10, 60), box(200, 10, 60)]
    one = [image(gts, [(gts[0], 0.9)])]
    assert evaluate(one)["all"].ap == pytest.approx(0.5)
    # 11-point: precision 1 at recall 0, 0.1, ..., 0.5 (six points), 0 at the other five
    assert evaluate(one, EvalConfig(interpolation="11point"))["all"].ap == pytest.approx(6 / 11)


def test_duplicate_detections_are_false_positives() -> None:
    gt = box(10, 10, 60)
    near = box(12, 11, 60)  # IoU ≈ 0.92 with gt
    result = evaluate([image([gt], [(gt, 0.9), (near, 0.85)])])["all"]
    assert (result.true_positives, result.false_positives) == (1, 1)
    assert result.ap == pytest.approx(1.0)  # the duplicate comes after recall reached 1
    # ranked first, the better-overlapping box is the duplicate: whichever scores higher takes the face
    labels = match_image(np.array([gt, near]), np.array([0.5, 0.9]), np.array([gt]), np.array([False]))
    assert labels.tolist() == [FALSE_POSITIVE, TRUE_POSITIVE]


def test_all_points_interpolation_hand_computed() -> None:
    # ranking TP FP TP FP TP over 3 faces: recall 1/3, 1/3, 2/3, 2/3, 1; precision 1, 1/2, 2/3, 1/2, 3/5.
    # Envelope: 1 on (0, 1/3], 2/3 on (1/3, 2/3], 3/5 on (2/3, 1]  → AP = (1 + 2/3 + 3/5) / 3
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 0, 1])
    assert average_precision(scores, labels, 3) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # 11-point: t=0..0.3 → 1 (4 points), 0.4..0.6 → 2/3 (3), 0.7..1.0 → 3/5 (4)
    expected = (4 * 1 + 3 * 2 / 3 + 4 * 3 / 5) / 11
    assert average_precision(scores, labels, 3, "11point") == pytest.approx(expected)
    # input order does not matter, only scores
    perm = np.array([4, 2, 0, 3, 1])
    assert average_precision(scores[perm], labels[perm], 3) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)


def test_scores_pool_across_images() -> None:
    # image A's FP outranks image B's TP: the curve is over all images together
    a = image([box(10, 10, 60)], [(box(10, 10, 60), 0.9), (FAR, 0.8)])
    b = image([box(10, 10, 60)], [(box(10, 10, 60), 0.7)])
    # TP FP TP over 2 faces → recall .5,.5,1, precision 1,.5,.667 → AP = .5 * 1 + .5 * 2/3
    assert evaluate([a, b])["all"].ap == pytest.approx(0.5 + 1 / 3)


def test_no_detections_and_no_ground_truth() -> None:
    assert evaluate([image([box(0, 0, 60)], [])])["all"].ap == 0.0
    empty = evaluate([image([], [(FAR, 0.9)])])["all"]
    assert math.isnan(empty.ap) and empty.false_positives == 1 and empty.num_gt == 0


def test_iou_threshold_is_inclusive() -> None:
    gt = [0.0, 0.0, 100.0, 100.0]
    half = [0.0, 0.0, 100.0, 50.0]  # IoU exactly 0.5
    assert (
        match_image(np.array([half]), np.array([0.9]), np.array([gt]), np.array([False]))[0] == TRUE_POSITIVE
    )
    below = [0.0, 0.0, 100.0, 49.0]
    assert (
        match_image(np.array([below]), np.array([0.9]), np.array([gt]), np.array([False]))[0]
        == FALSE_POSITIVE
    )


def test_no_fallback_to_second_best_ground_truth() -> None:
    # VOC: a detection whose best face is taken is a duplicate, even if it overlaps another free face
    a, b = [0.0, 0.0, 100.0, 100.0], [30.0, 0.0, 130.0, 100.0]  # IoU(a, b) ≈ 0.54
    det = [10.0, 0.0, 110.0, 100.0]  # IoU 0.82 with a, 0.67 with b
    labels = match_image(np.array([a, det]), np.array([0.9, 0.8]), np.array([a, b]), np.array([False, False]))
    assert labels.tolist() == [TRUE_POSITIVE, FALSE_POSITIVE]


def test_size_bucket_boundaries() -> None:
    buckets = SizeBuckets()
    assert buckets.of(np.array([50, 49.9, 25, 24.9, 200])).tolist() == [
        "easy",
        "medium",
        "medium",
        "hard",
        "easy",
    ]
    with pytest.raises(ValueError):
        SizeBuckets(easy_min=20, hard_max=30)


def test_buckets_ignore_faces_of_other_buckets() -> None:
    big, small = box(10, 10, 100), box(300, 300, 20)
    im = image([big, small], [(small, 0.95), (big, 0.9), (FAR, 0.5)])
    result = evaluate([im])
    assert result["all"].num_gt == 2 and result["all"].ap == pytest.approx(1.0)
    easy, hard, medium = result["easy"], result["hard"], result["medium"]
    # the small face's detection is dropped from `easy`, not a false positive there, and vice versa
    assert (easy.num_gt, easy.true_positives, easy.ignored_detections, easy.ap) == (1, 1, 1, 1.0)
    assert (hard.num_gt, hard.true_positives, hard.ignored_detections, hard.ap) == (1, 1, 1, 1.0)
    # the detection matching no face counts against every bucket
    assert easy.false_positives == hard.false_positives == 1
    assert medium.num_gt == 0 and math.isnan(medium.ap)


def test_invalid_faces_are_ignored_everywhere() -> None:
    a, b = box(10, 10, 60), box(200, 10, 60)
    im = image([a, b], [(a, 0.9), (b, 0.8)], gt_invalid=np.array([False, True]))
    result = evaluate([im])["all"]
    assert (result.num_gt, result.true_positives, result.false_positives, result.ignored_detections) == (
        1,
        1,
        0,
        1,
    )
    labels = match_image(np.array([b]), np.array([0.8]), np.array([a, b]), np.array([False, True]))
    assert labels.tolist() == [IGNORED]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        ImageEval(np.zeros((1, 4)), np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError):
        average_precision(np.array([0.5]), np.array([1]), 1, "bogus")  # type: ignore[arg-type]


# -- the real pipeline on the labelled set ------------------------------------------------------------------

EVAL = Path(__file__).resolve().parents[1] / "data" / "eval"


def test_full_model_finds_the_three_large_faces(detector: Detector) -> None:
    annotations = [a for a in read_annotations(EVAL / "labels.txt") if a.filename == "dlib/2008_002506.jpg"]
    images = detect_annotated(detector, annotations, EVAL / "images", model="full")
    result = evaluate(images)
    assert (result["all"].true_positives, result["all"].false_positives, result["all"].num_gt) == (3, 0, 3)
    assert result["all"].ap == 1.0 and result["easy"].num_gt == 3


def test_ap_markdown_table() -> None:
    res = {"ap": 0.5, "true_positives": 1, "num_gt": 2, "false_positives": 0}
    empty = {"ap": None, "true_positives": 0, "num_gt": 0, "false_positives": 0}
    report = {
        "config": {"buckets": SizeBuckets().describe()},
        "results": {
            "all images": {"full": {"exact": {"all": res, "easy": res, "medium": empty, "hard": res}}}
        },
    }
    table = ap_markdown(report)
    assert "| full | exact | 0.500 (1/2, 0 FP) | 0.500 (1/2, 0 FP) | – | 0.500 (1/2, 0 FP) |" in table
    assert "easy (h >= 50 px)" in table
