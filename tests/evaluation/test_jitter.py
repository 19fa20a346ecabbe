"""Jitter metric on synthetic detections with known answers, shifted copies, and the shift bookkeeping
end to end through a fake, perfectly shift-equivariant detector."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from blazeface_tools.evaluation.cli import add_eval_commands, jitter_markdown, parse_shifts
from blazeface_tools.evaluation.jitter import (
    POINT_NAMES,
    JitterAccumulator,
    JitterConfig,
    inter_ocular,
    match_by_iou,
    measure_jitter,
    normalised_errors,
    plan_shifts,
    reduction,
    rms,
    shift_image,
)
from service.geometry import CropRoi
from service.pipeline import Detector
from service.postprocess import Face
from service.specs import KEYPOINT_NAMES


def face_points(x: float, y: float, size: float = 40.0, iod: float = 10.0) -> np.ndarray:
    """(8, 2) points of an upright face: box at (x, y), eyes `iod` apart."""
    cx, cy = x + size / 2, y + size / 2
    kp = [(cx - iod / 2, cy - 5), (cx + iod / 2, cy - 5), (cx, cy), (cx, cy + 8), (x, cy), (x + size, cy)]
    return np.array([(x, y), (x + size, y + size), *kp], np.float64)


def test_point_layout_and_inter_ocular() -> None:
    assert POINT_NAMES[:2] == ("box_top_left", "box_bottom_right")
    assert POINT_NAMES[2:] == KEYPOINT_NAMES
    np.testing.assert_allclose(inter_ocular(face_points(0, 0, iod=12)[None]), [12.0])


def test_uniform_offset_gives_offset_over_iod() -> None:
    ref = face_points(100, 50, iod=10)[None]
    acc = JitterAccumulator()
    acc.add_reference(ref)
    acc.add_copy(ref, ref + np.array([3.0, 4.0]))  # every point moves 5 px
    stats = acc.stats()
    assert stats.rms == pytest.approx(0.5)
    assert stats.rms_box == pytest.approx(0.5) and stats.rms_keypoints == pytest.approx(0.5)
    assert (stats.pairs, stats.missed, stats.extra, stats.reference_faces) == (1, 0, 0, 1)


def test_keypoints_only_offset() -> None:
    ref = face_points(0, 0, iod=10)[None]
    moved = ref.copy()
    moved[:, 2:] += [2.0, 0.0]  # keypoints 0.2 IOD, box still
    stats_acc = JitterAccumulator()
    stats_acc.add_copy(ref, moved)
    stats = stats_acc.stats()
    assert stats.rms_box == 0.0
    assert stats.rms_keypoints == pytest.approx(0.2)
    assert stats.rms == pytest.approx(0.2 * math.sqrt(6 / 8))  # 6 of the 8 points moved


def test_pooled_over_faces_and_copies() -> None:
    a = face_points(0, 0, iod=10)
    b = face_points(200, 0, size=80, iod=20)
    ref = np.stack([a, b])
    acc = JitterAccumulator()
    acc.add_copy(ref, np.stack([a + np.array([1, 0]), b + np.array([4, 0])]))  # 0.1 and 0.2 IOD
    acc.add_copy(ref, np.stack([a, b]))  # no motion: two more pairs at 0
    stats = acc.stats()
    assert stats.pairs == 4
    assert stats.rms == pytest.approx(math.sqrt((0.1**2 + 0.2**2) / 4))


def test_normalisation_is_per_reference_face() -> None:
    ref = face_points(0, 0, iod=10)[None]
    err = normalised_errors(ref, ref + np.array([0, 1]))
    np.testing.assert_allclose(err, np.full((1, 8), 0.1))
    flat = ref.copy()
    flat[:, 3] = flat[:, 2]  # eyes coincide: no scale
    assert np.isnan(normalised_errors(flat, flat)).all()


def test_missed_and_extra_faces() -> None:
    a, b = face_points(0, 0), face_points(300, 0)
    acc = JitterAccumulator()
    acc.add_reference(np.stack([a, b]))
    # the copy lost b and found a far-away face instead
    acc.add_copy(np.stack([a, b]), np.stack([a + np.array([1, 0]), face_points(0, 300)]))
    stats = acc.stats()
    assert (stats.pairs, stats.missed, stats.extra) == (1, 1, 1)
    assert stats.rms == pytest.approx(0.1)


def test_match_by_iou_is_one_to_one_best_first() -> None:
    ref = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], float)
    other = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [100, 100, 110, 110]], float)
    assert sorted(match_by_iou(ref, other)) == [(0, 1), (1, 0)]
    assert match_by_iou(ref, other, min_iou=1.01) == []
    assert match_by_iou(ref[:0], other) == []


def test_rms_and_reduction() -> None:
    assert rms(np.array([3.0, 4.0])) == pytest.approx(math.sqrt(12.5))
    assert math.isnan(rms(np.array([])))
    assert reduction(0.7, 1.0) == pytest.approx(0.3)
    assert math.isnan(reduction(0.5, 0.0))


# -- shifted copies -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dx", "dy"), [(3, 0), (0, 2), (2, 1), (-3, -1), (-1, 2)])
def test_shift_image_moves_content(dx: int, dy: int) -> None:
    img = np.arange(8 * 10 * 3, dtype=np.uint8).reshape(8, 10, 3)
    out = shift_image(img, dx, dy)
    assert out.shape == img.shape
    h, w = img.shape[:2]
    # every original pixel that stays on the canvas is found (dx, dy) away
    ys, xs = np.mgrid[max(0, -dy) : min(h, h - dy), max(0, -dx) : min(w, w - dx)]
    np.testing.assert_array_equal(out[ys + dy, xs + dx], img[ys, xs])
    # edge fill repeats the nearest original edge pixel
    if dx > 0:
        np.testing.assert_array_equal(out[:, 0], out[:, dx])
    if dx < 0:
        np.testing.assert_array_equal(out[:, -1], out[:, w - 1 + dx])


def test_shift_image_constant_fill_and_limits() -> None:
    img = np.full((4, 4, 3), 200, np.uint8)
    out = shift_image(img, 1, 0, fill="constant")
    assert (out[:, 0] == 0).all() and (out[:, 1:] == 200).all()
    with pytest.raises(ValueError):
        shift_image(img, 4, 0)


def test_plan_shifts_in_model_input_pixels() -> None:
    shifts = plan_shifts(500, 375, 128, [1, 2])
    # 500 / 128 = 3.906 image px per input px: 1 → 4 px (1.024 input px), 2 → 8 px (2.048)
    assert [(s.dx, s.dy) for s in shifts] == [(4, 0), (0, 4), (4, 4), (8, 0), (0, 8), (8, 8)]
    assert shifts[0].input_dx == pytest.approx(4 * 128 / 500)
    # small images never get a zero shift
    assert plan_shifts(64, 64, 192, [1])[0].dx == 1
    with pytest.raises(ValueError):
        plan_shifts(100, 100, 128, [0])


# -- end to end with a fake detector ----------------------------------------------------------------------


class SquareDetector:
    """Finds the one bright square in an image; `nms` snaps it to an 8-px grid (a stand-in for
    anchor quantisation), `blend` reports it exactly. Same call shape as `service.pipeline.Detector`."""

    def detect(self, image: bytes, **options: object) -> list[Face]:
        return self.detect_many([image], **options)[0]

    def detect_many(self, images: Sequence[bytes], **options: object) -> list[list[Face]]:
        out = []
        for data in images:
            grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
            ys, xs = np.nonzero(grey > 128)
            x1, y1, x2, y2 = float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)
            if options.get("suppression") == "nms":
                x1, y1, x2, y2 = (8 * round(v / 8) for v in (x1, y1, x2, y2))
            points = face_points(x1, y1, size=x2 - x1, iod=(x2 - x1) / 2)
            kps = {
                name: (float(p[0]), float(p[1])) for name, p in zip(KEYPOINT_NAMES, points[2:], strict=True)
            }
            out.append([Face(0.9, (x1, y1, x2, y2), kps, 0.0, CropRoi(0, 0, 1, 0))])
        return out


def square_photo() -> bytes:
    img = np.zeros((256, 256, 3), np.uint8)
    img[100:164, 90:154] = 255
    ok, buf = cv2.imencode(".png", img)
    assert ok
    return buf.tobytes()


def test_measure_jitter_undoes_the_shift() -> None:
    config = JitterConfig(shifts=(1, 2, 3))
    result = measure_jitter(SquareDetector(), [("square", square_photo())], "short", config=config)  # type: ignore[arg-type]
    blend, nms = result["blend"]["all"], result["nms"]["all"]
    # an exactly shift-equivariant detector has no jitter: the shift was undone with the right sign
    assert blend.rms == pytest.approx(0.0, abs=1e-9)
    assert (blend.pairs, blend.missed, blend.reference_faces) == (9, 0, 1)
    # the grid-snapping one does: shifts of 2, 4, 6 image px (256 / 128 per input px) against an 8-px grid
    assert nms.rms > 0.05
    assert reduction(blend.rms, nms.rms) == pytest.approx(1.0)
    assert result["blend"]["square"] == blend


# -- the real pipeline and the command line ---------------------------------------------------------------

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


def test_real_detector_smoke(detector: Detector) -> None:
    photo = [("astronaut.jpg", (PHOTOS / "astronaut.jpg").read_bytes())]
    result = measure_jitter(detector, photo, "short", config=JitterConfig(shifts=(1, 4)))
    for suppression in ("blend", "nms"):
        stats = result[suppression]["all"]
        # one clear face found in the reference and in all six copies, moving a few % of its IOD
        assert (stats.reference_faces, stats.pairs, stats.missed) == (1, 6, 0)
        assert 0.0 < stats.rms < 0.3


def test_parse_shifts() -> None:
    assert parse_shifts(["1..4"]) == (1, 2, 3, 4)
    assert parse_shifts(["3", "1,2", "2..3"]) == (1, 2, 3)
    for bad in (["0..2"], ["x"], ["1..b"]):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_shifts(bad)


def test_eval_commands_register_on_a_parser() -> None:
    parser = argparse.ArgumentParser(prog="blazeface")
    add_eval_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["eval", "jitter", "a.jpg", "b.jpg", "--models", "full", "--shifts", "1..3", "5"]
    )
    assert (args.photos, args.models, parse_shifts(args.shifts)) == (
        ["a.jpg", "b.jpg"],
        ["full"],
        (1, 2, 3, 5),
    )
    assert callable(args.run)
    args = parser.parse_args(
        ["eval", "ap", "--annotations", "l.txt", "--images", "img", "--preprocess", "fast"]
    )
    assert (args.models, args.preprocess, args.iou, args.interpolation) == (
        ["short", "full", "back"],
        ["fast"],
        0.5,
        "all",
    )


def test_jitter_markdown_table() -> None:
    stats = {"rms": 0.1, "rms_box": 0.08, "rms_keypoints": 0.11, "pairs": 24, "missed": 0}
    report = {
        "models": {
            "short": {
                "blend": stats,
                "nms": stats | {"rms": 0.125},
                "reduction": 0.2,
                "reduction_box": 0.25,
                "reduction_keypoints": None,
            }
        }
    }
    table = jitter_markdown(report)
    assert "| short | blend | 0.1000 | 0.0800 | 0.1100 | 24 | 0 |" in table
    assert "**20.0 %**" in table and "| – |" in table
