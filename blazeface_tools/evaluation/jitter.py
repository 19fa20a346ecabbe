"""Jitter: how much predictions move when the image content moves slightly (BlazeFace paper, §3).

The paper's metric: the root-mean-square difference between the predictions for an image and for
slightly displaced copies of it, normalised by the inter-ocular distance; blending cut it by 30–40 %
against plain NMS. Exact definition here:

- **Shifted copies.** The decoded, upright image's content is translated by a whole number of image
  pixels `(dx, dy)` on an unchanged canvas (the vacated border repeats the edge pixels, `fill="edge"`,
  so no new hard edge appears; `"constant"` fills black), so the letterbox is unchanged and the content
  moves by `dx * S / max(w, h)` model-input pixels. Shifts are chosen in model-input pixels — magnitudes
  1..8 along +x, +y and the diagonal by default — and rounded to whole image pixels (at least 1), so
  they stay translations without resampling; the realised input shift is recorded. The anchor strides
  are 8 and 16 input px (short), 4 (full) and 16 and 32 (back), so 1..8 spans sub-anchor offsets to one
  to two strides (half a stride at most for back).
  Copies (and the reference) go to the detector as lossless BMP, so no JPEG re-encoding enters
  the difference; `preprocess="fast"` on them therefore means the area resize, without a DCT-scaled
  decode.
- **Matching.** Shifted detections are moved back by `(-dx, -dy)`; each reference face (the unshifted
  image's detection, same model and suppression) is paired one-to-one with the shifted detection of
  highest IoU, greedily, if IoU ≥ `min_iou` (0.5). Unpaired reference faces count as `missed`.
- **Error.** Eight points per face: the box's top-left and bottom-right corners and the six keypoints.
  A point's error is its Euclidean displacement divided by the reference face's inter-ocular distance
  (right-eye to left-eye keypoint). Jitter = sqrt(mean of squared errors) over all points of all
  pairs (pooled over faces, shifts and photos); `rms_box` and `rms_keypoints` restrict it to the
  corners or to the keypoints. Per coordinate, divide by √2.
- **Reduction** of blending against NMS = 1 − jitter(blend) / jitter(nms).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from service.decoding.detections import pairwise_iou
from service.specs import KEYPOINT_NAMES, get_spec

if TYPE_CHECKING:  # the metric needs no model; only `measure_jitter` runs one
    from service.pipeline import Detector
    from service.postprocess import Face

POINT_NAMES: tuple[str, ...] = ("box_top_left", "box_bottom_right", *KEYPOINT_NAMES)
_RIGHT_EYE = POINT_NAMES.index("right_eye")
_LEFT_EYE = POINT_NAMES.index("left_eye")
_BOX_POINTS = slice(0, 2)
_KEYPOINTS = slice(2, None)

Fill = Literal["edge", "constant"]
DEFAULT_DIRECTIONS: tuple[tuple[int, int], ...] = ((1, 0), (0, 1), (1, 1))

# -- the metric (pure numpy) ----------------------------------------------------------------------------


def face_points(faces: Sequence[Face]) -> np.ndarray:
    """(N, 8, 2) float64: box corners then keypoints, `POINT_NAMES` order."""
    rows = [
        [face.box[:2], face.box[2:], *(face.keypoints[name] for name in KEYPOINT_NAMES)] for face in faces
    ]
    return np.array(rows, np.float64).reshape(-1, len(POINT_NAMES), 2)


def boxes_of(points: np.ndarray) -> np.ndarray:
    """(N, 4) `x1, y1, x2, y2` from `face_points` rows."""
    return points[:, _BOX_POINTS].reshape(-1, 4)


def inter_ocular(points: np.ndarray) -> np.ndarray:
    """(N,) distance between the right-eye and left-eye keypoints."""
    return np.linalg.norm(points[:, _RIGHT_EYE] - points[:, _LEFT_EYE], axis=-1)


def match_by_iou(ref_boxes: np.ndarray, boxes: np.ndarray, min_iou: float = 0.5) -> list[tuple[int, int]]:
    """One-to-one (ref index, other index) pairs, highest IoU first, each with IoU ≥ `min_iou`."""
    if len(ref_boxes) == 0 or len(boxes) == 0:
        return []
    overlaps = pairwise_iou(ref_boxes, boxes)
    pairs: list[tuple[int, int]] = []
    used_ref: set[int] = set()
    used_other: set[int] = set()
    # Stable sort of the flattened matrix: equal IoUs go to the lower (ref, other) indices first.
    for flat in np.argsort(-overlaps, axis=None, kind="stable"):
        r, o = divmod(int(flat), overlaps.shape[1])
        if overlaps[r, o] < np.float32(min_iou):
            break
        if r in used_ref or o in used_other:
            continue
        pairs.append((r, o))
        used_ref.add(r)
        used_other.add(o)
    return pairs


def normalised_errors(ref_points: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, P) Euclidean displacement of each point divided by the reference face's inter-ocular distance.

    A reference face whose eyes coincide has no scale: its row is NaN (callers drop it).
    """
    iod = inter_ocular(ref_points)
    dist = np.linalg.norm(np.asarray(points, np.float64) - ref_points, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(iod[:, None] > 0, dist / iod[:, None], np.nan)


def rms(values: np.ndarray) -> float:
    """Root mean square; NaN for no values."""
    values = np.asarray(values, np.float64)
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")


@dataclass(frozen=True)
class JitterStats:
    rms: float  # all eight points, / IOD
    rms_box: float  # the two box corners only
    rms_keypoints: float  # the six keypoints only
    pairs: int  # matched (reference face, shifted copy) pairs
    missed: int  # reference faces with no match in a shifted copy
    extra: int  # shifted-copy detections matched to no reference face
    reference_faces: int  # faces in the unshifted images

    def as_dict(self) -> dict[str, float | int | None]:
        def num(v: float) -> float | None:
            return None if np.isnan(v) else round(v, 5)

        return {
            "rms": num(self.rms),
            "rms_box": num(self.rms_box),
            "rms_keypoints": num(self.rms_keypoints),
            "pairs": self.pairs,
            "missed": self.missed,
            "extra": self.extra,
            "reference_faces": self.reference_faces,
        }


@dataclass
class JitterAccumulator:
    """Collects normalised errors over images and shifts; `stats()` pools them."""

    errors: list[np.ndarray] = field(default_factory=list)  # (n, 8) rows
    missed: int = 0
    extra: int = 0
    reference_faces: int = 0

    def add_reference(self, ref_points: np.ndarray) -> None:
        self.reference_faces += len(ref_points)

    def add_copy(self, ref_points: np.ndarray, points: np.ndarray, min_iou: float = 0.5) -> None:
        """One shifted copy's faces, already moved back into the reference's coordinates."""
        pairs = match_by_iou(boxes_of(ref_points), boxes_of(points), min_iou)
        self.missed += len(ref_points) - len(pairs)
        self.extra += len(points) - len(pairs)
        if pairs:
            r, o = (np.array(idx) for idx in zip(*pairs, strict=True))
            err = normalised_errors(ref_points[r], points[o])
            self.errors.append(err[~np.isnan(err).any(axis=1)])

    def stats(self) -> JitterStats:
        err = np.concatenate(self.errors) if self.errors else np.zeros((0, len(POINT_NAMES)))
        return JitterStats(
            rms=rms(err),
            rms_box=rms(err[:, _BOX_POINTS]),
            rms_keypoints=rms(err[:, _KEYPOINTS]),
            pairs=len(err),
            missed=self.missed,
            extra=self.extra,
            reference_faces=self.reference_faces,
        )

    def merge(self, other: JitterAccumulator) -> None:
        self.errors += other.errors
        self.missed += other.missed
        self.extra += other.extra
        self.reference_faces += other.reference_faces


def reduction(blend: float, nms: float) -> float:
    """Relative jitter reduction of blending against NMS: 1 − blend / nms (NaN if undefined)."""
    return 1.0 - blend / nms if nms > 0 and np.isfinite(blend) and np.isfinite(nms) else float("nan")


# -- shifted copies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shift:
    dx: int  # image pixels, content moves right for dx > 0
    dy: int  # image pixels, content moves down for dy > 0
    input_dx: float  # the same in model-input pixels (after the letterbox)
    input_dy: float


def plan_shifts(
    width: int,
    height: int,
    input_size: int,
    magnitudes: Iterable[int],
    directions: Iterable[tuple[int, int]] = DEFAULT_DIRECTIONS,
) -> list[Shift]:
    """Integer image-pixel shifts that move the content ≈ `m` model-input pixels along each direction."""
    per_input_px = max(width, height) / input_size  # image pixels per input pixel
    shifts: list[Shift] = []
    for m in magnitudes:
        if m <= 0:
            raise ValueError(f"shift magnitudes must be positive, got {m}")
        step = max(1, round(m * per_input_px))
        for ux, uy in directions:
            dx, dy = ux * step, uy * step
            shifts.append(Shift(dx, dy, dx / per_input_px, dy / per_input_px))
    return shifts


def shift_image(pixels: np.ndarray, dx: int, dy: int, fill: Fill = "edge") -> np.ndarray:
    """The content translated by (dx, dy) pixels on the same canvas; the vacated border filled."""
    h, w = pixels.shape[:2]
    if abs(dx) >= w or abs(dy) >= h:
        raise ValueError(f"shift ({dx}, {dy}) leaves nothing of a {w}×{h} image")
    pad = ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))) + ((0, 0),) * (pixels.ndim - 2)
    padded = np.pad(pixels, pad, mode="edge" if fill == "edge" else "constant")
    top, left = max(-dy, 0), max(-dx, 0)
    return np.ascontiguousarray(padded[top : top + h, left : left + w])


