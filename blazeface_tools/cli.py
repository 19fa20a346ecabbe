"""`blazeface`: the command line (client, server, evaluations).

blazeface detect photo.jpg other.png --url http://127.0.0.1:8000 --model full
blazeface detect photos/ --concurrency 8 --output faces.jsonl --draw drawn/   # bulk; a re-run resumes
blazeface serve
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from blazeface_tools.evaluation.cli import IMAGE_SUFFIXES, add_eval_commands
from service.specs import MODELS

if TYPE_CHECKING:
    from blazeface_tools.client import AsyncBlazefaceClient
    from service.api.schemas import DetectResponse, Problem

# Problem type of an input file that could not be read (status 0: no request was made).
UNREADABLE = "urn:blazeface:client:unreadable-file"


@dataclass(frozen=True)
class Image:
    file: str  # as given or found: the `file` of its output line, which a re-run matches
    path: Path
    drawn: Path  # under --draw: the path below the directory given, or the file's own name


def find_images(paths: Sequence[str]) -> Iterator[Image]:
    """Files as given (an unreadable one fails later, as a problem line); directories searched
    recursively for images, sorted, each once."""
    seen: set[Path] = set()
    for given in paths:
        root = Path(given)
        if root.is_dir():
            found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                print(f"{given}: no images in this directory", file=sys.stderr)
            images = [Image(str(p), p, p.relative_to(root)) for p in found]
        else:
            images = [Image(given, root, Path(root.name))]
        for image in images:
            if image.path.resolve() not in seen:
                seen.add(image.path.resolve())
                yield image


def is_final(problem: dict[str, Any]) -> bool:
    """Whether a problem line stands on a re-run: the request itself was refused (4xx: the image is
    undecodable, too large, of a refused type, or an option is bad). A full queue (429), a bad key
    (401), an upload timeout (408), a server error (5xx: 503, 504, …) and no answer or no file (0)
    are tried again."""
    status = int(problem.get("status", 0))
    return 400 <= status < 500 and status not in {401, 408, 429}


def finished_files(output: Path) -> set[str]:
    """The `file`s already done in an earlier run's output: its last line for each file is a result or a
    final problem. Unreadable lines (a run killed mid-write) are ignored."""
    last: dict[str, bool] = {}
    if output.exists():
        for line in output.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                last[entry["file"]] = "result" in entry or is_final(entry["problem"])
            except (ValueError, KeyError, TypeError):
                continue
    return {file for file, done in last.items() if done}


class Progress:
    """One `\\r` line on stderr, only when stderr is a terminal: count, bar, images/s, ETA, failures."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()
        self.done = self.failed = 0

    def rate(self) -> float:
        return (self.done + self.failed) / max(time.monotonic() - self.started, 1e-9)

    def advance(self, failed: bool) -> None:
        self.failed += failed
        self.done += not failed
        if not self.enabled:
            return
        finished = self.done + self.failed
        rate = self.rate()
        eta = (self.total - finished) / rate if rate else 0.0
        filled = round(24 * finished / max(self.total, 1))
        bar = "#" * filled + "-" * (24 - filled)
        self.stream.write(
            f"\r{finished}/{self.total} [{bar}] {rate:.1f} img/s  ETA {eta:.0f} s  {self.failed} failed\x1b[K"
        )
        self.stream.flush()

    def message(self, text: str) -> None:
        """A line above the bar (the bar is redrawn by the next `advance`)."""
        self.stream.write(("\r\x1b[K" if self.enabled else "") + text + "\n")

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def _describe(problem: Problem) -> str:
    return f"{problem.status or ''} {problem.title}: {problem.detail}".lstrip()


def _print_faces(file: str, result: DetectResponse) -> None:
    print(f"{file}: {len(result.faces)} face(s), {result.timing_ms.total:.1f} ms")
    for face in result.faces:
        box = face.box
        print(
            f"  score {face.score:.3f}  box ({box.x1:.0f}, {box.y1:.0f})–"
            f"({box.x2:.0f}, {box.y2:.0f})  roll {face.roll_degrees:+.1f}°"
        )


