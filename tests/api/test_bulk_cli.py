"""Bulk work: `blazeface detect` over directories (--concurrency, --output and its resume, --draw, retries)
and the retry policy both clients share. The policy and the clients' retry loops run against httpx's
MockTransport with the sleep injected (no waiting); the rest against the real service."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from blazeface_tools.cli import Progress, finished_files, main
from blazeface_tools.client import NO_ANSWER, ApiError, AsyncBlazefaceClient, BlazefaceClient, RetryPolicy
from blazeface_tools.draw import BOX_COLOUR
from blazeface_tools.testkit.servers import service_process
from service.api.schemas import DetectResponse
from service.imaging.decode import decode
from tests.conftest import DATA

PHOTOS = DATA / "photos"
PHOTO_FILES = sorted(p for p in PHOTOS.iterdir() if p.suffix in {".jpg", ".png"})
SUMMARY = re.compile(r"(\d+) done, (\d+) skipped, (\d+) failed, (\d+) retries")


def summary(stderr: str) -> dict[str, int]:
    found = SUMMARY.findall(stderr)
    assert found, stderr
    return dict(zip(("done", "skipped", "failed", "retries"), map(int, found[-1]), strict=True))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# The retry policy, no sleeping


def test_delays_honour_retry_after_and_the_cap() -> None:
    lowest, highest = RetryPolicy(random=lambda: 0.0), RetryPolicy(random=lambda: 1.0)
    assert lowest.delay(0, "7") == 7 and highest.delay(0, "7") == 7 * 1.5  # jitter only lengthens
    assert [lowest.delay(n) for n in range(5)] == [0.5, 1, 2, 4, 8]
    assert all(policy.delay(n, "3") >= 3 for policy in (lowest, highest) for n in range(5))
    assert highest.delay(4) == 12 and highest.delay(4, "29") == 30  # the cap bounds the jitter too
    assert lowest.delay(0, "31") is None  # longer than the 30 s cap: not retried, never retried early
    assert lowest.delay(5) is None  # the 5 retries are spent


def test_retry_after_as_an_http_date() -> None:
    now = 1_800_000_000.0
    policy = RetryPolicy(random=lambda: 0.0, clock=lambda: now)
    date = format_datetime(datetime.fromtimestamp(now + 12, UTC), usegmt=True)
    assert policy.retry_after_s(date) == 12 and policy.delay(0, date) == 12
    assert policy.retry_after_s("soon") == 0 and policy.delay(0, "soon") == 0.5


# Both clients' retry loops, against scripted answers

DETECTION = {
    "model": "short",
    "image": {"width": 4, "height": 3},
    "faces": [],
    "timing_ms": {"decode": 0.1, "queue": 0.1, "inference": 0.1, "postprocess": 0.1, "total": 0.4},
}


def problem(status: int, retry_after: str | None = None) -> Callable[[], httpx.Response]:
    body = {"type": "https://x/p", "title": "T", "status": status, "detail": "D"}
    headers = {"Retry-After": retry_after} if retry_after else {}
    return lambda: httpx.Response(status, json=body, headers=headers)


def ok() -> httpx.Response:
    return httpx.Response(200, json=DETECTION)


def refused() -> httpx.Response:
    raise httpx.ConnectError("connection refused")


@dataclass
class Scripted:
    """A MockTransport answering with `answers` in turn (the last one repeats); what the client did."""

    answers: list[Callable[[], httpx.Response]]
    calls: int = 0

    def transport(self) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            self.calls += 1
            return self.answers[min(self.calls, len(self.answers)) - 1]()

        return httpx.MockTransport(handle)


def detect_with(kind: str, script: Scripted, sleeps: list[float], retries: int = 5) -> tuple[Any, int]:
    """`detect` through the blocking or the async client; returns the result and the client's retries."""
    policy = RetryPolicy(retries=retries, random=lambda: 0.0)
    if kind == "sync":
        with BlazefaceClient(
            "http://test", retry=policy, sleep=sleeps.append, transport=script.transport()
        ) as c:
            return c.detect(b"image", model="short"), c.retries

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run() -> tuple[Any, int]:
        async with AsyncBlazefaceClient(
            "http://test", retry=policy, sleep=sleep, transport=script.transport()
        ) as client:
            return await client.detect(b"image", model="short"), client.retries

    return asyncio.run(run())


CLIENTS = pytest.mark.parametrize("kind", ["sync", "async"])


@CLIENTS
def test_429_and_503_are_retried_after_their_retry_after(kind: str) -> None:
    script, sleeps = Scripted([problem(429, "3"), problem(503, "2"), ok]), []
    result, retries = detect_with(kind, script, sleeps)
    assert isinstance(result, DetectResponse) and result.image.width == 4
    assert sleeps == [3, 2] and retries == 2 and script.calls == 3


@CLIENTS
def test_retries_run_out_into_a_typed_problem(kind: str) -> None:
    script, sleeps = Scripted([problem(429, "1")]), []
    with pytest.raises(ApiError) as error:
        detect_with(kind, script, sleeps, retries=2)
    assert error.value.status == 429 and error.value.problem.title == "T"
    assert script.calls == 3 and sleeps == [1, 1]


