"""Header probe: the hand-written `service.imaging.probe` against a probe built on Pillow's lazy open.

    .venv/bin/python -m loadtest.probe_vs_pillow [--rounds 201] [--calls 50]

(a) Speed: µs per probe of each photo in tests/data/photos, the median over rounds of `calls`
back-to-back probes, the two probes alternating round by round so background load falls on both.
(b) Rejections: every case of the bad-input corpus (blazeface_tools/testkit/corpus.py) whose body is
one image for /detect, as a status: 400 ImageDecodeError, 415 UnsupportedMediaType, 413 over the
corpus's pixel limit (from the probed size), 200 passes. Once for the probe alone and once through
`decode` with that probe in front, which is what the service would answer.

Prints the tables for loadtest/RESULTS.md and writes loadtest/results/probe_vs_pillow.json. A
benchmark, not a test. Pillow is not a dependency: without it this says so and exits.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import io
import json
import os
import platform
import re
import statistics
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from unittest import mock

import cv2
import orjson

import service.imaging.decode as decode_module
from blazeface_tools import CHECKOUT as REPO_ROOT
from blazeface_tools.testkit.corpus import Case, build_corpus
from service.errors import ImageDecodeError, ImageTooLarge, InputError, UnsupportedMediaType
from service.imaging.probe import ImageInfo, probe

try:
    from PIL import Image
except ImportError:  # pragma: no cover - the benchmark's only optional part
    Image = None  # type: ignore[assignment]

PHOTOS = REPO_ROOT / "tests" / "data" / "photos"
RESULTS = REPO_ROOT / "loadtest" / "results" / "probe_vs_pillow.json"
MAX_PIXELS = 20_000_000  # build_corpus's default, which its expected statuses assume
# Corpus groups whose body reaches the probe; the others test HTTP (content types, JSON, multipart).
IMAGE_GROUPS = {"empty", "random", "truncated", "corrupt", "bomb", "exif", "shape", "valid", "unsupported"}
# Pillow names a JPEG carrying an MPF (multi-picture) segment, as many cameras write, "MPO".
PILLOW_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}

Probe = Callable[[bytes], ImageInfo]


def pillow_probe(data: bytes) -> ImageInfo:
    """The drop-in a Pillow-based probe would be: `Image.open` parses the header and no pixel data,
    every format Pillow identifies that we do not decode is a 415, anything Pillow raises a 400, and
    the EXIF block that open found gives the orientation."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = PILLOW_FORMATS.get(image.format or "")
            if kind is None:
                raise UnsupportedMediaType(f"{image.format} is not supported")
            # Only WebP: an APNG is decoded as its default image, as the hand-written probe lets it be.
            if kind == "webp" and getattr(image, "is_animated", False):
                raise UnsupportedMediaType("animated WebP is not supported")
            width, height = image.size
            # Not `image.getexif()`: on a PNG without an eXIf chunk before IDAT it calls `load()`, a
            # full decode (a 50000×50000 bomb's header then fails as truncated, or runs out of memory).
            exif = Image.Exif()
            if raw := image.info.get("exif"):
                exif.load(raw)
            orientation = exif.get(0x0112, 1)
    except UnsupportedMediaType:
        raise
    except Exception as exc:  # Pillow's parsers raise OSError, SyntaxError, ValueError, struct.error…
        message = re.sub(r" <[^>]* at 0x[0-9a-f]+>", "", str(exc))  # "cannot identify image file <BytesIO…>"
        raise ImageDecodeError(f"{type(exc).__name__}: {message}") from exc
    if not isinstance(orientation, int) or not 1 <= orientation <= 8:
        orientation = 1  # bad EXIF is ignored, as in the hand-written probe
    return ImageInfo(kind, width, height, orientation)


def verdict(run: Callable[[], object]) -> tuple[int, str]:
    """(status, why) of one call: the InputError's status and message, or 200."""
    try:
        run()
    except InputError as exc:
        return exc.status, f"{type(exc).__name__}: {exc}"[:120]
    return 200, "passes"


def probe_verdict(probe_fn: Probe, data: bytes) -> tuple[int, str]:
    def check() -> None:
        info = probe_fn(data)
        if info.width * info.height > MAX_PIXELS:  # decode's limit, applied to the probed size
            raise ImageTooLarge(f"{info.width}×{info.height}")

    return verdict(check)


def decode_verdict(probe_fn: Probe, data: bytes) -> tuple[int, str]:
    with mock.patch.object(decode_module, "probe", probe_fn):
        return verdict(lambda: decode_module.decode(data, max_pixels=MAX_PIXELS))


def image_body(case: Case) -> bytes | None:
    """The one image a /detect case sends (raw, multipart or base64 JSON), or None if it is no such case."""
    if case.group not in IMAGE_GROUPS or case.path != "/detect" or case.slow is not None:
        return None
    if case.files is not None:
        images = [payload for name, (_, payload, _) in case.files if name == "image"]
        return images[0] if len(images) == 1 else None
    if case.headers.get("content-type") != "application/json":
        return case.content or b""
    try:
        document = orjson.loads(case.content or b"")
        text = document["image"]
        return base64.b64decode(text.split(",", 1)[1] if text.startswith("data:") else text, validate=True)
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, binascii.Error):
        return None


