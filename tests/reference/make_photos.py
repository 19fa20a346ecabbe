"""Build the test photo set in ``tests/data/photos/`` (deterministic; run in ``.venv-mediapipe``).

Inputs are real photos only: scikit-image's and matplotlib's bundled sample images (from the pinned pip
packages) and three PASCAL VOC photos from dlib's face set, kept in ``tests/data/dlib/``. Every input is
checked against a pinned sha256, every random draw comes from one seeded generator and every file is
encoded by OpenCV with explicit parameters, so a rebuild with the pinned packages writes the same bytes.

Usage: ``python tests/reference/make_photos.py`` (``bash tests/reference/rebuild.sh`` does it all).
"""

from __future__ import annotations

import functools
import hashlib
import io
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
PHOTOS_DIR = REPO / "tests" / "data" / "photos"
DLIB_DIR = REPO / "tests" / "data" / "dlib"
SEED = 20_240_601
JPEG_QUALITY = 90
JPEG_QUALITY_12MP = 85  # keeps the 12 MP file at a couple of MB

Image = np.ndarray  # uint8, HxWx3 BGR (or HxW grey, HxWx4 BGRA where said)


# --- inputs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One input photo: where it comes from, its pinned hash and its licence (for LICENSES.md)."""

    key: str
    origin: str
    sha256: str
    licence: str


SOURCES: dict[str, Source] = {
    s.key: s
    for s in (
        Source(
            "astronaut",
            "scikit-image `skimage/data/astronaut.png` (Eileen Collins, NASA Great Images database)",
            "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
            "Public domain (NASA photograph; scikit-image: 'No known copyright restrictions, released into "
            "the public domain').",
        ),
        Source(
            "grace_hopper",
            "matplotlib `mpl-data/sample_data/grace_hopper.jpg` (its JPEG comment: Wikimedia Commons "
            "File:Grace_Hopper.jpg), the official 1984 portrait of Commodore Grace M. Hopper, USNR",
            "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
            "Public domain: an official U.S. Navy photograph (U.S. Naval History and Heritage Command), a "
            "work of the U.S. federal government (17 U.S.C. § 105).",
        ),
        Source(
            "chelsea",
            "scikit-image `skimage/data/chelsea.png` (Chelsea the cat, photo by Stefan van der Walt)",
            "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
            "CC0 (scikit-image: 'No copyright restrictions. CC0 by the photographer').",
        ),
        Source(
            "coffee",
            "scikit-image `skimage/data/coffee.png` (photo by Rachel Michetti, Pikolo Espresso Bar)",
            "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
            "CC0 (scikit-image: 'No copyright restrictions. CC0 by the photographer').",
        ),
        *(
            Source(
                f"voc_{stem}",
                f"PASCAL VOC 2011 `{stem}.jpg`, as shipped in dlib's `examples/faces/` (commit 3d40bf57); "
                f"byte copy in `tests/data/dlib/{stem}.jpg`",
                digest,
                "PASCAL VOC terms: research use; credit the PASCAL VOC challenge and the Flickr owners "
                "(see tests/data/dlib/README.md).",
            )
            for stem, digest in (
                ("2008_002506", "ede6804edf0ec005144ffe7f0f2b56bd2aa1d21beee79d29f72cb16ead19a447"),
                ("2008_001322", "2ea5a60f5347baab8da6eccce43b0320d63da1368d7710fb15cbff8a790bc626"),
                ("2008_002470", "14b543e3ac55b497aaaba9dc03a39be04c8ae670851b3f78f9f5adb08295d780"),
            )
        ),
    )
}


def source_path(key: str) -> Path:
    if key.startswith("voc_"):
        return DLIB_DIR / f"{key.removeprefix('voc_')}.jpg"
    if key == "grace_hopper":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    import skimage.data

    return Path(skimage.data.__file__).parent / f"{key}.png"


@functools.cache
def source_bytes(key: str) -> bytes:
    data = source_path(key).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCES[key].sha256:
        # A different package version may ship a different file: the references would silently move.
        raise SystemExit(f"{source_path(key)}: sha256 {digest} != pinned {SOURCES[key].sha256}")
    return data