def encode_bmp(rgb: np.ndarray) -> bytes:
    """Lossless, so the pixels the detector sees are exactly these."""
    ok, buf = cv2.imencode(".bmp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("BMP encoding failed")
    return buf.tobytes()


# -- running a detector --------------------------------------------------------------------------------


@dataclass(frozen=True)
class JitterConfig:
    shifts: tuple[int, ...] = tuple(range(1, 9))  # magnitudes, model-input pixels
    directions: tuple[tuple[int, int], ...] = DEFAULT_DIRECTIONS
    min_iou: float = 0.5
    fill: Fill = "edge"
    preprocess: str = "exact"
    min_score: float | None = None  # None: the model's own threshold
    max_pixels: int = 100_000_000


def measure_jitter(
    detector: Detector,
    photos: Sequence[tuple[str, bytes]],
    model: str,
    suppressions: Sequence[str] = ("blend", "nms"),
    config: JitterConfig | None = None,
) -> dict[str, dict[str, JitterStats]]:
    """{suppression: {photo name | "all": stats}} for one model over (name, bytes) photos."""
    from service.imaging.decode import decode  # the project's decoder: same EXIF handling as the service

    config = config or JitterConfig()
    input_size = get_spec(model).input_size
    totals = {s: JitterAccumulator() for s in suppressions}
    out: dict[str, dict[str, JitterStats]] = {s: {} for s in suppressions}
    for name, data in photos:
        pixels = decode(data, max_pixels=config.max_pixels).pixels
        h, w = pixels.shape[:2]
        shifts = plan_shifts(w, h, input_size, config.shifts, config.directions)
        # Bounded memory on 12 MP photos: a few copies per detector call.
        chunk = max(1, min(8, 200_000_000 // (2 * pixels.nbytes)))
        options = {"model": model, "preprocess": config.preprocess, "min_score": config.min_score}
        reference = encode_bmp(pixels)
        for suppression in suppressions:
            acc = JitterAccumulator()
            ref = face_points(detector.detect(reference, suppression=suppression, **options))
            acc.add_reference(ref)
            for start in range(0, len(shifts), chunk):
                part = shifts[start : start + chunk]
                copies = [encode_bmp(shift_image(pixels, s.dx, s.dy, config.fill)) for s in part]
                for s, faces in zip(
                    part, detector.detect_many(copies, suppression=suppression, **options), strict=True
                ):
                    points = face_points(faces) - np.array([s.dx, s.dy], np.float64)
                    acc.add_copy(ref, points, config.min_iou)
            out[suppression][name] = acc.stats()
            totals[suppression].merge(acc)
    for suppression in suppressions:
        out[suppression]["all"] = totals[suppression].stats()
    return out
