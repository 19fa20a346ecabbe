"""Tracker: ids across frames, expiry, and One-Euro smoothing with known answers on synthetic faces."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from service.geometry import CropRoi
from service.postprocess import Face
from service.specs import KEYPOINT_NAMES
from service.tracking import SmoothingOptions, TrackedFace, Tracker


def face(x: float, y: float, size: float = 100.0, score: float = 0.9) -> Face:
    cx, cy = x + size / 2, y + size / 2
    kp = [(cx - 20, cy - 10), (cx + 20, cy - 10), (cx, cy), (cx, cy + 20), (x, cy), (x + size, cy)]
    return Face(
        score,
        (x, y, x + size, y + size),
        dict(zip(KEYPOINT_NAMES, kp, strict=True)),
        0.0,
        CropRoi(cx, cy, 1.5 * size, 0.0),
    )


def ids(tracked: list[TrackedFace]) -> list[int]:
    return [t.track_id for t in tracked]


# -- ids ------------------------------------------------------------------------------------------------


def test_ids_stay_with_moving_faces_in_input_order() -> None:
    tracker = Tracker()
    for i in range(20):
        a, b = face(50 + 3 * i, 50), face(400 - 3 * i, 80 + 2 * i)
        frame = [a, b] if i % 2 == 0 else [b, a]  # detection order changes with the scores
        out = tracker.update(frame)
        assert ids(out) == ([1, 2] if i % 2 == 0 else [2, 1])
        assert out[0].box == frame[0].box  # no smoothing: faces pass through unchanged
    assert tracker.live_tracks == 2


def test_new_face_gets_a_new_id() -> None:
    tracker = Tracker()
    tracker.update([face(0, 0)])
    assert ids(tracker.update([face(2, 0), face(300, 300)])) == [1, 2]
    # a face far from every track is new even when a track is free
    assert ids(tracker.update([face(600, 0)])) == [3]


def test_track_survives_max_missed_frames_then_retires() -> None:
    tracker = Tracker(max_missed=3)
    tracker.update([face(0, 0)])
    for _ in range(3):
        assert tracker.update([]) == []
    assert tracker.live_tracks == 1
    assert ids(tracker.update([face(1, 0)])) == [1]  # back within 3 misses: same id
    for _ in range(4):
        tracker.update([])
    assert tracker.live_tracks == 0
    assert ids(tracker.update([face(1, 0)])) == [2]  # gone after the 4th miss; ids are never reused


def test_one_to_one_and_best_overlap_first() -> None:
    tracker = Tracker(iou_threshold=0.3)
    tracker.update([face(0, 0)])
    # two candidates for track 1: the better-overlapping one takes it, the other starts track 2
    out = tracker.update([face(30, 0), face(5, 0)])
    assert ids(out) == [2, 1]


def test_iou_threshold() -> None:
    tracker = Tracker(iou_threshold=0.5)
    tracker.update([face(0, 0)])
    # shift 40 px on a 100 px box: IoU = 60 / 140 ≈ 0.43 < 0.5 → new track
    assert ids(tracker.update([face(40, 0)])) == [2]


def test_reset_and_validation() -> None:
    tracker = Tracker()
    tracker.update([face(0, 0)])
    tracker.reset()
    assert tracker.live_tracks == 0 and ids(tracker.update([face(0, 0)])) == [2]
    with pytest.raises(ValueError):
        Tracker(iou_threshold=0)
    with pytest.raises(ValueError):
        Tracker(max_missed=-1)
    with pytest.raises(ValueError):
        SmoothingOptions(min_cutoff=0)
    with pytest.raises(ValueError):
        SmoothingOptions(beta=-1)
    timed = Tracker(smoothing=SmoothingOptions())
    timed.update([face(0, 0)], timestamp=1.0)
    with pytest.raises(ValueError, match="increase"):
        timed.update([face(0, 0)], timestamp=1.0)


# -- smoothing --------------------------------------------------------------------------------------------


def ema_alpha(min_cutoff: float, fps: float) -> float:
    return 1.0 / (1.0 + fps / (2.0 * math.pi * min_cutoff))


def noisy_static_ratio(options: SmoothingOptions, sigma: float, frames: int = 800) -> float:
    """RMS error of smoothed box and keypoints over RMS error of the raw ones, still 100 px face."""
    rng = np.random.default_rng(7)
    tracker = Tracker(smoothing=options)
    truth = np.array([*face(200, 200).box, *(v for n in KEYPOINT_NAMES for v in face(200, 200).keypoints[n])])
    raw_err, smooth_err = [], []
    for i in range(frames):
        dx, dy = rng.normal(0.0, sigma, 2)
        raw = face(200 + dx, 200 + dy)
        (out,) = tracker.update([raw])
        assert out.track_id == 1
        got = np.array([*out.box, *(v for n in KEYPOINT_NAMES for v in out.keypoints[n])])
        if i >= 100:  # past the start-up transient
            raw_err.append(
                np.array([*raw.box, *(v for n in KEYPOINT_NAMES for v in raw.keypoints[n])]) - truth
            )
            smooth_err.append(got - truth)
    return float(np.sqrt(np.mean(np.square(smooth_err))) / np.sqrt(np.mean(np.square(raw_err))))


def test_ema_reduces_white_noise_by_the_known_factor() -> None:
    # beta = 0 is an EMA; on white noise its output variance is alpha / (2 - alpha) of the input's
    alpha = ema_alpha(1.0, 30.0)
    expected = math.sqrt(alpha / (2 - alpha))  # ≈ 0.308
    ratio = noisy_static_ratio(SmoothingOptions(min_cutoff=1.0, beta=0.0, fps=30.0), sigma=1.0)
    assert ratio == pytest.approx(expected, rel=0.08)  # seeds vary by ±6 % at 800 frames


def test_ema_step_response_is_exact() -> None:
    options = SmoothingOptions(min_cutoff=1.0, beta=0.0)
    alpha = ema_alpha(1.0, 30.0)
    tracker = Tracker(smoothing=options)
    tracker.update([face(100, 100)])
    for n in range(1, 6):
        (out,) = tracker.update([face(110, 100)])
        assert 110 - out.box[0] == pytest.approx(10 * (1 - alpha) ** n)
        assert out.box[1] == pytest.approx(100)


def test_default_smoothing_halves_noise_with_bounded_lag() -> None:
    options = SmoothingOptions()
    assert noisy_static_ratio(options, sigma=1.0) < 0.6  # 1 % of the face size: ≈ 0.5
    # a sudden move of 10 % of the face size: within 3 % of it after 3 frames (100 ms at 30 fps)
    tracker = Tracker(smoothing=options)
    for _ in range(30):
        tracker.update([face(100, 100)])
    lag = [110 - tracker.update([face(110, 100)])[0].box[0] for _ in range(5)]
    assert lag[2] < 0.3 and lag[4] < 0.05
    assert all(a >= b >= 0 for a, b in itertools.pairwise(lag))  # no overshoot, monotone
    # a steady move of 2 px/frame (0.6 face sizes / s): lag under 1 px once settled
    tracker = Tracker(smoothing=options)
    for i in range(60):
        (out,) = tracker.update([face(100 + 2 * i, 100)])
    assert 0 < (100 + 2 * 59) - out.box[0] < 1.0


def test_smoothing_keeps_geometry_consistent() -> None:
    tracker = Tracker(smoothing=SmoothingOptions())
    (first,) = tracker.update([face(100, 100)])
    assert first.box == face(100, 100).box  # a new track starts at its detection
    (out,) = tracker.update([face(104, 100, score=0.7)])
    assert out.score == 0.7  # the frame's own score
    cx = (out.box[0] + out.box[2]) / 2
    assert out.roi.center_x == pytest.approx(cx, abs=1e-3)
    assert out.roll_degrees == pytest.approx(0.0, abs=1e-6)  # eyes level before and after


def test_timestamps_set_the_time_step() -> None:
    # the same two frames 1/30 s apart with timestamps equal the default 30 fps clock
    options = SmoothingOptions(min_cutoff=1.0, beta=0.0)
    a, b = Tracker(smoothing=options), Tracker(smoothing=options)
    a.update([face(0, 0)])
    b.update([face(0, 0)], timestamp=5.0)
    (step_a,) = a.update([face(10, 0)])
    (step_b,) = b.update([face(10, 0)], timestamp=5.0 + 1 / 30)
    assert step_a.box == pytest.approx(step_b.box)
    assert step_a.box[0] == pytest.approx(10 * ema_alpha(1.0, 30.0))
    # half a second between frames: the EMA's alpha is that of a 2 fps clock
    c = Tracker(smoothing=options)
    c.update([face(0, 0)], timestamp=0.0)
    assert c.update([face(10, 0)], timestamp=0.5)[0].box[0] == pytest.approx(10 * ema_alpha(1.0, 2.0))
