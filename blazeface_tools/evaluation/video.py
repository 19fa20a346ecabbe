"""Video-mode stability: jitter of tracked faces over a still scene, with and without smoothing.

A camera pointed at still faces still sees each frame differently (sensor noise); the detector's
answers wobble, and temporal smoothing should remove most of that wobble. The synthetic clip: one photo
repeated `frames` times, each frame with fresh Gaussian noise (σ in grey levels), passed losslessly.
Jitter is the paper's normalisation: RMS over frames of each face's 8 points (box corners and six
keypoints) about their mean over the clip, divided by the mean inter-ocular distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from blazeface_tools.evaluation.jitter import encode_bmp, face_points, inter_ocular
from service.imaging.decode import decode
from service.pipeline import DEFAULT_MAX_PIXELS, Detector
from service.tracking import SmoothingOptions, TrackedFace, Tracker


@dataclass(frozen=True)
class VideoJitter:
    raw: float
    smoothed: float
    tracks: int  # faces tracked through at least half the clip
    short_tracks: int  # ids seen in fewer than half the frames: detections that flicker in and out

    @property
    def reduction(self) -> float:
        return 1.0 - self.smoothed / self.raw if self.raw > 0 else 0.0


def _track_jitter(history: dict[int, list[np.ndarray]], min_frames: int) -> tuple[float, int]:
    squares: list[np.ndarray] = []
    for points in history.values():
        if len(points) < min_frames:
            continue
        stacked = np.stack(points)  # (T, 8, 2)
        iod = float(inter_ocular(stacked).mean())
        squares.append((np.linalg.norm(stacked - stacked.mean(axis=0), axis=-1) / iod) ** 2)
    if not squares:
        return float("nan"), 0
    return float(np.sqrt(np.concatenate([s.ravel() for s in squares]).mean())), len(squares)


def video_jitter(
    detector: Detector,
    photo: bytes,
    *,
    model: str = "short",
    frames: int = 60,
    noise_sigma: float = 4.0,
    smoothing: SmoothingOptions | None = None,
    seed: int = 0,
) -> VideoJitter:
    rng = np.random.default_rng(seed)
    pixels = decode(photo, max_pixels=DEFAULT_MAX_PIXELS).pixels.astype(np.float32)
    raw_tracker, smooth_tracker = Tracker(), Tracker(smoothing=smoothing or SmoothingOptions())
    raw_history: dict[int, list[np.ndarray]] = {}
    smooth_history: dict[int, list[np.ndarray]] = {}
    for _ in range(frames):
        noisy = np.clip(pixels + rng.normal(0, noise_sigma, pixels.shape), 0, 255).astype(np.uint8)
        faces = detector.detect(encode_bmp(noisy), model=model, preprocess="exact")
        for tracker, history in ((raw_tracker, raw_history), (smooth_tracker, smooth_history)):
            tracked: list[TrackedFace] = tracker.update(faces)
            for face, points in zip(tracked, face_points(tracked), strict=True):
                history.setdefault(face.track_id, []).append(points)
    raw, tracks = _track_jitter(raw_history, frames // 2)
    smoothed, _ = _track_jitter(smooth_history, frames // 2)
    return VideoJitter(raw=raw, smoothed=smoothed, tracks=tracks, short_tracks=len(raw_history) - tracks)
