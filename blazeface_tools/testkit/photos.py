"""The benchmark photo mix: 640×480, 1280×720, 1920×1080 and 12 MP JPEGs made from pip-shipped photos.

    python -m blazeface_tools.testkit.photos   # writes loadtest/results/photos/*.jpg (deterministic)

Each is a canvas of the size named, filled by tiling the committed reference photos (scikit-image's
astronaut, matplotlib's Grace Hopper, PASCAL VOC group photos: see tests/data/photos/LICENSES.md) at a
scale that keeps faces large enough for both models, plus mild sensor-like noise so JPEG entropy
decoding costs what a camera photo's does. Quality 90, 4:2:0, as phones write them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from blazeface_tools import CHECKOUT as REPO_ROOT

SOURCES = REPO_ROOT / "tests" / "data" / "photos"
OUT = REPO_ROOT / "loadtest" / "results" / "photos"
SIZES = {"640x480": (640, 480), "1280x720": (1280, 720), "1920x1080": (1920, 1080), "12mp": (4000, 3000)}
TILES = (
    "astronaut.jpg",
    "grace_hopper.jpg",
    "voc_2008_002506_three_faces.jpg",
    "voc_2008_001322_three_faces.jpg",
)


def make(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tiles = [cv2.imread(str(SOURCES / name)) for name in TILES]
    columns = 2 if width >= 1280 else 1
    rows = 2 if width >= 1280 else 1
    canvas = np.zeros((height, width, 3), np.uint8)
    cell_w, cell_h = width // columns, height // rows
    for index in range(columns * rows):
        tile = tiles[index % len(tiles)]
        scale = min(cell_w / tile.shape[1], cell_h / tile.shape[0])
        resized = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        r, c = divmod(index, columns)
        y = r * cell_h + (cell_h - resized.shape[0]) // 2
        x = c * cell_w + (cell_w - resized.shape[1]) // 2
        canvas[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    noise = rng.normal(0, 3, canvas.shape)
    return np.clip(canvas + noise, 0, 255).astype(np.uint8)


def build() -> dict[str, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seed, (name, (width, height)) in enumerate(SIZES.items()):
        path = OUT / f"{name}.jpg"
        if not path.exists():
            ok, data = cv2.imencode(".jpg", make(width, height, seed), [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise RuntimeError(f"could not encode {name}")
            path.write_bytes(data.tobytes())
        paths[name] = path
    return paths


if __name__ == "__main__":
    for name, path in build().items():
        print(f"{name}: {path.relative_to(REPO_ROOT)} ({path.stat().st_size // 1024} KiB)")