def time_probes(rounds: int, calls: int) -> list[dict[str, object]]:
    rows = []
    for path in sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".png")):
        data = path.read_bytes()
        hand, pillow = probe(data), pillow_probe(data)  # also warms Pillow's plugin registry
        times: dict[str, list[float]] = {"hand": [], "pillow": []}
        for index in range(rounds):
            order = (("hand", probe), ("pillow", pillow_probe))
            for name, fn in order if index % 2 else order[::-1]:
                started = time.perf_counter_ns()
                for _ in range(calls):
                    fn(data)
                times[name].append((time.perf_counter_ns() - started) / calls / 1e3)
        rows.append(
            {
                "photo": path.name,
                "kib": round(len(data) / 1024),
                "hand_us": statistics.median(times["hand"]),
                "pillow_us": statistics.median(times["pillow"]),
                "same_answer": hand == pillow,
            }
        )
    return rows


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """libpng and OpenCV print every rejected file to fd 2; the table is what this run is for."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def compare_corpus() -> list[dict[str, object]]:
    rows = []
    for case in build_corpus(max_pixels=MAX_PIXELS, include_slow=False):
        data = image_body(case)
        if data is None:
            continue
        (hand, hand_why), (pil, pil_why) = probe_verdict(probe, data), probe_verdict(pillow_probe, data)
        rows.append(
            {
                "case": case.name,
                "group": case.group,
                "expect": case.expect,
                "hand_probe": hand,
                "pillow_probe": pil,
                "hand_decode": decode_verdict(probe, data)[0],
                "pillow_decode": decode_verdict(pillow_probe, data)[0],
                "hand_why": hand_why,
                "pillow_why": pil_why,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=201)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    if Image is None:
        sys.exit("Pillow is not installed; for this measurement only: .venv/bin/pip install pillow==13.0.0")
    Image.MAX_IMAGE_PIXELS = None  # the service's own pixel limit decides, from the probed size
    warnings.simplefilter("ignore")  # Pillow warns on some corrupt headers; the verdict is what counts

    speed = time_probes(args.rounds, args.calls)
    hand_total = statistics.median(row["hand_us"] for row in speed)  # type: ignore[misc]
    pillow_total = statistics.median(row["pillow_us"] for row in speed)  # type: ignore[misc]
    print(f"\n(a) µs per probe, median of {args.rounds} rounds × {args.calls} calls")
    print("| photo | KiB | hand-written µs | Pillow µs | Pillow / hand | same answer |")
    print("|---|---|---|---|---|---|")
    for row in speed:
        ratio = row["pillow_us"] / row["hand_us"]  # type: ignore[operator]
        print(
            f"| {row['photo']} | {row['kib']} | {row['hand_us']:.1f} | {row['pillow_us']:.1f} | "
            f"{ratio:.1f}× | {'yes' if row['same_answer'] else 'NO'} |"
        )
    ratio = pillow_total / hand_total
    print(f"| median of photos | | {hand_total:.1f} | {pillow_total:.1f} | {ratio:.1f}× | |")

    with quiet_stderr():
        corpus = compare_corpus()
    probe_diff = [row for row in corpus if row["hand_probe"] != row["pillow_probe"]]
    final_diff = [row for row in corpus if row["hand_decode"] != row["pillow_decode"]]
    print(
        f"\n(b) {len(corpus)} corpus images: the probes disagree on {len(probe_diff)}, "
        f"the service's answers (probe, then decode) on {len(final_diff)}"
    )
    for name in ("hand", "pillow"):
        right = sum(row[f"{name}_decode"] == row["expect"] for row in corpus)
        print(f"{name}: the corpus's expected status on {right} of {len(corpus)}")
    print("| case | expected | hand-written | Pillow | Pillow says |\n|---|---|---|---|---|")
    for row in final_diff:
        print(
            f"| {row['case']} | {row['expect']} | {row['hand_decode']} | {row['pillow_decode']} | "
            f"{row['pillow_why']} |"
        )
    # The rest differ only in which stage refuses: the answer after decode is the same.
    stage_only = Counter(
        (row["group"], row["hand_probe"], row["pillow_probe"]) for row in probe_diff if row not in final_diff
    )
    print("\nprobe-only disagreements (same answer after decode)")
    print("| corpus group | hand-written probe | Pillow probe | cases |\n|---|---|---|---|")
    for (group, hand, pil), count in sorted(stage_only.items()):
        print(f"| {group} | {hand} | {pil} | {count} |")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "pillow": Image.__version__,
                "opencv": cv2.__version__,
                "rounds": args.rounds,
                "calls": args.calls,
                "speed": speed,
                "median_us": {"hand": hand_total, "pillow": pillow_total},
                "corpus": corpus,
                "probe_disagreements": [row["case"] for row in probe_diff],
                "decode_disagreements": [row["case"] for row in final_diff],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
