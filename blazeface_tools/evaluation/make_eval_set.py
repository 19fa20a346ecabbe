"""Build the labelled evaluation set in tests/data/eval/ from dlib's face set (run by hand, not by tests).

    .venv/bin/python -m blazeface_tools.evaluation.make_eval_set /work/shared/data/dlib-faces

Writes `images/dlib/` (byte copies of the 10 photos), `images/lowres/` (each labelled photo resized
to 40 %), `images/grid/` (two 2×2 tilings at full resolution), `source/` (dlib's two XML files, as
shipped) and `labels.txt` (WIDER FACE format). Boxes of derived images are the hand-drawn boxes mapped
through the same resize / offset, so they are as exact as the originals; nothing is re-labelled.
Deterministic: same source → same files (OpenCV's JPEG encoder at a fixed quality).
"""

from __future__ import annotations

import argparse
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from blazeface_tools import CHECKOUT
from blazeface_tools.evaluation.wider import ImageAnnotation, WiderFace, write_annotations

HERE = CHECKOUT / "tests" / "data" / "eval"

LOWRES_SCALE = 0.4  # 37–109 px faces → 15–44 px: most land in the `hard` (< 25 px) bucket
GRIDS = {
    "grid_training_2x2.jpg": ["2007_007763.jpg", "2008_002079.jpg", "2008_001009.jpg", "2008_001322.jpg"],
    "grid_testing_2x2.jpg": ["2008_002470.jpg", "2008_002506.jpg", "2008_004176.jpg", "2008_007676.jpg"],
}
NEGATIVES = ["dogs.jpg"]  # no human face: every detection there is a false positive
JPEG_QUALITY = 90
BACKGROUND = 128  # grid canvas: mid grey, no texture that could look like a face


def dlib_boxes(source: Path) -> dict[str, list[tuple[int, int, int, int]]]:
    """file → [(left, top, width, height)] from dlib's training.xml and testing.xml, file order."""
    out: dict[str, list[tuple[int, int, int, int]]] = {}
    for name in ("training.xml", "testing.xml"):
        for image in ET.parse(source / name).getroot().iter("image"):
            boxes = [
                (int(b.get("left", 0)), int(b.get("top", 0)), int(b.get("width", 0)), int(b.get("height", 0)))
                for b in image.iter("box")
            ]
            out.setdefault(image.get("file", ""), []).extend(boxes)
    return out


def faces(boxes: list[tuple[float, float, float, float]]) -> tuple[WiderFace, ...]:
    # dlib records no WIDER attributes: all 0 (WIDER's "typical"/"none"), none invalid.
    return tuple(WiderFace(x, y, w, h) for x, y, w, h in boxes)


def save_jpeg(path: Path, bgr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"could not encode {path}")
    path.write_bytes(buf.tobytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="dlib-faces folder (photos + training/testing.xml)")
    source = parser.parse_args().source
    labelled = dlib_boxes(source)
    images = HERE / "images"
    shutil.rmtree(images, ignore_errors=True)
    (HERE / "source").mkdir(exist_ok=True)
    for name in ("training.xml", "testing.xml"):
        shutil.copyfile(source / name, HERE / "source" / name)

    annotations: list[ImageAnnotation] = []
    # 1. originals, byte copies
    (images / "dlib").mkdir(parents=True)
    for name in sorted(labelled) + NEGATIVES:
        shutil.copyfile(source / name, images / "dlib" / name)
        boxes = [(float(x), float(y), float(w), float(h)) for x, y, w, h in labelled.get(name, [])]
        annotations.append(ImageAnnotation(f"dlib/{name}", faces(boxes)))

    # 2. low resolution: same framing, fewer pixels per face
    for name in sorted(labelled):
        bgr = cv2.imread(str(source / name), cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        nw, nh = round(w * LOWRES_SCALE), round(h * LOWRES_SCALE)
        # INTER_AREA maps pixel edges linearly (x' = x * nw / w), so boxes scale by the same per-axis factor.
        sx, sy = nw / w, nh / h
        save_jpeg(images / "lowres" / name, cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA))
        boxes = [(x * sx, y * sy, bw * sx, bh * sy) for x, y, bw, bh in labelled[name]]
        annotations.append(ImageAnnotation(f"lowres/{name}", faces(boxes)))

    # 3. 2×2 grids at full resolution: same pixels per face, half the size relative to the image
    for grid_name, members in GRIDS.items():
        tiles = [cv2.imread(str(source / m), cv2.IMREAD_COLOR) for m in members]
        cell_w = max(t.shape[1] for t in tiles)
        cell_h = max(t.shape[0] for t in tiles)
        canvas = np.full((2 * cell_h, 2 * cell_w, 3), BACKGROUND, np.uint8)
        grid_boxes: list[tuple[float, float, float, float]] = []
        for k, (member, tile) in enumerate(zip(members, tiles, strict=True)):
            th, tw = tile.shape[:2]
            ox = (k % 2) * cell_w + (cell_w - tw) // 2
            oy = (k // 2) * cell_h + (cell_h - th) // 2
            canvas[oy : oy + th, ox : ox + tw] = tile
            grid_boxes += [(x + ox, y + oy, bw, bh) for x, y, bw, bh in labelled[member]]
        save_jpeg(images / "grid" / grid_name, canvas)
        annotations.append(ImageAnnotation(f"grid/{grid_name}", faces(grid_boxes)))

    write_annotations(HERE / "labels.txt", annotations)
    total = sum(len(a.faces) for a in annotations)
    print(f"{len(annotations)} images, {total} labelled faces → {HERE / 'labels.txt'}")


if __name__ == "__main__":
    main()