@CLIENTS
def test_no_answer_is_retried_then_a_status_0_problem(kind: str) -> None:
    script, sleeps = Scripted([refused]), []
    with pytest.raises(ApiError) as error:
        detect_with(kind, script, sleeps, retries=1)
    assert error.value.status == 0 and error.value.problem.type == NO_ANSWER
    assert "ConnectError" in error.value.problem.detail and script.calls == 2 and sleeps == [0.5]


@CLIENTS
def test_other_errors_are_not_retried(kind: str) -> None:
    for answer, status, problem_type in [
        (problem(400), 400, "https://x/p"),
        (lambda: httpx.Response(502, text="<html>bad gateway</html>"), 502, "about:blank"),
    ]:
        script, sleeps = Scripted([answer]), []
        with pytest.raises(ApiError) as error:
            detect_with(kind, script, sleeps)
        assert (error.value.status, error.value.problem.type) == (status, problem_type)
        assert script.calls == 1 and sleeps == []


# CLI pieces that need no server


def test_a_rerun_skips_results_and_final_problems_only(tmp_path: Path) -> None:
    def problem_line(file: str, status: int) -> str:
        return json.dumps({"file": file, "problem": {"status": status}})

    output = tmp_path / "o.jsonl"
    output.write_text(
        "\n".join(
            [
                json.dumps({"file": "done", "result": DETECTION}),
                problem_line("undecodable", 400),
                problem_line("overloaded", 429),
                problem_line("unavailable", 503),
                problem_line("deadline", 504),
                problem_line("no-answer", 0),
                problem_line("bad-key", 401),
                problem_line("later-done", 503),
                json.dumps({"file": "later-done", "result": DETECTION}),  # the last line of a file counts
                "not json",
                '{"file": "cut-short", "res',
            ]
        )
    )
    assert finished_files(output) == {"done", "undecodable", "later-done"}
    assert finished_files(tmp_path / "absent.jsonl") == set()


def test_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, pipe = Terminal(), io.StringIO()
    for stream in (terminal, pipe):
        progress = Progress(4, stream)
        progress.advance(failed=False)
        progress.advance(failed=True)
        progress.close()
    assert pipe.getvalue() == ""
    shown = terminal.getvalue()
    assert shown.startswith("\r1/4 [") and "\r2/4 [" in shown and "img/s" in shown and "ETA" in shown
    assert "1 failed" in shown and shown.endswith("\n")


def test_detect_without_httpx_says_which_extra(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "httpx", None)  # import httpx then raises ImportError
    monkeypatch.delitem(sys.modules, "blazeface_tools.client")
    assert main(["detect", str(PHOTOS / "astronaut.jpg")]) == 2
    assert "blazeface-serve[client]" in capsys.readouterr().err


# Against the real service


@dataclass
class Run:
    status: int
    stderr: str


def run_cli(*argv: str) -> Run:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = main(["detect", *argv])
    return Run(status, stderr.getvalue())


@dataclass
class BulkRun:
    output: Path
    drawn: Path
    argv: list[str]
    first: Run


@pytest.fixture(scope="module")
def bulk(live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BulkRun]:  # type: ignore[no-untyped-def]
    """The photo directory through the CLI once, as a bulk job runs it."""
    root = tmp_path_factory.mktemp("bulk")
    output, drawn = root / "faces.jsonl", root / "drawn"
    argv = [
        str(PHOTOS),
        "--url",
        live.url,
        "--concurrency",
        "8",
        "--output",
        str(output),
        "--draw",
        str(drawn),
    ]
    yield BulkRun(output, drawn, argv, run_cli(*argv))


@pytest.mark.slow
def test_one_line_and_one_drawing_per_image(bulk: BulkRun) -> None:
    assert bulk.first.status == 0
    counts = summary(bulk.first.stderr)
    assert (counts["done"], counts["skipped"], counts["failed"]) == (19, 0, 0)
    entries = lines(bulk.output)
    assert len(entries) == len(PHOTO_FILES) == 19
    assert {entry["file"] for entry in entries} == {str(p) for p in PHOTO_FILES}
    assert all(DetectResponse.model_validate(entry["result"]) for entry in entries)
    assert sorted(p.name for p in bulk.drawn.iterdir()) == [p.name for p in PHOTO_FILES]


@pytest.mark.slow
def test_the_same_command_again_adds_nothing(bulk: BulkRun) -> None:
    before = bulk.output.read_text()
    again = run_cli(*bulk.argv)
    assert again.status == 0 and bulk.output.read_text() == before
    assert summary(again.stderr) == {"done": 0, "skipped": 19, "failed": 0, "retries": 0}


def edge_pixels(image: np.ndarray, box: dict[str, float]) -> np.ndarray:
    """The box's top edge as drawn (its corners left out), in `image` (RGB)."""
    x1, y1, x2 = round(box["x1"]), round(box["y1"]), round(box["x2"])
    return image[y1, x1 + 3 : x2 - 3].astype(float)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut.jpg", "grace_hopper_exif6.jpg", "voc_2008_002506_exif8.jpg"])
