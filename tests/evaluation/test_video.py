"""Video-mode jitter: the metric on synthetic tracks with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from blazeface_tools.evaluation.video import VideoJitter, _track_jitter


def track(offsets: list[float], iod: float = 40.0) -> list[np.ndarray]:
    """8 points per frame (box corners, eyes iod apart, …), all moved right by each offset."""
    base = np.array(
        [[0, 0], [100, 100], [30, 40], [30 + iod, 40], [50, 60], [50, 80], [10, 50], [90, 50]], float
    )
    return [base + np.array([dx, 0.0]) for dx in offsets]


def test_alternating_offsets_give_their_amplitude_over_iod() -> None:
    # ±2 px about the mean on every point, IOD 40 → 0.05
    value, tracks = _track_jitter({1: track([2, -2] * 10)}, min_frames=10)
    assert tracks == 1
    assert value == pytest.approx(2 / 40)


def test_a_still_track_has_no_jitter_and_short_tracks_are_left_out() -> None:
    value, tracks = _track_jitter({1: track([0.0] * 12), 2: track([5, -5])}, min_frames=6)
    assert (value, tracks) == (0.0, 1)
    assert np.isnan(_track_jitter({}, min_frames=1)[0])


def test_reduction() -> None:
    assert VideoJitter(raw=0.04, smoothed=0.01, tracks=1, short_tracks=0).reduction == pytest.approx(0.75)