@functools.cache
def load(key: str) -> Image:
    """Decoded once per source (libpng warns about scikit-image's sRGB profiles on every decode); read-only
    because the cached array is shared by every photo made from it."""
    img = cv2.imdecode(np.frombuffer(source_bytes(key), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, key
    img.setflags(write=False)
    return img


# --- encoding -----------------------------------------------------------------------------------------


def encode_jpeg(img: Image, quality: int = JPEG_QUALITY) -> bytes:
    # Explicit baseline, non-optimised settings so the bytes depend only on OpenCV's libjpeg build.
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        quality,
        cv2.IMWRITE_JPEG_OPTIMIZE,
        0,
        cv2.IMWRITE_JPEG_PROGRESSIVE,
        0,
    ]
    ok, buf = cv2.imencode(".jpg", img, params)
    assert ok
    return buf.tobytes()


def encode_png(img: Image) -> bytes:
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    return buf.tobytes()


def exif_orientation_segment(orientation: int) -> bytes:
    """A minimal APP1 Exif segment: big-endian TIFF header, IFD0 holding only Orientation (0x0112)."""
    ifd_entry = struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)  # SHORT, count 1, value left-justified
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) + ifd_entry + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Put an Exif APP1 right after SOI, as cameras write it; OpenCV's JFIF APP0 is dropped (Exif and JFIF
    both want to be the first segment, and camera files carry Exif only)."""
    assert jpeg[:2] == b"\xff\xd8"
    rest = jpeg[2:]
    if rest[:2] == b"\xff\xe0":
        (length,) = struct.unpack(">H", rest[2:4])
        rest = rest[2 + length :]
    return jpeg[:2] + exif_orientation_segment(orientation) + rest


# --- image helpers ------------------------------------------------------------------------------------


def resize(img: Image, scale: float) -> Image:
    h, w = img.shape[:2]
    size = (round(w * scale), round(h * scale))
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def crop(img: Image, x1: int, y1: int, x2: int, y2: int) -> Image:
    h, w = img.shape[:2]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h, (x1, y1, x2, y2, w, h)
    return img[y1:y2, x1:x2].copy()


def background(rng: np.random.Generator, height: int, width: int) -> Image:
    """Blurred coloured noise: a neutral, textured canvas (flat grey would make tiles unrealistically
    easy to separate, and strong texture could itself trigger detections)."""
    noise = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    smooth = cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.addWeighted(smooth, 0.35, np.full_like(smooth, 128), 0.65, 0)


def paste(canvas: Image, tile: Image, x: int, y: int) -> None:
    h, w = tile.shape[:2]
    canvas[y : y + h, x : x + w] = tile


# Head-and-shoulders crops (x1, y1, x2, y2) of single faces, about 2.3x the face size, so a tile is
# mostly face: the short-range model wants faces that fill a good part of its 128x128 input.
FACE_CROPS: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "astronaut": ("astronaut", (106, 0, 346, 240)),
    "hopper": ("grace_hopper", (36, 0, 496, 460)),
    "voc2506_right": ("voc_2008_002506", (258, 13, 500, 263)),
    "voc2506_middle": ("voc_2008_002506", (158, 37, 378, 257)),
    "voc2506_left": ("voc_2008_002506", (52, 0, 292, 232)),
    "voc1322_left": ("voc_2008_001322", (44, 100, 244, 300)),
    "voc1322_middle": ("voc_2008_001322", (180, 163, 346, 329)),
    "voc1322_right": ("voc_2008_001322", (282, 93, 500, 311)),
}


def face_crop(name: str) -> Image:
    key, box = FACE_CROPS[name]
    return crop(load(key), *box)


def grid(
    rng: np.random.Generator,
    width: int,
    height: int,
    cols: int,
    rows: int,
    tiles: list[tuple[str, float]],
    keep: float = 1.0,
) -> Image:
    """Tiles (crop name, fraction of the cell's short side) placed at seeded offsets inside their cell;
    `keep` < 1 keeps only that central part of each head crop, making the face fill more of its tile."""
    canvas = background(rng, height, width)
    cw, ch = width // cols, height // rows
    for i, (name, frac) in enumerate(tiles):
        tile = face_crop(name)
        th, tw = tile.shape[:2]
        dy, dx = round(th * (1 - keep) / 2), round(tw * (1 - keep) / 2)
        tile = tile[dy : th - dy, dx : tw - dx]
        side = frac * min(cw, ch)
        tile = resize(tile, side / max(tile.shape[:2]))
        th, tw = tile.shape[:2]
        cx, cy = (i % cols) * cw, (i // cols) * ch
        ox = int(rng.integers(0, cw - tw + 1))
        oy = int(rng.integers(0, ch - th + 1))
        paste(canvas, tile, cx + ox, cy + oy)
    return canvas


def rotate_expanded(img: Image, degrees: float, fill: int = 128) -> Image:
    """Rotate counter-clockwise by `degrees` on a canvas large enough to keep every pixel."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = round(h * sin + w * cos), round(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    # Constant border: a reflected border would mirror face parts into the corners.
    return cv2.warpAffine(
        img, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 3
    )


# --- the photo set ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Photo:
    name: str
    sources: tuple[str, ...]
    description: str
    build: Callable[[np.random.Generator], bytes]


def _copy(key: str) -> Callable[[np.random.Generator], bytes]:
    return lambda _rng: source_bytes(key)


def _jpeg_of(key: str) -> Callable[[np.random.Generator], bytes]:
    return lambda _rng: encode_jpeg(load(key))


def _mirrored(_rng: np.random.Generator) -> bytes:
    return encode_jpeg(cv2.flip(load("astronaut"), 1))


def _grid_2x2(rng: np.random.Generator) -> bytes:
    tiles = [("astronaut", 0.95), ("hopper", 0.70), ("voc2506_right", 0.55), ("voc1322_left", 0.85)]
    return encode_jpeg(grid(rng, 1024, 1024, 2, 2, tiles))


def _grid_3x2(rng: np.random.Generator) -> bytes:
    tiles = [
        ("voc2506_left", 0.95),
        ("voc2506_middle", 0.80),
        ("voc2506_right", 0.65),
        ("voc1322_middle", 0.90),
        ("voc1322_right", 0.75),
        ("astronaut", 0.60),
    ]
    # 16:9 cells are wide and short, so whole head crops would leave the faces too small for the
    # short-range model once the canvas is letterboxed to 128 px: keep the central 70 %.
    return encode_jpeg(grid(rng, 1920, 1080, 3, 2, tiles, keep=0.7))


def _rot25(_rng: np.random.Generator) -> bytes:
    return encode_jpeg(rotate_expanded(load("astronaut"), 25.0))


def _rot90(_rng: np.random.Generator) -> bytes:
    # Pixels turned, no Exif: the face really lies on its side, as in a sideways phone shot.
    return encode_jpeg(cv2.rotate(load("grace_hopper"), cv2.ROTATE_90_CLOCKWISE))


def _twelve_mp(rng: np.random.Generator) -> bytes:
    # 500x375 -> 4000x3000 is exactly 8x; mild seeded grain gives the flat upscale some sensor-like texture
    # (and realistic Huffman decoding cost) without changing what the faces look like.
    img = cv2.resize(load("voc_2008_002506"), (4000, 3000), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0.0, 3.0, size=(*img.shape[:2], 1))
    img = np.clip(img.astype(np.float32) + grain, 0, 255).astype(np.uint8)
    return encode_jpeg(img, JPEG_QUALITY_12MP)


# Exif orientation -> how the upright picture is turned before storing, so that a reader applying the
# tag turns it back (Exif 2.3 Orientation: 3 = rotate 180, 6 = rotate 90 CW to view, 8 = 90 CCW to view).
_STORE_ROTATION = {3: cv2.ROTATE_180, 6: cv2.ROTATE_90_COUNTERCLOCKWISE, 8: cv2.ROTATE_90_CLOCKWISE}


def _exif(key: str, orientation: int) -> Callable[[np.random.Generator], bytes]:
    def build(_rng: np.random.Generator) -> bytes:
        stored = cv2.rotate(load(key), _STORE_ROTATION[orientation])
        return with_exif_orientation(encode_jpeg(stored), orientation)

    return build


def _grey(_rng: np.random.Generator) -> bytes:
    # A single-component JPEG (what a greyscale camera or scanner writes), not three equal channels.
    return encode_jpeg(cv2.cvtColor(load("voc_2008_001322"), cv2.COLOR_BGR2GRAY))


def _alpha(_rng: np.random.Generator) -> bytes:
    # Opaque over the head, fading to fully transparent at the corners. The colour channels under the
    # transparent parts keep the photo, so "ignore alpha" (what cv2.IMREAD_COLOR and the references do)
    # and "composite over a background" give different pixels there: the photo pins the policy.
    img = load("grace_hopper")
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.sqrt(((xx - 266) / (0.55 * w)) ** 2 + ((yy - 240) / (0.55 * h)) ** 2)
    alpha = np.clip((1.2 - r) / 0.5, 0.0, 1.0)
    bgra = np.dstack([img, np.round(alpha * 255).astype(np.uint8)])
    return encode_png(bgra)


def _noface_collage(rng: np.random.Generator) -> bytes:
    canvas = background(rng, 720, 1280)
    paste(canvas, resize(load("chelsea"), 0.9), 40, 40)
    paste(canvas, resize(load("coffee"), 0.8), 760, 300)
    # A seeded patch of sharp noise: high-frequency content the detector must not fire on.
    paste(canvas, rng.integers(0, 256, size=(260, 300, 3), dtype=np.uint8), 80, 420)
    return encode_jpeg(canvas)


_VOC = "PASCAL VOC photo from dlib's face set"

CATALOGUE: tuple[Photo, ...] = (
    Photo(
        "astronaut.jpg", ("astronaut",), "Eileen Collins, one frontal face, 512x512", _jpeg_of("astronaut")
    ),
    Photo(
        "astronaut_mirrored.jpg",
        ("astronaut",),
        "astronaut flipped left-right: boxes mirror, and the subject's right eye stays on the viewer's "
        "left, so a port that swaps keypoint names fails here or on astronaut.jpg",
        _mirrored,
    ),
    Photo(
        "grace_hopper.jpg",
        ("grace_hopper",),
        "Grace Hopper portrait, one large face, 512x600 (byte copy of matplotlib's file)",
        _copy("grace_hopper"),
    ),
    Photo("chelsea_cat_noface.jpg", ("chelsea",), "a cat, no human face", _jpeg_of("chelsea")),
    Photo("coffee_noface.jpg", ("coffee",), "a coffee cup, no face", _jpeg_of("coffee")),
    Photo(
        "voc_2008_002506_three_faces.jpg",
        ("voc_2008_002506",),
        f"{_VOC}: three large faces, 500x375 (byte copy)",
        _copy("voc_2008_002506"),
    ),
    Photo(
        "voc_2008_001322_three_faces.jpg",
        ("voc_2008_001322",),
        f"{_VOC}: three medium faces, 500x375 (byte copy)",
        _copy("voc_2008_001322"),
    ),
    Photo(
        "voc_2008_002470_six_small_faces.jpg",
        ("voc_2008_002470",),
        f"{_VOC}: six small faces (37-53 px), 500x332, too small for the short-range model (byte copy)",
        _copy("voc_2008_002470"),
    ),
    Photo(
        "grid_2x2_head_crops_1024.jpg",
        ("astronaut", "grace_hopper", "voc_2008_002506", "voc_2008_001322"),
        "2x2 tiling of four head crops at four scales on a textured canvas, 1024x1024 (one crop shows a "
        "second, partly cut face)",
        _grid_2x2,
    ),
    Photo(
        "grid_3x2_head_crops_1920x1080.jpg",
        ("voc_2008_002506", "voc_2008_001322", "astronaut"),
        "3x2 tiling of six tight head crops at six scales on a textured canvas, 1920x1080; some crops cut "
        "through a neighbour's face, which the full-range model may also report",
        _grid_3x2,
    ),
    Photo(
        "astronaut_rotated_25ccw.jpg",
        ("astronaut",),
        "astronaut rotated 25 degrees counter-clockwise (pixels, expanded canvas, grey border)",
        _rot25,
    ),
    Photo(
        "grace_hopper_rotated_90cw.jpg",
        ("grace_hopper",),
        "Grace Hopper rotated 90 degrees clockwise in the pixels, no Exif: the face lies on its side",
        _rot90,
    ),
    Photo(
        "voc_2008_002506_12mp_4000x3000.jpg",
        ("voc_2008_002506",),
        "the three-face VOC photo upscaled 8x to 12 MP (4000x3000) with seeded grain, JPEG quality 85",
        _twelve_mp,
    ),
    Photo(
        "grace_hopper_exif6.jpg",
        ("grace_hopper",),
        "pixels stored turned 90 degrees CCW, Exif Orientation 6: upright once the tag is applied",
        _exif("grace_hopper", 6),
    ),
    Photo(
        "voc_2008_002506_exif8.jpg",
        ("voc_2008_002506",),
        "pixels stored turned 90 degrees CW, Exif Orientation 8: upright (500x375) once the tag is applied",
        _exif("voc_2008_002506", 8),
    ),
    Photo(
        "astronaut_exif3.jpg",
        ("astronaut",),
        "pixels stored upside down, Exif Orientation 3: upright once the tag is applied",
        _exif("astronaut", 3),
    ),
    Photo(
        "voc_2008_001322_grey.jpg",
        ("voc_2008_001322",),
        "the three-face VOC photo as a single-component (greyscale) JPEG",
        _grey,
    ),
    Photo(
        "grace_hopper_alpha.png",
        ("grace_hopper",),
        "RGBA PNG: opaque over the head, transparent corners; references ignore alpha (cv2.IMREAD_COLOR)",
        _alpha,
    ),
    Photo(
        "noface_collage_1280x720.jpg",
        ("chelsea", "coffee"),
        "cat, coffee cup and a seeded noise patch on a textured canvas, 1280x720: no face",
        _noface_collage,
    ),
)


# --- checks and output --------------------------------------------------------------------------------


def check_exif(photo: Photo, data: bytes) -> None:
    """The tag must mean what we think: OpenCV's decode and Pillow's exif_transpose agree on the upright
    picture, and it is the stored pixels turned back (not merely 'some rotation')."""
    from PIL import Image as PILImage
    from PIL import ImageOps

    buf = np.frombuffer(data, np.uint8)
    upright = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    stored = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    pil = np.asarray(ImageOps.exif_transpose(PILImage.open(io.BytesIO(data))).convert("RGB"))[:, :, ::-1]
    original = load(photo.sources[0])
    if upright.shape != original.shape or pil.shape != original.shape:
        raise SystemExit(f"{photo.name}: Exif orientation not applied as intended")
    # Pillow and OpenCV may use different IDCT/upsampling; compare loosely to Pillow, exactly to OpenCV's
    # own rotation of the stored pixels.
    inverse = {cv2.ROTATE_180: cv2.ROTATE_180}
    inverse[cv2.ROTATE_90_CLOCKWISE] = cv2.ROTATE_90_COUNTERCLOCKWISE
    inverse[cv2.ROTATE_90_COUNTERCLOCKWISE] = cv2.ROTATE_90_CLOCKWISE
    rotations = [r for o, r in _STORE_ROTATION.items() if photo.name.endswith(f"exif{o}.jpg")]
    turned_back = cv2.rotate(stored, inverse[rotations[0]])
    if not np.array_equal(upright, turned_back):
        raise SystemExit(f"{photo.name}: OpenCV's upright decode is not the stored pixels turned back")
    if np.abs(pil.astype(int) - upright.astype(int)).mean() > 2.0:
        raise SystemExit(f"{photo.name}: Pillow reads the orientation differently from OpenCV")


def write_licences(written: list[Photo]) -> None:
    lines = [
        "# Photo set: sources and licences",
        "",
        "Generated by `tests/reference/make_photos.py` (do not edit by hand; rebuild with",
        "`bash tests/reference/rebuild.sh`). Every photo is a real photo or made only from the real photos",
        "below; derived files keep their sources' terms.",
        "",
        "## Sources",
        "",
    ]
    for s in SOURCES.values():
        lines += [f"- **{s.key}** — {s.origin}. sha256 `{s.sha256}`.", f"  Licence: {s.licence}"]
    lines += ["", "## Files", "", "| file | made from | what it is |", "|---|---|---|"]
    for p in written:
        lines.append(f"| `{p.name}` | {', '.join(p.sources)} | {p.description} |")
    (PHOTOS_DIR / "LICENSES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    PHOTOS_DIR.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in CATALOGUE}
    for stale in PHOTOS_DIR.iterdir():
        if stale.is_file() and stale.name not in names and stale.name != "LICENSES.md":
            print(f"removing stale {stale.name}")
            stale.unlink()
    # One generator for the whole set, consumed in catalogue order: adding a photo at the end leaves the
    # earlier ones byte-identical.
    rng = np.random.default_rng(SEED)
    total = 0
    for photo in CATALOGUE:
        data = photo.build(rng)
        if "exif" in photo.name:
            check_exif(photo, data)
        (PHOTOS_DIR / photo.name).write_bytes(data)
        total += len(data)
        print(f"{photo.name:45s} {len(data) / 1e3:9.1f} kB")
    write_licences(list(CATALOGUE))
    print(f"{len(CATALOGUE)} photos, {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