def test_drawn_boxes_land_on_the_faces_of_the_upright_image(bulk: BulkRun, name: str) -> None:
    result = next(e["result"] for e in lines(bulk.output) if e["file"] == str(PHOTOS / name))
    original = decode((PHOTOS / name).read_bytes(), max_pixels=50_000_000).pixels
    drawn = cv2.cvtColor(cv2.imread(str(bulk.drawn / name)), cv2.COLOR_BGR2RGB)
    # EXIF-rotated photos are drawn upright, the size the service reported.
    assert drawn.shape == original.shape == (result["image"]["height"], result["image"]["width"], 3)
    assert result["faces"]
    for face in result["faces"]:
        assert np.abs(edge_pixels(drawn, face["box"]) - BOX_COLOUR).mean() < 40
        assert np.abs(edge_pixels(original, face["box"]) - BOX_COLOUR).mean() > 100


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["chelsea_cat_noface.jpg", "coffee_noface.jpg", "noface_collage_1280x720.jpg"]
)
def test_a_no_face_image_is_only_re_encoded(bulk: BulkRun, name: str) -> None:
    result = next(e["result"] for e in lines(bulk.output) if e["file"] == str(PHOTOS / name))
    assert result["faces"] == []
    original = decode((PHOTOS / name).read_bytes(), max_pixels=50_000_000).pixels.astype(float)
    drawn = cv2.cvtColor(cv2.imread(str(bulk.drawn / name)), cv2.COLOR_BGR2RGB).astype(float)
    assert np.abs(drawn - original).mean() < 2  # JPEG at quality 95 again, nothing drawn


@pytest.mark.slow
def test_nested_directories_keep_their_layout(live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "in"
    (source / "a" / "b").mkdir(parents=True)
    (source / "c").mkdir()
    shutil.copy(PHOTOS / "astronaut.jpg", source / "a" / "b" / "face.JPG")
    grace = cv2.imread(str(PHOTOS / "grace_hopper.jpg"))
    (source / "a" / "Grace.WEBP").write_bytes(cv2.imencode(".webp", grace)[1].tobytes())
    cat = cv2.imread(str(PHOTOS / "chelsea_cat_noface.jpg"))
    (source / "c" / "cat.png").write_bytes(cv2.imencode(".png", cat)[1].tobytes())
    (source / "notes.txt").write_text("not an image")
    output, drawn = tmp_path / "o.jsonl", tmp_path / "drawn"
    assert run_cli(str(source), "--url", live.url, "--output", str(output), "--draw", str(drawn)).status == 0
    assert {e["file"] for e in lines(output)} == {
        str(source / name) for name in ("a/b/face.JPG", "a/Grace.WEBP", "c/cat.png")
    }
    written = sorted(p.relative_to(drawn).as_posix() for p in drawn.rglob("*") if p.is_file())
    assert written == ["a/Grace.WEBP.png", "a/b/face.JPG", "c/cat.png"]  # other types are drawn as PNG
    # A PNG without faces comes back pixel for pixel.
    assert np.array_equal(cv2.imread(str(drawn / "c" / "cat.png")), cat)


@pytest.mark.slow
def test_a_rerun_redoes_retryable_problems_and_fails_on_bad_images(live, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    astronaut, grace, coffee = (
        str(PHOTOS / n) for n in ("astronaut.jpg", "grace_hopper.jpg", "coffee_noface.jpg")
    )
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not a jpeg")
    output = tmp_path / "o.jsonl"
    output.write_text(
        json.dumps({"file": astronaut, "problem": {"status": 503, "title": "Backend unavailable"}})
        + "\n"
        + json.dumps({"file": grace, "result": DETECTION})
        + "\n"
        + json.dumps({"file": coffee, "problem": {"status": 400}}),  # no final newline: a run cut short
    )
    run = run_cli(astronaut, grace, coffee, str(junk), "--url", live.url, "--output", str(output))
    assert run.status == 1  # the junk image failed for good
    assert summary(run.stderr) == {"done": 1, "skipped": 2, "failed": 1, "retries": 0}
    assert f"{junk}: 400" in run.stderr
    entries = lines(output)
    new = {e["file"]: e for e in entries[3:]}
    assert len(entries) == 5 and set(new) == {astronaut, str(junk)}
    assert len(new[astronaut]["result"]["faces"]) == 1 and new[str(junk)]["problem"]["status"] == 400


@pytest.mark.slow
def test_a_tiny_queue_is_worked_through_by_retrying(tmp_path: Path, built_models: None) -> None:
    output = tmp_path / "o.jsonl"
    with service_process(tmp_path, MAX_QUEUE="1", MAX_BATCH="1") as server:
        run = run_cli(
            str(PHOTOS), "--url", server.url, "--concurrency", "8", "--retries", "10", "--output", str(output)
        )
    counts = summary(run.stderr)
    assert run.status == 0 and counts["done"] == 19 and counts["failed"] == 0
    assert counts["retries"] > 0  # 8 in flight against room for 2: the service answered 429s
    assert all("result" in entry for entry in lines(output)) and len(lines(output)) == 19