async def _run(
    args: argparse.Namespace, client: AsyncBlazefaceClient, todo: list[Image], out: IO[str] | None
) -> Progress:
    """Sends `todo` with `--concurrency` workers; returns the progress (done and failed counts)."""
    from blazeface_tools.client import ApiError
    from blazeface_tools.draw import write_annotated
    from service.api.schemas import Problem

    progress = Progress(len(todo), sys.stderr)
    pending = iter(todo)  # shared by the workers: each image is taken once

    def record(image: Image, entry: dict[str, Any]) -> None:
        if out is not None:
            out.write(json.dumps({"file": image.file, **entry}) + "\n")
            out.flush()  # a run killed now keeps every finished line, for the re-run to skip

    async def detect(image: Image) -> None:
        try:
            data = await asyncio.to_thread(image.path.read_bytes)
            result = await client.detect(data, model=args.model, min_score=args.min_score)
        except OSError as exc:
            detail = exc.strerror or str(exc)
            problem = Problem(type=UNREADABLE, title="Unreadable file", status=0, detail=detail)
        except ApiError as exc:
            problem = exc.problem
        else:
            if args.draw:  # OpenCV drawing and encoding off the event loop, beside the requests
                await asyncio.to_thread(write_annotated, data, result, args.draw / image.drawn)
            if out is None:
                _print_faces(image.file, result)
            record(image, {"result": result.model_dump(exclude_none=True)})
            progress.advance(failed=False)
            return
        progress.message(f"{image.file}: {_describe(problem)}")
        record(image, {"problem": problem.model_dump()})
        progress.advance(failed=True)

    async def worker() -> None:
        for image in pending:
            await detect(image)

    try:
        async with asyncio.TaskGroup() as workers:
            for _ in range(min(args.concurrency, len(todo))):
                workers.create_task(worker())
    finally:
        progress.close()
    return progress


def _open_output(path: Path) -> IO[str]:
    out = path.open("a", encoding="utf-8")
    if out.tell():
        with path.open("rb") as existing:
            existing.seek(-1, os.SEEK_END)
            if existing.read(1) != b"\n":
                out.write("\n")  # a line cut short by a killed run must not swallow the next one
    return out


def _detect(args: argparse.Namespace) -> int:
    try:
        from blazeface_tools.client import AsyncBlazefaceClient, RetryPolicy
    except ImportError:  # httpx is the `client` extra; `serve` and `eval` do not need it
        print("blazeface detect needs the extra: pip install 'blazeface-serve[client]'", file=sys.stderr)
        return 2
    images = list(find_images(args.paths))
    finished = finished_files(args.output) if args.output else set()
    todo = [image for image in images if image.file not in finished]
    out = _open_output(args.output) if args.output else sys.stdout if args.json else None

    async def run() -> tuple[Progress, int]:
        async with AsyncBlazefaceClient(
            args.url,
            api_key=args.api_key,
            retry=RetryPolicy(retries=args.retries),
            max_connections=args.concurrency,
        ) as client:
            return await _run(args, client, todo, out), client.retries

    try:
        progress, retries = asyncio.run(run())
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
    print(
        f"{progress.done} done, {len(images) - len(todo)} skipped, {progress.failed} failed, "
        f"{retries} retries, {progress.rate():.1f} img/s",
        file=sys.stderr,
    )
    return 1 if progress.failed else 0


def _serve(args: argparse.Namespace) -> int:
    from service.__main__ import main as serve

    serve()
    return 0


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="blazeface", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    detect = commands.add_parser(
        "detect",
        help="send images to a running service",
        description="Detect faces in images (files, or directories searched recursively). A summary goes "
        "to stderr; the exit status is 1 if any image failed after its retries.",
    )
    detect.add_argument("paths", nargs="+", metavar="PATH", help="image file or directory")
    detect.add_argument("--url", default=os.environ.get("BLAZEFACE_URL", "http://127.0.0.1:8000"))
    detect.add_argument("--model", choices=list(MODELS), default=None)
    detect.add_argument("--min-score", type=float, default=None)
    detect.add_argument("--api-key", default=os.environ.get("BLAZEFACE_API_KEY"))
    detect.add_argument("--concurrency", type=_at_least(1), default=4, help="requests in flight (default 4)")
    detect.add_argument(
        "--output",
        type=Path,
        metavar="FILE.jsonl",
        help='append one JSON line per image ({"file", "result" | "problem"}); images already there are '
        "skipped, except those whose problem is worth retrying (429, 5xx, no answer)",
    )
    detect.add_argument("--json", action="store_true", help="the same JSON lines on stdout instead of text")
    detect.add_argument(
        "--draw", type=Path, metavar="DIR", help="write a copy of each image with its faces drawn into DIR"
    )
    detect.add_argument(
        "--retries",
        type=_at_least(0),
        default=5,
        help="retries per image after 429, 503 or no answer, honouring Retry-After (default 5)",
    )
    detect.set_defaults(run=_detect)

    serve = commands.add_parser("serve", help="run the HTTP service (settings from the environment)")
    serve.set_defaults(run=_serve)

    add_eval_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
