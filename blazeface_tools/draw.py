"""Draw detections onto the image they came from (`blazeface detect --draw`).

    path = write_annotated(data, result, Path("drawn/photo.jpg"))   # result: the service's DetectResponse

The service reports pixels of the EXIF-upright image, so the pixels here come from the service's own
`decode` (orientation applied exactly as it applied it), and the copy is written upright, without EXIF:
every viewer then shows the boxes where the faces are.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from service.api.schemas import DetectResponse, FaceOut, Roi
from service.imaging.decode import decode, inspect

# RGB, as `decode` gives the pixels.
BOX_COLOUR = (0, 255, 0)
ROI_COLOUR = (255, 0, 255)
KEYPOINT_COLOURS = {
    "right_eye": (255, 0, 0),
    "left_eye": (0, 0, 255),
    "nose_tip": (255, 255, 0),
    "mouth_center": (0, 255, 255),
    "right_ear_tragion": (255, 128, 0),
    "left_ear_tragion": (0, 128, 255),
}
_SUFFIXES = {"jpeg": (".jpg", ".jpeg"), "png": (".png",)}


def roi_corners(roi: Roi) -> np.ndarray:
    """The ROI square's corners (4×2 pixels): ±size/2 rotated by `angle_degrees` with R(t) in pixel
    coordinates (y down, so positive turns clockwise on screen, as `service/geometry.py` defines it)."""
    t = np.radians(roi.angle_degrees)
    rotation = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    half = roi.size / 2
    square = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    return square @ rotation.T + (roi.center.x, roi.center.y)


def draw_faces(pixels: np.ndarray, faces: Sequence[FaceOut]) -> np.ndarray:
    """A copy of upright RGB `pixels` with each face's box, six keypoints, rotated ROI and score."""
    out = pixels.copy()
    # Lines stay visible when a 12 MP photo is shown shrunk to a screen.
    thickness = max(2, round(max(out.shape[:2]) / 400))
    for face in faces:
        box = face.box
        top_left = (round(box.x1), round(box.y1))
        cv2.rectangle(out, top_left, (round(box.x2), round(box.y2)), BOX_COLOUR, thickness)
        corners = np.round(roi_corners(face.roi)).astype(np.int32)
        cv2.polylines(out, [corners], isClosed=True, color=ROI_COLOUR, thickness=thickness)
        for name, point in face.keypoints:
            cv2.circle(out, (round(point.x), round(point.y)), 2 * thickness, KEYPOINT_COLOURS[name], -1)
        label_at = (top_left[0], max(0, top_left[1] - 2 * thickness))
        cv2.putText(
            out, f"{face.score:.2f}", label_at, cv2.FONT_HERSHEY_SIMPLEX, thickness / 4, BOX_COLOUR, 1
        )
    return out


def annotate(data: bytes, result: DetectResponse) -> tuple[bytes, str]:
    """The image of `data` with `result` drawn on it, encoded, and its format: JPEG (quality 95) for a
    JPEG, lossless PNG for every other type."""
    # The service has decoded this image already, so its own size is the only pixel limit that applies.
    max_pixels = result.image.width * result.image.height
    info = inspect(data, max_pixels=max_pixels)
    pixels = decode(data, max_pixels=max_pixels, info=info).pixels
    drawn = cv2.cvtColor(draw_faces(pixels, result.faces), cv2.COLOR_RGB2BGR)
    fmt = "jpeg" if info.format == "jpeg" else "png"
    ok, encoded = cv2.imencode(
        _SUFFIXES[fmt][0], drawn, [cv2.IMWRITE_JPEG_QUALITY, 95] if fmt == "jpeg" else []
    )
    if not ok:
        raise ValueError(f"OpenCV could not encode a {drawn.shape[1]}×{drawn.shape[0]} {fmt}")
    return encoded.tobytes(), fmt


def write_annotated(data: bytes, result: DetectResponse, target: Path) -> Path:
    """Writes `annotate`'s image at `target` (folders made as needed) and returns where: the format's
    suffix is appended where `target`'s does not name it (`a.webp` → `a.webp.png`), so that no two
    inputs of one folder land on the same name."""
    encoded, fmt = annotate(data, result)
    if target.suffix.lower() not in _SUFFIXES[fmt]:
        target = target.with_name(target.name + _SUFFIXES[fmt][0])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(encoded)
    return target
