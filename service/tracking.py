"""Video mode: stable track ids for per-frame faces, and optional temporal smoothing (pure numpy).

    tracker = Tracker(iou_threshold=0.3, max_missed=5, smoothing=SmoothingOptions())
    for frame in frames:
        tracked = tracker.update(detector.detect(frame), timestamp=t)   # list[TrackedFace]

- **Association**: every live track keeps the raw (unsmoothed) box of its last detection. Each frame,
  track/detection pairs are taken greedily by IoU, highest first, one-to-one, while IoU ≥
  `iou_threshold`. Greedy rather than optimal assignment: at a few faces per frame they agree except in
  contrived crowds, and it needs nothing beyond numpy.
- **Ids**: an unmatched detection starts a new track; ids count up from 1 and are never reused.
- **Expiry**: a track survives up to `max_missed` consecutive frames without a match (and can be
  matched again within them); the next miss ends it. Missed tracks are not reported for those frames.
- **Smoothing** (`SmoothingOptions`): a One-Euro filter (Casiez, Roussel, Vogel, CHI 2012) on each of
  the 16 coordinates (box corners and six keypoints), state per track. Its cutoff rises with speed,
  `cutoff = min_cutoff + beta * |speed|`, so a still face is smoothed hard and a moving one follows
  quickly. As in MediaPipe's `OneEuroFilter` with value scaling, speed is measured in face sizes per
  second (the filtered box's mean side), so the options do not depend on image resolution. With
  `beta = 0` it is an exponential moving average with `alpha = 1 / (1 + fps / (2π min_cutoff))`.
  Roll angle and crop ROI are recomputed from the smoothed points; the score stays the frame's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from service.decoding.detections import Detections, pairwise_iou
from service.geometry import crop_rois
from service.postprocess import Face
from service.specs import KEYPOINT_NAMES


@dataclass(frozen=True)
class SmoothingOptions:
    """One-Euro filter settings, speeds in face sizes per second.

    Defaults tuned on synthetic 30 fps sequences of a 100 px face (`tests/test_tracking.py` pins them):
    still-face noise of 1 % of the face size comes out ≈ 0.5× as large, a sudden 10 % move is followed
    to within 3 % of the step after 3 frames (100 ms), and a face moving 0.6 sizes/s lags ≈ 0.6 % of its
    size. Raise `beta` for less lag, lower it for smoother output. (MediaPipe's pose-landmark filter uses
    min_cutoff 0.05, beta 80, derivate_cutoff 1 with the same size scaling: less smoothing, less lag.)

    Example: ``SmoothingOptions(min_cutoff=1.0, beta=0.0)`` is a plain EMA (alpha ≈ 0.17 at 30 fps).
    """

    min_cutoff: float = 0.3  # Hz: cutoff of a still face; lower is smoother and slower
    beta: float = 20.0  # Hz per (face size / s): how fast the cutoff rises with speed; 0 = plain EMA
    derivative_cutoff: float = 1.0  # Hz: low-pass on the speed estimate itself
    fps: float = 30.0  # frame rate assumed when `update` gets no timestamp

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "derivative_cutoff", "fps"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive, got {value}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise ValueError(f"beta must be >= 0, got {self.beta}")


@dataclass(frozen=True)
class TrackedFace(Face):
    """A `Face` (smoothed, if smoothing is on) with the id of its track."""

    track_id: int


def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    tau = 1.0 / (2.0 * np.pi * np.asarray(cutoff, np.float64))
    return 1.0 / (1.0 + tau / dt)


@dataclass
class _OneEuro:
    """One-Euro state for a vector of coordinates (all filtered independently)."""

    options: SmoothingOptions
    value: np.ndarray
    speed: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.speed = np.zeros_like(self.value)

    def update(self, raw: np.ndarray, dt: float, scale: float) -> np.ndarray:
        opts = self.options
        # Speed from the previous *filtered* value, as the reference implementation and MediaPipe do.
        speed = (raw - self.value) / dt / scale
        self.speed = self.speed + _alpha(opts.derivative_cutoff, dt) * (speed - self.speed)
        cutoff = opts.min_cutoff + opts.beta * np.abs(self.speed)
        self.value = self.value + _alpha(cutoff, dt) * (raw - self.value)
        return self.value


def _coords(face: Face) -> np.ndarray:
    """(16,) float64: x1, y1, x2, y2, then each keypoint's x, y."""
    return np.array([*face.box, *(v for name in KEYPOINT_NAMES for v in face.keypoints[name])], np.float64)


