"""WIDER FACE annotation files (`wider_face_*_bbx_gt.txt`): read and write.

The format, one block per image:

    0--Parade/0_Parade_marchingband_1_849.jpg
    1
    449 330 122 149 0 0 0 0 0 0

a path relative to the image folder, the face count N, then N lines `x y w h blur expression illumination
invalid occlusion pose` (box in pixels, top-left corner and size; six integer attributes). WIDER's own
files write an image with no face as `0` followed by one line of ten zeros; `write_annotations` does the
same so official tools read our files, and `read_annotations` accepts the block with or without it.

Readers of WIDER use `float()` for the box, so boxes that are not whole pixels (our derived images scale
hand-drawn boxes exactly) are written with up to three decimals; whole numbers stay integers.

    annotations = read_annotations(Path("labels.txt"))
    annotations[0].boxes_xyxy()   # (N, 4) float64 x1, y1, x2, y2
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ATTRIBUTES: tuple[str, ...] = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")


@dataclass(frozen=True)
class WiderFace:
    """One labelled face. Attributes follow WIDER's codes (0 = none/typical/unlabelled)."""

    x: float
    y: float
    w: float
    h: float
    blur: int = 0
    expression: int = 0
    illumination: int = 0
    invalid: int = 0  # 1: WIDER marks the label unusable; the AP evaluation ignores such faces
    occlusion: int = 0
    pose: int = 0

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)


@dataclass(frozen=True)
class ImageAnnotation:
    filename: str  # relative to the image folder, '/'-separated as in WIDER
    faces: tuple[WiderFace, ...] = field(default_factory=tuple)

    def boxes_xyxy(self) -> np.ndarray:
        """(N, 4) float64 `x1, y1, x2, y2` pixels."""
        return np.array([f.box_xyxy for f in self.faces], np.float64).reshape(-1, 4)

    def invalid(self) -> np.ndarray:
        """(N,) bool: faces WIDER flags as invalid."""
        return np.array([f.invalid != 0 for f in self.faces], bool)


class WiderFormatError(ValueError):
    """A malformed annotation file; the message names the line."""


def _number(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _face_line(line: str) -> WiderFace:
    parts = line.split()
    if len(parts) < 4:
        raise ValueError(f"expected 'x y w h' and six attributes, got {line!r}")
    x, y, w, h = (_number(p) for p in parts[:4])
    if w < 0 or h < 0:
        raise ValueError(f"negative box size in {line!r}")
    # Some WIDER-style files drop trailing attributes; missing ones read as 0.
    attrs = [int(p) for p in parts[4:10]] + [0] * (len(ATTRIBUTES) - len(parts[4:10]))
    return WiderFace(x, y, w, h, *attrs)


def _is_zero_line(line: str) -> bool:
    parts = line.split()
    try:
        return len(parts) >= 4 and all(float(p) == 0 for p in parts)
    except ValueError:
        return False


def parse_annotations(text: str) -> list[ImageAnnotation]:
    """Annotation blocks from the file's text, in file order."""
    lines = [line.strip() for line in text.splitlines()]
    out: list[ImageAnnotation] = []
    i = 0
    while i < len(lines):
        if not lines[i]:
            i += 1
            continue
        filename = lines[i]
        if i + 1 >= len(lines):
            raise WiderFormatError(f"line {i + 2}: missing the face count for {filename!r}")
        try:
            count = int(lines[i + 1])
        except ValueError:
            raise WiderFormatError(f"line {i + 2}: face count expected, got {lines[i + 1]!r}") from None
        if count < 0:
            raise WiderFormatError(f"line {i + 2}: negative face count {count}")
        i += 2
        faces: list[WiderFace] = []
        for _ in range(count):
            if i >= len(lines):
                raise WiderFormatError(f"line {i + 1}: file ends inside {filename!r} ({count} faces)")
            try:
                faces.append(_face_line(lines[i]))
            except ValueError as exc:
                raise WiderFormatError(f"line {i + 1}: {exc}") from exc
            i += 1
        if count == 0 and i < len(lines) and _is_zero_line(lines[i]):
            i += 1  # WIDER's placeholder line for an image without faces
        out.append(ImageAnnotation(filename, tuple(faces)))
    return out


def read_annotations(path: Path) -> list[ImageAnnotation]:
    return parse_annotations(Path(path).read_text(encoding="utf-8"))


def _fmt(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def format_annotations(annotations: Iterable[ImageAnnotation]) -> str:
    lines: list[str] = []
    for ann in annotations:
        if not ann.filename or ann.filename != ann.filename.strip() or "\n" in ann.filename:
            raise ValueError(f"unusable file name {ann.filename!r}")
        lines += [ann.filename, str(len(ann.faces))]
        for f in ann.faces:
            attrs = (f.blur, f.expression, f.illumination, f.invalid, f.occlusion, f.pose)
            lines.append(" ".join([*(_fmt(v) for v in (f.x, f.y, f.w, f.h)), *(str(a) for a in attrs)]))
        if not ann.faces:
            lines.append(" ".join(["0"] * 10))
    return "\n".join(lines) + "\n"


def write_annotations(path: Path, annotations: Iterable[ImageAnnotation]) -> None:
    Path(path).write_text(format_annotations(annotations), encoding="utf-8")