def _box_scale(coords: np.ndarray) -> float:
    return max(float((coords[2] - coords[0] + coords[3] - coords[1]) / 2.0), 1e-6)


@dataclass
class _Track:
    track_id: int
    raw_box: np.ndarray  # last matched detection's box, for association
    missed: int = 0
    last_time: float = 0.0
    filter: _OneEuro | None = None


class Tracker:
    """Per-stream state: call `update` once per frame, in order. Not thread-safe (one stream, one owner)."""

    def __init__(
        self, iou_threshold: float = 0.3, max_missed: int = 5, smoothing: SmoothingOptions | None = None
    ) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.smoothing = smoothing
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_time: float | None = None

    @property
    def live_tracks(self) -> int:
        return len(self._tracks)

    def reset(self) -> None:
        """Forget every track (ids keep counting up, so old ids are never reused)."""
        self._tracks = []
        self._last_time = None

    def update(self, faces: Sequence[Face], timestamp: float | None = None) -> list[TrackedFace]:
        """This frame's faces with track ids, in the input order. `timestamp` in seconds, increasing;
        without it frames are `1 / smoothing.fps` apart."""
        now = self._clock(timestamp)
        coords = [_coords(f) for f in faces]
        assigned = self._associate(np.array([c[:4] for c in coords]).reshape(-1, 4))

        out: list[TrackedFace] = []
        matched: set[int] = set()
        for i, face in enumerate(faces):
            track = assigned.get(i)
            if track is None:
                track = _Track(self._next_id, coords[i][:4], last_time=now)
                self._next_id += 1
                self._tracks.append(track)
            matched.add(track.track_id)
            out.append(self._emit(face, coords[i], track, now))
        for track in self._tracks:
            if track.track_id not in matched:
                track.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return out

    def _clock(self, timestamp: float | None) -> float:
        if timestamp is None:
            fps = self.smoothing.fps if self.smoothing else SmoothingOptions().fps
            now = (self._last_time + 1.0 / fps) if self._last_time is not None else 0.0
        else:
            now = float(timestamp)
            if self._last_time is not None and now <= self._last_time:
                raise ValueError(f"timestamps must increase: {now} after {self._last_time}")
        self._last_time = now
        return now

    def _associate(self, boxes: np.ndarray) -> dict[int, _Track]:
        """Greedy one-to-one IoU matching of detections (rows of `boxes`) to live tracks."""
        if not self._tracks or len(boxes) == 0:
            return {}
        overlaps = pairwise_iou(boxes, np.stack([t.raw_box for t in self._tracks]))
        assigned: dict[int, _Track] = {}
        taken: set[int] = set()
        for flat in np.argsort(-overlaps, axis=None, kind="stable"):
            d, t = divmod(int(flat), overlaps.shape[1])
            if overlaps[d, t] < np.float32(self.iou_threshold):
                break
            if d in assigned or t in taken:
                continue
            assigned[d] = self._tracks[t]
            taken.add(t)
        return assigned

    def _emit(self, face: Face, raw: np.ndarray, track: _Track, now: float) -> TrackedFace:
        dt = now - track.last_time
        track.raw_box = raw[:4]
        track.missed = 0
        track.last_time = now
        if self.smoothing is None:
            return TrackedFace(
                face.score, face.box, face.keypoints, face.roll_degrees, face.roi, track_id=track.track_id
            )
        if track.filter is None or dt <= 0:
            track.filter = _OneEuro(self.smoothing, raw.copy())
            value = raw
        else:
            value = track.filter.update(raw, dt, _box_scale(track.filter.value))
        keypoints = value[4:].reshape(-1, 2)
        roi = crop_rois(
            Detections(
                np.array([face.score], np.float32),
                value[None, :4].astype(np.float32),
                keypoints[None].astype(np.float32),
            )
        )[0]
        return TrackedFace(
            score=face.score,
            box=(float(value[0]), float(value[1]), float(value[2]), float(value[3])),
            keypoints={
                name: (float(x), float(y)) for name, (x, y) in zip(KEYPOINT_NAMES, keypoints, strict=True)
            },
            roll_degrees=roi.angle_degrees,
            roi=roi,
            track_id=track.track_id,
        )
